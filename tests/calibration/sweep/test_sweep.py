"""The sweep (lampe_calib/_sweep*.py): Optuna studies end to end, reuse, resume, GP search, storage."""

from __future__ import annotations

import optuna
import pytest
from calib_support import REFERENCE_DIR, tiny_llama
from char_tokenizer import char_tokenizer

import lampe_calib.calibration.sweep._run as sweep_module
from lampe_calib.calibration._space import (
    SweepPoint,
    SweepSpec,
    default_lengths,
    default_mappings,
    initial_mappings,
)
from lampe_calib.calibration.sweep import collect_sweep, open_storage, run_sweep, study_names
from lampe_calib.evaluation import load_books

SPEC = SweepSpec(lengths=(64, 128), mappings=(24, 48), heads=(4,), tails=(2,))


@pytest.fixture(scope="module")
def model():
    return tiny_llama(vocab_size=len(char_tokenizer()))


@pytest.fixture(scope="module")
def books():
    return load_books("pg19", char_tokenizer(), max_length=128, samples=2, seed=0, online=False)


@pytest.fixture
def count_evaluations(monkeypatch):
    calls = []
    original = sweep_module.evaluate_perplexity

    def counting(model, books, context=None, **kwargs):
        calls.append(books[0].numel())
        return original(model, books, context, **kwargs)

    monkeypatch.setattr(sweep_module, "evaluate_perplexity", counting)
    return calls


def _storage(tmp_path):
    return f"sqlite:///{tmp_path / 'sweep.db'}"


def test_two_by_two_grid_end_to_end(tmp_path, model, books, count_evaluations):
    seen = []
    result = run_sweep(model, books, SPEC, _storage(tmp_path), "tiny", progress=seen.append)
    # 2 vanilla trials + the 2 x 2 grid, each evaluated once.
    assert len(count_evaluations) == 6
    assert [p.done for p in seen] == [0, 1, 2, 3, 4, 5, 6] and seen[-1].total == 6
    assert seen[0].last is None and seen[0].cost_total == seen[-1].cost_total
    assert seen[-1].cost_done == seen[-1].cost_total == 2 * (64 + 128) * 3
    assert len(result.measurements) == 6
    for length in SPEC.lengths:
        stock = result.stock(length)
        assert stock is not None and stock.point.mapping is None and len(stock.result.nll) == 2
        assert sorted(m.point.mapping for m in result.select(length, 4, 2, 1.0)) == [24, 48]
    storage = open_storage(_storage(tmp_path))
    study = optuna.load_study(study_name="tiny", storage=storage)
    trial = study.trials[0]
    assert set(trial.user_attrs) >= {"point", "nll", "tokens", "ppl", "rows", "skipped", "seconds"}
    assert trial.value == pytest.approx(sum(trial.user_attrs["nll"]) / sum(trial.user_attrs["tokens"]))
    assert study.user_attrs["signature"]["rows"] == list(books.rows)


def test_no_remap_points_copy_the_vanilla_trial(tmp_path, model, books, count_evaluations):
    spec = SweepSpec(lengths=(64, 128), mappings=(24, 100), heads=(4,), tails=(2,))
    result = run_sweep(model, books, spec, _storage(tmp_path), "tiny")
    # m = 100 >= 64 is the stock model at L = 64: copied, not evaluated.
    assert len(count_evaluations) == 5
    copied = [
        t
        for t in optuna.load_study(study_name="tiny", storage=_storage(tmp_path)).trials
        if "reused_from" in t.user_attrs
    ]
    assert [(t.params["length"], t.params["mapping"]) for t in copied] == [(64, 100)]
    assert copied[0].user_attrs["reused_from"].startswith("tiny:vanilla#")
    assert copied[0].value == pytest.approx(result.stock(64).result.mean_nll)


def test_resume_after_interrupt_runs_only_missing_trials(tmp_path, model, books, count_evaluations):
    def interrupt_after_three(progress):
        if progress.done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(model, books, SPEC, _storage(tmp_path), "tiny", progress=interrupt_after_three)
    assert len(count_evaluations) == 3
    seen = []
    result = run_sweep(model, books, SPEC, _storage(tmp_path), "tiny", progress=seen.append)
    assert len(count_evaluations) == 6  # only the 3 missing trials ran
    assert seen[-1].total == 3
    assert len(result.measurements) == 6
    again = run_sweep(model, books, SPEC, _storage(tmp_path), "tiny")
    assert len(count_evaluations) == 6  # a finished sweep runs nothing
    assert again.measurements == result.measurements


def test_a_trial_killed_mid_evaluation_is_rerun(tmp_path, model, books, monkeypatch):
    original = sweep_module.evaluate_perplexity
    calls = []

    def dies_on_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "evaluate_perplexity", dies_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(model, books, SPEC, _storage(tmp_path), "tiny")
    failed = optuna.load_study(study_name="tiny", storage=_storage(tmp_path)).get_trials(
        states=(optuna.trial.TrialState.FAIL,)
    )
    assert len(failed) == 1
    result = run_sweep(model, books, SPEC, _storage(tmp_path), "tiny")
    assert len(calls) == 7  # 3 done + 1 killed + the killed one again + 2 never started
    assert len(result.measurements) == 6


