"""A trial whose evaluation fails (non-finite loss, out of memory) is marked failed with the
reason, the sweep goes on, and the fit and the profile say which points are missing."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from calib_support import tiny_llama, tiny_model_dir
from char_tokenizer import char_tokenizer

import lampe_calib.calibration.sweep._run as sweep_module
from lampe_calib.calibration import calibrate, load_profile
from lampe_calib.calibration.sweep import SweepPoint, SweepSpec, run_sweep
from lampe_calib.cli import calibrate_main
from lampe_calib.evaluation import PerplexityResult, load_books

SPEC = SweepSpec(lengths=(64, 96, 128), mappings=(16, 24, 48), heads=(4,), tails=(2,))
OOM = "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total capacity)"


@pytest.fixture(scope="module")
def model():
    return tiny_llama(vocab_size=len(char_tokenizer()))


@pytest.fixture(scope="module")
def books():
    return load_books("pg19", char_tokenizer(), max_length=128, samples=2, seed=0, online=False)


@pytest.fixture
def inject(monkeypatch):
    """``inject({point: "nan" | "inf" | "oom" | "cpu-oom"})``: those evaluations fail so."""
    original = sweep_module._Runner.evaluate

    def install(failures: dict[SweepPoint, str]):
        evaluated = []

        def evaluate(self, point):
            evaluated.append(point)
            kind = failures.get(point)
            if kind in ("nan", "inf"):
                result, books, seconds = original(self, point)
                nll = (float(kind), *result.nll[1:])
                return PerplexityResult(nll, result.tokens), books, seconds
            if kind == "oom":
                raise torch.OutOfMemoryError(OOM)
            if kind == "cpu-oom":
                raise RuntimeError(
                    "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
                )
            return original(self, point)

        monkeypatch.setattr(sweep_module._Runner, "evaluate", evaluate)
        return evaluated

    return install


def _failed(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=url).get_trials(states=(optuna.trial.TrialState.FAIL,))


def test_failed_trials_are_recorded_and_reported_missing_then_rerun(tmp_path, model, books, inject):
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    bad = {
        SweepPoint(96, 24, 4, 2): "nan",
        SweepPoint(64, 16, 4, 2): "inf",
        SweepPoint(128, 48, 4, 2): "oom",
        SweepPoint(64, None): "cpu-oom",
    }
    evaluated = inject(bad)
    result = run_sweep(model, books, SPEC, url, "tiny")  # goes on past every failure
    assert len(evaluated) == 12 and evaluated.count(SweepPoint(96, 24, 4, 2)) == 1  # no retry in a run
    missing = {m.point: m.reason for m in result.missing}
    assert set(missing) == set(bad)
    assert missing[SweepPoint(96, 24, 4, 2)] == "non-finite loss (nan) at L=96 m=24 (s1=4, s2=2)"
    assert missing[SweepPoint(64, 16, 4, 2)] == "non-finite loss (inf) at L=64 m=16 (s1=4, s2=2)"
    assert missing[SweepPoint(128, 48, 4, 2)] == f"out of memory at L=128 m=48 (s1=4, s2=2): {OOM}"
    assert missing[SweepPoint(64, None)].startswith("out of memory at L=64 vanilla: [enforce fail")
    assert len(result.measurements) == 12 - 4
    reasons = {t.params["mapping"]: t.user_attrs["error"] for t in _failed(url, "tiny")}
    assert reasons == {
        24: missing[SweepPoint(96, 24, 4, 2)],
        16: missing[SweepPoint(64, 16, 4, 2)],
        48: missing[SweepPoint(128, 48, 4, 2)],
    }

    calibration = calibrate(result, window=32, resamples=0)
    assert calibration.missing == result.missing
    assert "made without 4 sweep point(s): L=64 vanilla: out of memory" in calibration.message

    # The same sweep again: the failed points are tried again, and now succeed.
    evaluated = inject({})
    again = run_sweep(model, books, SPEC, url, "tiny")
    assert sorted(evaluated, key=SweepPoint.sort_key) == sorted(bad, key=SweepPoint.sort_key)
    assert not again.missing and len(again.measurements) == 12


def test_a_length_that_fails_everywhere_is_left_out_of_the_fit(tmp_path, model, books, inject):
    inject({p: "oom" for p in [SweepPoint(128, None), *(SweepPoint(128, m, 4, 2) for m in (16, 24, 48))]})
    result = run_sweep(model, books, SPEC, f"sqlite:///{tmp_path / 'sweep.db'}", "tiny")
    assert {m.point.length for m in result.missing} == {128} and len(result.missing) == 4
    calibration = calibrate(result, window=32, resamples=0)
    assert [o.length for o in calibration.optima] == [64, 96]
    assert calibration.status == "degenerate" and "made without 4 sweep point(s)" in calibration.message


def test_a_failing_gp_length_stops_its_search(tmp_path, model, books, inject):
    spec = SweepSpec(lengths=(64, 128), mappings=(7, 60), heads=(4,), tails=(2,), search="gp", evaluations=3)
    evaluated = inject({SweepPoint(128, m, 4, 2): "oom" for m in range(7, 61)})
    run_sweep(model, books, spec, f"sqlite:///{tmp_path / 'sweep.db'}", "tiny")
    at_128 = [p for p in evaluated if p.length == 128 and p.mapping is not None]
    assert len(at_128) == 1  # one failure ends that length's search; L = 64 runs its budget
    assert len([p for p in evaluated if p.length == 64 and p.mapping is not None]) == 3


def test_lampe_calibrate_reports_the_missing_points(tmp_path, inject, capsys):
    model_dir = tiny_model_dir(tmp_path / "tiny")
    inject({SweepPoint(96, 20, 4, 2): "nan"})
    out = tmp_path / "out"
    argv = ["--model", str(model_dir), "--out", str(out), "--lengths", "48,96,128", "--mappings", "10,20,40"]
    argv += ["--head", "4", "--tail", "2", "--samples", "2", "--bootstrap", "0"]
    assert calibrate_main(argv) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "made without 1 sweep point(s): L=96 m=20 (s1=4, s2=2): non-finite loss (nan)" in printed
    profile = load_profile(out / "tiny.json")
    (missing,) = profile.sigmoid["missing"]
    assert (missing["length"], missing["mapping"]) == (96, 20)
    assert missing["reason"] == "non-finite loss (nan) at L=96 m=20 (s1=4, s2=2)"
    assert not math.isnan(sum(c["ppl"][0] for c in profile.curves))


def test_a_retry_names_its_immediate_predecessor_also_in_a_second_generation():
    """``retried_from``: Optuna keeps the first failed ancestor in ``failed_trial``; the reapers
    need the trial each retry replaces (a retry of a retry: the second, not the first)."""
    import warnings

    from optuna.trial import TrialState

    from lampe_calib.calibration.sweep._db import retried_from

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    first = study.ask()
    study.tell(first, state=TrialState.FAIL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
    retry(study, study.trials[0])  # trial 1 retries trial 0
    second = study.ask()  # pops trial 1
    study.tell(second, state=TrialState.FAIL)
    retry(study, study.trials[1])  # trial 2 retries trial 1
    assert [retried_from(t) for t in study.trials] == [None, 0, 1]
    assert study.trials[2].system_attrs["failed_trial"] == 0  # what the helper does not read
