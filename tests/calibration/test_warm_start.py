"""A new length after a fit begins its search at m(L) (``SweepSpec.starts``, ``initial_mappings``)."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from calib_support import minimal_profile, tiny_llama
from char_tokenizer import char_tokenizer
from rich.console import Console
from test_excess import LENGTHS, MAPPINGS, W, _log_ppl

from lampe_calib.calibration._excess import fit_sigmoid_excess
from lampe_calib.calibration._space import initial_mappings
from lampe_calib.calibration.sweep import SweepSpec, open_storage, run_sweep
from lampe_calib.cli._calibrate_fit import start_from_previous_fit
from lampe_calib.evaluation import load_books


def test_initial_design_begins_at_the_start_then_spreads_around_it():
    assert initial_mappings(49, 320, 3, start=150) == [150, 172, 130]
    assert initial_mappings(49, 320, 4, start=315) == [315, 320, 274, 242]  # clamped, no duplicate
    assert initial_mappings(7, 8, 3, start=7.4) == [7, 8]  # fewer points than asked: none left
    assert initial_mappings(49, 320, 3) == [67, 125, 234]  # no start: the log-spaced design
    with pytest.raises(ValueError, match="starts must hold"):
        SweepSpec(lengths=(64,), mappings=(7, 60), heads=(4,), tails=(2,), starts=((64, -1.0),))


def test_a_fit_without_a_length_finds_its_optimum_in_one_evaluation():
    # The goal: a new length within 0.1 % of its best PPL in at most 2 evaluations. m(L) of the
    # fit made without L is the first point evaluated; on these curves it is already there.
    points = {n: (list(MAPPINGS), [_log_ppl(n, m) for m in MAPPINGS]) for n in LENGTHS}
    for left in LENGTHS[1:-1]:  # inside the fitted range
        fit = fit_sigmoid_excess({n: p for n, p in points.items() if n != left}, W, "fixed")
        first = initial_mappings(60, 320, 3, start=fit(left))[0]
        assert math.expm1(_log_ppl(left, first) - 2) <= 1e-3, left


@pytest.mark.slow
def test_the_gp_search_of_a_started_length_evaluates_m_of_l_first(tmp_path):
    books = load_books("pg19", char_tokenizer(), max_length=128, samples=2, seed=0, online=False)
    spec = SweepSpec(
        lengths=(64, 128),
        mappings=(7, 60),
        heads=(4,),
        tails=(2,),
        search="gp",
        evaluations=2,
        initial_points=2,
        starts=((128, 33.4),),
    )
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    run_sweep(tiny_llama(vocab_size=len(char_tokenizer())), books, spec, url, "tiny")
    storage = open_storage(url)
    first = {}
    for length in spec.lengths:
        trials = optuna.load_study(study_name=f"tiny:gp:L{length}", storage=storage).get_trials()
        first[length] = [t.params["mapping"] for t in trials]
    assert first[128] == [33, 38]  # m(L) rounded, then 15 % above it
    assert first[64] == initial_mappings(7, 60, 2)


def test_the_cli_starts_new_lengths_from_the_previous_profile(tmp_path):
    path = tmp_path / "tiny.json"
    profile = minimal_profile()
    profile["curves"] = [{"length": 64, "mappings": [10], "ppl": [9.0], "books": 1, "tokens": 64}]
    path.write_text(json.dumps(profile))
    spec = SweepSpec(lengths=(64, 128), mappings=(7, 30), heads=(4,), tails=(2,), search="gp")
    console = Console(record=True, width=200)
    started = start_from_previous_fit(console, spec, path)
    m = 24.0 / (1 + math.exp(-(0.02 * 128 - 1.0)))
    assert started.starts == ((128, pytest.approx(m)),)  # 64 was measured: the log-spaced design
    assert f"m(L) = {m:.0f} of the previous fit" in console.export_text()
    grid = SweepSpec(lengths=(64, 128), mappings=(7, 30), heads=(4,), tails=(2,))
    assert start_from_previous_fit(console, grid, path) is grid  # a grid evaluates every point anyway
    assert start_from_previous_fit(console, spec, tmp_path / "none.json") is spec