def test_resume_with_other_settings_is_refused(tmp_path, model, books):
    run_sweep(model, books, SPEC, _storage(tmp_path), "tiny", signature={"samples": 2})
    with pytest.raises(ValueError, match="study 'tiny:vanilla' in this storage was run with other settings"):
        run_sweep(model, books, SPEC, _storage(tmp_path), "tiny", signature={"samples": 3})


@pytest.mark.slow
def test_gp_search_runs_a_fixed_budget_per_length(tmp_path, model, books, count_evaluations):
    spec = SweepSpec(lengths=(64, 128), mappings=(7, 60), heads=(4,), tails=(2,), search="gp", evaluations=4)
    result = run_sweep(model, books, spec, _storage(tmp_path), "tiny")
    storage = open_storage(_storage(tmp_path))
    for length in spec.lengths:
        study = optuna.load_study(study_name=f"tiny:gp:L{length}", storage=storage)
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert len(complete) == 4
        # The first trials are the log-spaced initial design, then the GP proposes.
        assert [t.params["mapping"] for t in complete[:3]] == initial_mappings(7, 60, 3)
        assert all(7 <= t.params["mapping"] <= 60 for t in complete)
    assert 2 + 3 * 2 <= len(count_evaluations) <= 2 + 4 * 2
    assert study_names("tiny", spec) == ["tiny:vanilla", "tiny:gp:L64", "tiny:gp:L128"]
    before = len(count_evaluations)
    again = run_sweep(model, books, spec, _storage(tmp_path), "tiny")
    assert len(count_evaluations) == before
    assert len(again.measurements) == len(result.measurements)


def test_collect_sweep_reads_a_finished_sweep(tmp_path, model, books):
    result = run_sweep(model, books, SPEC, _storage(tmp_path), "tiny")
    assert collect_sweep(_storage(tmp_path), "tiny", SPEC).measurements == result.measurements
    narrower = SweepSpec(lengths=(64,), mappings=(24,), heads=(4,), tails=(2,))
    assert {m.point.length for m in collect_sweep(_storage(tmp_path), "tiny", narrower).measurements} == {64}


@pytest.mark.slow
@pytest.mark.skipif(
    not (REFERENCE_DIR / "model.safetensors").is_file(), reason="reference model not built yet"
)
def test_two_by_two_grid_on_the_reference_model(tmp_path):
    from lampe_calib.models import load_model, model_info

    model, tokenizer = load_model("reference")
    w = model_info(model).window
    books = load_books("pg19", tokenizer, max_length=2 * w, samples=2, seed=0, online=False)
    spec = SweepSpec(lengths=(w, 2 * w), mappings=(w // 2, w), heads=(w // 8,), tails=(w // 16,))
    result = run_sweep(model, books, spec, _storage(tmp_path), "reference")
    assert len(result.measurements) == 5  # m = W at L = W is the vanilla trial
    vanilla, remapped = (
        result.stock(2 * w).result.ppl,
        min(m.result.ppl for m in result.select(2 * w, w // 8, w // 16, 1.0)),
    )
    assert remapped < vanilla  # past the window, remapping helps


def test_point_semantics():
    assert SweepPoint(512, 600).stock and SweepPoint(512, None).stock
    assert SweepPoint(512, 600).key() == SweepPoint(512, None).key() == (512, "stock")
    assert not SweepPoint(512, 600, attention_factor=1.1).stock
    assert (
        SweepPoint(512, 600, attention_factor=1.1).key() == SweepPoint(512, 700, attention_factor=1.1).key()
    )
    assert SweepPoint(512, 100).config("exact").mapping_length == 100.0
    assert SweepPoint(512, None).config("exact") is None
    assert SweepPoint.from_params(SweepPoint(64, None).params()) == SweepPoint(64, None)
    assert SweepPoint.from_dict(SweepPoint(64, 50).to_dict()) == SweepPoint(64, 50)
    with pytest.raises(ValueError, match="mapping must exceed head \\+ tail = 48"):
        SweepPoint(512, 48)


def test_defaults():
    assert default_lengths(256) == (128, 256, 512, 1024, 2048)
    assert default_mappings(256, 32, 16) == (49, 88, 126, 165, 204, 243, 281, 320)
    assert initial_mappings(49, 320, 3) == [67, 125, 234]
    assert initial_mappings(10, 12, 3) == [10, 11, 12]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"lengths": ()}, "lengths must be a non-empty sequence"),
        ({"lengths": (1,)}, "lengths must hold integers >= 2"),
        ({"mappings": (20,)}, "mappings must all be >= head \\+ tail \\+ 1 = 49"),
        ({"heads": (-1,)}, "heads must hold integers >= 0"),
        ({"attention_factors": (0.0,)}, "attention_factors must hold finite numbers > 0"),
        ({"mode": "round"}, "mode must be one of"),
        ({"search": "random"}, "search must be one of"),
        ({"evaluations": 0}, "evaluations must be an integer >= 1"),
        ({"evaluations": 2, "initial_points": 3}, "initial_points must be <= evaluations = 2"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_spec_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        SweepSpec(**{"lengths": (512,), "mappings": (64, 128), **fields})


def test_storage_errors():
    with pytest.raises(ValueError, match="--storage must be a database URL"):
        open_storage("sweep.db")
    with pytest.raises(ValueError, match="--storage 'nope://x' is not a database URL|cannot open"):
        open_storage("nope://x")
    with pytest.raises((ImportError, ValueError)) as error:
        open_storage("postgresql://user:secret@127.0.0.1:1/db")
    assert "secret" not in str(error.value)
