"""m*(L) from V-curves and the sigmoid fit (lampe_calib/_curves.py, lampe_calib/_fit.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lampe_calib.calibration import calibrate, fit_sigmoid
from lampe_calib.calibration._curves import Curve, curve_optimum, curves_of, parabola_vertex
from lampe_calib.calibration.sweep import SweepPoint, SweepSpec
from lampe_calib.calibration.sweep._store import Measurement, SweepResult
from lampe_calib.evaluation import PerplexityResult


def _sigmoid(length, a, b, c):
    return c / (1 + np.exp(-(a * np.asarray(length, float) + b)))


@pytest.mark.parametrize(
    "window, a, b, c, mode",
    [
        (256, 1 / 256, -2.0, 192.0, "fixed"),
        (256, 1.3 / 256, -1.5, 150.0, "free"),
        (4096, 8.673006440952035e-05, -0.648012322406978, 2489.1055552214357, "free"),  # official llama2
        (8192, 1.0493097327094324e-04, -2.466638011138158, 6144.0, "fixed"),  # llama3's a, b; c = 0.75 W
    ],
)
def test_fit_recovers_known_parameters_from_noisy_points(window, a, b, c, mode):
    rng = np.random.default_rng(0)
    lengths = np.array([1.5, 2, 3, 4, 6, 8, 12, 16]) * window
    points = _sigmoid(lengths, a, b, c) * (1 + rng.normal(0, 0.01, lengths.size))
    fit = fit_sigmoid(lengths, points, window, mode)
    assert fit.c_mode == mode
    assert fit.a == pytest.approx(a, rel=0.1)
    assert fit.b == pytest.approx(b, abs=0.1 * max(1.0, abs(b)))
    assert fit.c == pytest.approx(c, rel=0.05)
    assert fit.r2 > 0.95
    assert len(fit.residuals) == lengths.size
    assert np.allclose(np.asarray(fit.residuals), points - _sigmoid(lengths, fit.a, fit.b, fit.c))
    assert fit(lengths[0]) == pytest.approx(_sigmoid(lengths[0], fit.a, fit.b, fit.c))


def test_fit_arguments():
    with pytest.raises(ValueError, match="at least 3 points, got 2"):
        fit_sigmoid([512, 1024], [100, 150], 256)
    with pytest.raises(ValueError, match="c_mode must be one of"):
        fit_sigmoid([512, 1024, 2048], [100, 150, 170], 256, "auto")


def test_parabola_vertex():
    assert parabola_vertex((1, 2, 4), (3, 1, 3)) == pytest.approx(2.5)
    assert parabola_vertex((0, 1, 2), (1, 2, 1)) is None  # opens downward
    assert parabola_vertex((0, 1, 2), (1, 1, 1)) is None  # flat


def _result(mean_nll, books=4, tokens=100, spread=0.0):
    return PerplexityResult(
        tuple((mean_nll + spread * (i - (books - 1) / 2)) * tokens for i in range(books)), (tokens,) * books
    )


def _curve(length, mappings, nlls, unmapped=None, upper=320):
    results = tuple(_result(v) for v in nlls)
    vanilla = None if unmapped is None else _result(unmapped)
    return Curve(length, tuple(mappings), results, vanilla, vanilla, upper, 32, 16, 1.0)


def test_curve_optimum_interior_refined_and_bounds():
    curve = _curve(1024, [100, 150, 200, 250], [3.0, 2.0, 2.5, 3.5], unmapped=9.0)
    best = curve_optimum(curve)
    assert best.remapped and best.bound is None and best.refined
    assert 100 < best.mapping < 200 and best.mapping == pytest.approx(
        parabola_vertex((100, 150, 200), (3.0, 2.0, 2.5))
    )
    assert best.ppl == pytest.approx(math.exp(2.0)) and best.vanilla_ppl == pytest.approx(math.exp(9.0))
    assert curve_optimum(curve, refine=False).mapping == 150
    low = curve_optimum(_curve(1024, [100, 150, 200], [1.0, 2.0, 3.0], unmapped=9.0))
    assert low.bound == "lower" and low.mapping == 100 and not low.refined
    high = curve_optimum(_curve(1024, [100, 150, 200], [3.0, 2.0, 1.0], unmapped=9.0, upper=200))
    assert high.bound == "upper" and high.mapping == 200


def test_no_remap_best():
    best = curve_optimum(_curve(128, [60, 90, 120], [3.0, 2.5, 2.2], unmapped=2.0))
    assert not best.remapped and best.mapping == 128 and best.bound is None


def _synthetic_sweep(window, a, b, c, lengths, mappings, noise=0.0, seed=0, vanilla_nll=lambda length: 9.0):
    """log PPL(m) = 2 + ((min(m, L) - m*(L)) / 50)² per book, with m*(L) on a known sigmoid."""
    rng = np.random.default_rng(seed)
    measurements = []
    for length in lengths:
        target = _sigmoid(length, a, b, c)
        for m in mappings:
            if m >= length:  # no remap: the stock model, as the sweep records it
                continue
            books = tuple(
                (2 + ((min(m, length) - target) / 50) ** 2 + rng.normal(0, noise)) * 100 for _ in range(6)
            )
            measurements.append(
                Measurement(
                    SweepPoint(length, m, 32, 16), PerplexityResult(books, (100,) * 6), (), 0, 0.0, "s", 0
                )
            )
        vanilla = PerplexityResult((vanilla_nll(length) * 100,) * 6, (100,) * 6)
        measurements.append(Measurement(SweepPoint(length, None), vanilla, (), 0, 0.0, "s:vanilla", 0))
    spec = SweepSpec(lengths=tuple(lengths), mappings=tuple(mappings), heads=(32,), tails=(16,))
    return SweepResult(spec, tuple(measurements))


def test_calibrate_recovers_the_sigmoid_with_a_bootstrap_interval():
    w, a, b, c = 256, 1.2 / 256, -1.0, 192.0
    sweep = _synthetic_sweep(
        w, a, b, c, [384, 512, 768, 1024, 1536, 2048], list(range(60, 330, 15)), noise=0.02
    )
    cal = calibrate(sweep, w, c_mode="fixed", resamples=40, seed=0)
    assert cal.status == "fitted" and cal.message is None
    assert (cal.head, cal.tail, cal.attention_factor) == (32, 16, 1.0)
    fit = cal.fit
    assert fit is not None and fit.c == 192.0
    assert fit.a == pytest.approx(a, rel=0.15) and fit.b == pytest.approx(b, abs=0.2)
    assert set(cal.fits) == {"fixed", "free"}
    lo, hi = cal.ci["fixed"]["a"]
    assert lo <= fit.a <= hi
    assert len(curves_of(sweep, 32, 16, 1.0)) == 6
    # The curves the optima come from are returned with them, in order (built once).
    assert (
        [c.length for c in cal.curves]
        == [o.length for o in cal.optima]
        == [c.length for c in curves_of(sweep, 32, 16, 1.0)]
    )
    assert [curve_optimum(c) for c in cal.curves] == list(cal.optima)


def test_too_few_remapped_lengths_is_degenerate():
    # Up to W the stock model wins: only two lengths are left to fit.
    sweep = _synthetic_sweep(
        256,
        1 / 256,
        -1.0,
        192.0,
        [128, 256, 512, 1024],
        [60, 120, 240],
        vanilla_nll=lambda n: 1.0 if n <= 256 else 9.0,
    )
    cal = calibrate(sweep, 256, resamples=0)
    assert cal.status == "degenerate" and cal.fit is None
    assert "remapping beats no remap at only 2 of 4 lengths (L = 512, 1024)" in cal.message


def test_optimum_at_the_bound_everywhere_is_degenerate():
    sweep = _synthetic_sweep(256, 1 / 256, -1.0, 192.0, [512, 1024, 2048], [195, 220, 250, 300])
    cal = calibrate(sweep, 256, resamples=0)
    assert cal.status == "degenerate"
    assert "smallest swept m (195) at every length" in cal.message


def test_calibrate_rejects_a_bad_c_mode():
    sweep = _synthetic_sweep(256, 1 / 256, -1.0, 192.0, [512, 1024, 2048], [60, 120, 240])
    with pytest.raises(ValueError, match="c_mode must be one of"):
        calibrate(sweep, 256, c_mode="auto")


def test_a_flat_optimum_is_fitted_as_a_constant_and_said_so():
    # m* = 150 at every length past the window (what a model trained on short documents can show).
    sweep = _synthetic_sweep(256, 1e-9, 50.0, 150.0, [512, 1024, 2048], list(range(60, 330, 15)))
    cal = calibrate(sweep, 256, c_mode="fixed", resamples=0)
    assert cal.status == "fitted"
    assert "does not grow with L" in cal.message and "constant m = 150" in cal.message
    assert cal.fit(4096) == pytest.approx(150, abs=2)


def test_the_fit_evaluates_the_package_sigmoid():
    from lampe_calib.calibration._sigmoid_fit import sigmoid_values
    from lampe_calib.methods import sigmoid_mapping_length

    xs = [0.5, 1.0, 8.0, -3000.0]
    expected = [sigmoid_mapping_length(x, 1.2, -1.0, 0.75) for x in xs]
    assert sigmoid_values(xs, 1.2, -1.0, 0.75).tolist() == expected
    assert expected[-1] == 0.0  # far left of the sigmoid (exp overflow) is its limit
