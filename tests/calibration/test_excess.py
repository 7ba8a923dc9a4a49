"""The excess fit, its curve reading and the leave-one-length-out choice (calibration/_excess.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lampe_calib.calibration import calibrate
from lampe_calib.calibration._excess import (
    choose_objective,
    fit_sigmoid_excess,
    held_out_excess,
    read_curves,
)
from lampe_calib.calibration._fit import SigmoidFit
from lampe_calib.calibration.sweep import SweepPoint, SweepSpec
from lampe_calib.calibration.sweep._store import Measurement, SweepResult
from lampe_calib.evaluation import PerplexityResult

W, A, B, C = 256, 1.2 / 256, -1.0, 192.0
LENGTHS = (384, 512, 768, 1024, 1536, 2048)
# Sharp and flat Vs alternate: a flat V's argmin is noisy and costs little when wrong.
WIDTHS = {384: 40, 512: 150, 768: 50, 1024: 150, 1536: 60, 2048: 150}
MAPPINGS = tuple(range(60, 330, 20))


def _optimum(length):
    return C / (1 + math.exp(-(A * length + B)))


def _log_ppl(length, m):
    """The noiseless V: log PPL 2 at m*(L), a parabola of width WIDTHS[L] around it."""
    return 2 + ((min(m, length) - _optimum(length)) / WIDTHS[length]) ** 2


def _sweep(seed, noise=0.03, books=4):
    rng = np.random.default_rng(seed)
    found = []
    for length in LENGTHS:
        for m in MAPPINGS:
            nll = tuple((_log_ppl(length, m) + rng.normal(0, noise)) * 100 for _ in range(books))
            point = SweepPoint(length, m, 32, 16)
            found.append(Measurement(point, PerplexityResult(nll, (100,) * books), (), 0, 0.0, "s", 0))
        stock = PerplexityResult((900.0,) * books, (100,) * books)
        found.append(Measurement(SweepPoint(length, None), stock, (), 0, 0.0, "s:vanilla", 0))
    spec = SweepSpec(lengths=LENGTHS, mappings=MAPPINGS, heads=(32,), tails=(16,))
    return SweepResult(spec, tuple(found))


def _true_excess(fit):
    """Mean relative PPL excess of ``fit`` on the noiseless curves (what a user would pay)."""
    return float(np.mean([math.expm1(_log_ppl(n, fit(n)) - 2) for n in LENGTHS]))


def test_excess_fit_recovers_a_known_sigmoid_better_than_the_argmin_fit_under_noise():
    argmin_cost, excess_cost, argmin_error, excess_error = [], [], [], []
    for seed in range(4):
        cal = calibrate(_sweep(seed), W, c_mode="fixed", resamples=0)
        argmin, excess = cal.fits["fixed"], cal.excess_fits["fixed"]
        assert excess.objective == "excess" and argmin.objective == "argmin" and excess.c == C
        argmin_cost.append(_true_excess(argmin))
        excess_cost.append(_true_excess(excess))
        argmin_error.append(abs(argmin.a - A) / A + abs(argmin.b - B))
        excess_error.append(abs(excess.a - A) / A + abs(excess.b - B))
        assert excess_cost[-1] < argmin_cost[-1], seed  # every seed, not only on average
        assert set(cal.held_out) == {"argmin", "excess"} and set(cal.held_out["excess"]) == {"fixed", "free"}
        assert cal.objective == choose_objective({k: {0: v["fixed"]} for k, v in cal.held_out.items()})
        assert cal.fit is (cal.excess_fits if cal.objective == "excess" else cal.fits)["fixed"]
    assert np.mean(excess_cost) < 0.5 * np.mean(argmin_cost)
    assert np.mean(excess_error) < np.mean(argmin_error)


def test_excess_fit_on_noiseless_curves_finds_the_sigmoid():
    points = {n: (list(MAPPINGS), [_log_ppl(n, m) for m in MAPPINGS]) for n in LENGTHS}
    fit = fit_sigmoid_excess(points, W, "fixed")
    assert fit.a == pytest.approx(A, rel=0.05) and fit.b == pytest.approx(B, abs=0.05)
    assert _true_excess(fit) < 1e-4
    # R² is against the curves' best grid points (no m* given): the fit is not pulled onto them.
    assert fit.lengths == LENGTHS and 0 < fit.r2 < 1


def test_the_reader_is_a_spline_below_l_and_linear_to_the_unmapped_point():
    reader = read_curves({100: ([20, 40, 60, 100], [2.0, 1.0, 2.0, 5.0])})[100]
    assert float(reader(40)) == pytest.approx(1.0) and float(reader(50)) == pytest.approx(1.25)
    assert float(reader(80)) == pytest.approx(3.5) and float(reader(150)) == pytest.approx(5.0)
    assert reader.excess(50) == pytest.approx(math.expm1(0.25))
    assert reader.excess(5) == pytest.approx(math.expm1(1.0))  # clamped to the smallest m
    # Without the unmapped point nothing is known past the largest m: it is clamped there.
    short = read_curves({100: ([20, 40, 60], [2.0, 1.0, 2.0])})[100]
    assert short.excess(90) == pytest.approx(math.expm1(1.0))
    # A spline's minimum may fall between the points: the excess is counted from it.
    skew = read_curves({100: ([20, 40, 60, 80], [3.0, 1.0, 1.2, 3.0])})[100]
    assert skew.least < 1.0 and skew.excess(40) > 0


def test_held_out_excess_reads_each_length_with_the_fit_made_without_it():
    points = {n: (list(MAPPINGS), [_log_ppl(n, m) for m in MAPPINGS]) for n in LENGTHS}
    seen = []

    def fit(rest):
        seen.append(sorted(rest))
        return SigmoidFit(A, B, C, "fixed", None, (), ())

    held = held_out_excess(points, fit)
    assert seen == [[n for n in LENGTHS if n != left] for left in LENGTHS]
    readers = read_curves(points)
    assert held == {n: pytest.approx(readers[n].excess(_optimum(n))) for n in LENGTHS}
    assert held_out_excess(points, lambda rest: None) == {}


def test_choose_objective():
    assert choose_objective({"argmin": {1: 0.02, 2: 0.02}, "excess": {1: 0.01, 2: 0.02}}) == "excess"
    assert choose_objective({"argmin": {1: 0.01}, "excess": {1: 0.01}}) == "argmin"  # a tie
    assert choose_objective({"argmin": {}, "excess": {1: 0.0}}) == "argmin"
    # Only lengths both scored count.
    assert choose_objective({"argmin": {1: 0.05, 2: 0.0}, "excess": {2: 0.01}}) == "argmin"


def test_excess_fit_arguments():
    points = {512: ([60, 120], [1.0, 2.0])}
    with pytest.raises(ValueError, match="at least 2 curves"):
        fit_sigmoid_excess(points, W)
    with pytest.raises(ValueError, match="c_mode must be one of"):
        fit_sigmoid_excess({**points, 1024: ([60, 120], [1.0, 2.0])}, W, "auto")


def test_the_profile_records_both_fits_and_the_choice():
    from calib_support import minimal_profile, tiny_llama

    from lampe_calib.calibration import Profile
    from lampe_calib.calibration._calibrate import build_profile
    from lampe_calib.models import model_info

    sweep = _sweep(0)
    cal = calibrate(sweep, W, c_mode="fixed", resamples=0)
    profile = build_profile(model_info(tiny_llama(window=W)), cal, sweep, {"imported": False})
    s = Profile.from_dict(profile.to_dict()).sigmoid
    assert s["objective"] == cal.objective and s["a"] == cal.fit.a
    records = {(f["objective"], f["c_mode"]): f for f in s["fits"]}
    assert set(records) == {(o, m) for o in ("argmin", "excess") for m in ("fixed", "free")}
    for (objective, mode), record in records.items():
        fit = (cal.fits if objective == "argmin" else cal.excess_fits)[mode]
        assert (record["a"], record["b"], record["c"], record["r2"]) == (fit.a, fit.b, fit.c, fit.r2)
        assert record["held_out_excess"] == cal.held_out[objective][mode]
    # A profile from before the excess fit (no objective, no fits) still loads.
    assert "objective" not in minimal_profile()["sigmoid"]
    Profile.from_dict(minimal_profile())
    bad = minimal_profile()
    bad["sigmoid"]["objective"] = "median"
    with pytest.raises(ValueError, match="sigmoid.objective"):
        Profile.from_dict(bad)


def test_the_excess_fit_the_profile_uses_gets_a_bootstrap_interval():
    from calib_support import tiny_llama

    from lampe_calib.calibration import Profile
    from lampe_calib.calibration._calibrate import build_profile
    from lampe_calib.models import model_info

    width = {}
    for noise in (0.02, 0.05):
        sweep = _sweep(4, noise=noise)  # (a seed whose leave-one-length-out picks the excess fit)
        cal = calibrate(sweep, W, c_mode="fixed", resamples=40, seed=0)
        assert cal.objective == "excess"
        fit, ci = cal.fit, cal.excess_ci["fixed"]
        assert ci["c"] == (C, C)  # c is fixed
        for name, true in (("a", A), ("b", B)):
            low, high = ci[name]
            assert low < getattr(fit, name) < high and low < true < high, (noise, name, ci[name])
        width[noise] = ci["a"][1] - ci["a"][0]
        assert set(cal.ci) == {"fixed", "free"}  # the argmin fits' intervals, from the same draws
    assert width[0.02] < width[0.05]  # noisier curves, a wider interval
    # The profile records the interval of the fit it uses.
    profile = build_profile(model_info(tiny_llama(window=W)), cal, sweep, {"imported": False})
    s = Profile.from_dict(profile.to_dict()).sigmoid
    assert s["objective"] == "excess" and s["a"] == fit.a
    assert s["ci"] == {"level": 0.95, "resamples": 40, **{k: list(v) for k, v in ci.items()}}
