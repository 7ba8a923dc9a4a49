"""The excess fit: m(L) fitted for what a user pays, and the choice between it and the argmin fit.

The argmin fit (``_fit.fit_sigmoid``) is least squares on m*(L), one noisy point per length, each
weighted alike whether its V is sharp (a wrong m costs a lot) or flat (any m near m* will do).
What a user pays for a wrong m(L) is the PPL over the best point of the V at L. The excess fit
minimizes that directly: the mean relative PPL excess of m(L) over the measured V-curves. Sharp
Vs weigh more, flat ones less, and a length where no remap is best still says where m(L) must
not go.

Reading a curve between its points (``CurveReader``). ``mapping_excess`` reads linearly in log
PPL, whose minimum is always a measured point: a fit that minimizes that reading is pulled onto
the grid (on synthetic Vs, tests/calibration/test_excess.py, every seed gave the same grid-bound
fit, worse than the argmin fit). So the excess fit reads the remapped points (m < L) by a natural
cubic spline in log PPL, whose minimum falls between points as the argmin's parabola refinement
does, and linearly from the last remapped point to the unmapped one (m >= L, where the curve
jumps and a spline would overshoot); a curve with fewer than 3 remapped points is read linearly.

Which of the two a profile uses is decided by leave-one-length-out: each fit is made without
one length and scored on that length's curve; the lower mean held-out excess wins (the argmin
fit on a tie, as the paper's).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import minimize

from ..methods import FIXED_MAPPING_FRACTION
from ._curves import Points, _read
from ._sigmoid_fit import C_MODES, SigmoidFit, fit_bounds, fit_of, fit_sigmoid, sigmoid_values

__all__ = [
    "OBJECTIVES",
    "CurveReader",
    "choose_objective",
    "fit_sigmoid_excess",
    "held_out_excess",
    "read_curves",
]

logger = logging.getLogger(__name__)

OBJECTIVES = ("argmin", "excess")


class CurveReader:
    """Log PPL of one V-curve at any m in its measured range, and its least value.

    ``x``, ``y``: the curve's ``(m, log PPL)`` sorted by m (m = L: the unmapped model).

    Example: log PPL 2, 1, 2 at m = 20, 40, 60 (L = 100) reads 1.0 at m = 40 and 1.25 at
    m = 50; with the unmapped model's 5.0 at m = L = 100 added, 3.5 at m = 80 (linear from 60
    to 100) and 5.0 at every m >= 100.
    """

    def __init__(self, length: int, x: np.ndarray, y: np.ndarray, top: float) -> None:
        self.length, self.x, self.y = length, x, y
        self.top = min(top, float(length))  # every m >= L reads as the unmapped point
        remapped = x < length
        self.spline = CubicSpline(x[remapped], y[remapped]) if remapped.sum() >= 3 else None
        self.last = float(x[remapped][-1]) if remapped.any() else -math.inf
        fine = np.linspace(float(x[0]), max(float(x[0]), min(self.top, self.last)), 257)
        self.least = float(y.min())
        if self.spline is not None:  # the spline's minimum may lie between the points
            self.least = min(self.least, float(np.min(self(fine))))

    def __call__(self, m: np.ndarray | float) -> np.ndarray:
        m = np.minimum(np.asarray(m, float), self.length)
        linear = np.interp(m, self.x, self.y)
        if self.spline is None:
            return linear
        return np.where(m <= self.last, self.spline(np.minimum(m, self.last)), linear)

    def excess(self, mapping: float) -> float:
        """Relative PPL excess of m = ``mapping``, clamped into the measured range (outside it
        nothing is known; the nearest end stands in)."""
        m = min(max(float(mapping), float(self.x[0])), self.top)
        return math.expm1(float(self(m)) - self.least)


def read_curves(points: Points) -> dict[int, CurveReader]:
    """A ``CurveReader`` for each curve of ``points`` (``{L: (m, log PPL)}``)."""
    return {length: CurveReader(length, x, y, top) for length, (x, y, top) in _read(points).items()}


def _mean_excess(curves: Mapping[int, CurveReader], mapping: Callable[[float], float]) -> float:
    return float(np.mean([reader.excess(mapping(length)) for length, reader in curves.items()]))


def fit_sigmoid_excess(
    points: Points,
    window: int,
    c_mode: str = "fixed",
    c_max: float | None = None,
    starts: Sequence[SigmoidFit] = (),
    optima: tuple[Sequence[float], Sequence[float]] | None = None,
    spread: bool = True,
) -> SigmoidFit:
    """m(L) = c / (1 + exp(−(a·L + b))) minimizing the mean relative PPL excess over the curves.

    Args:
        points: ``{L: (m, log PPL)}`` of each V-curve (``Curve.points``; m = L is the unmapped
            model); at least 2 curves.
        window: W; c is fixed at 0.75·W or free in (0, ``c_max``] (default 1.25·W), a > 0.
        starts: fits to start from (e.g. the argmin fits).
        spread: add more starts (the argmin fit through each curve's best point, and a few
            spread ones); False: only ``starts`` (at least one).
        optima: ``(lengths, m*)`` the R² and residuals are computed against (the argmin fit's
            points); None: each curve's best measured m below L.

    The objective is piecewise linear in m, so it is minimized by Nelder–Mead (no gradient)
    in W units from every start, and the best end point is kept.

    Raises:
        ValueError: a bad ``c_mode`` or fewer than 2 curves.

    Example: curves whose minima lie on m = 192 / (1 + exp(−(L/256 − 2))) give back that
    sigmoid (within the grid's resolution).
    """
    if c_mode not in C_MODES:
        raise ValueError(f"c_mode must be one of {C_MODES}, got {c_mode!r}")
    if len(points) < 2:
        raise ValueError(f"an excess fit needs at least 2 curves, got {len(points)}")
    curves = read_curves(points)
    c_hi = (c_max or 1.25 * window) / window
    c_fixed = FIXED_MAPPING_FRACTION if c_mode == "fixed" else None
    lengths = np.asarray(sorted(curves), float)

    def full(p: Sequence[float]) -> tuple[float, float, float]:
        return (p[0], p[1], c_fixed) if c_fixed else (p[0], p[1], p[2])

    def loss(p: np.ndarray) -> float:
        ms = sigmoid_values(lengths / window, *full(p)) * window
        return _mean_excess(curves, dict(zip(lengths.astype(int).tolist(), ms, strict=True)).__getitem__)

    best_points = [(n, float(r.x[np.argmin(r.y)])) for n, r in curves.items() if r.x[np.argmin(r.y)] < n]
    candidates = [[s.a * window, s.b, min(c_hi, s.c / window)] for s in starts]
    if not spread and not candidates:
        raise ValueError("fit_sigmoid_excess with spread=False needs at least one start")
    if spread:
        candidates += _spread_starts(best_points, window, c_mode, c_max, c_hi)
    a, b, c = full(_nelder_mead(loss, candidates, 2 if c_fixed else 3, c_hi))
    if optima is None:
        optima = tuple(zip(*best_points, strict=True)) if best_points else ((), ())  # type: ignore[assignment]
    return fit_of(a, b, c, window, c_mode, *optima, objective="excess")


def _spread_starts(
    best_points: list[tuple[int, float]], window: int, c_mode: str, c_max: float | None, c_hi: float
) -> list[list[float]]:
    """More starts, in window units: the argmin fits through each curve's best point (in
    ``c_mode`` and free c), and a few spread sigmoids."""
    candidates = []
    if len({m for _, m in best_points}) >= 2 and len(best_points) >= 3:
        for mode in {c_mode, "free"}:
            try:
                fit = fit_sigmoid(*zip(*best_points, strict=True), window, mode, c_max)
            except ValueError:
                continue
            candidates.append([fit.a * window, fit.b, min(c_hi, fit.c / window)])
    for a0, b0 in ((0.3, 0.0), (1.0, -1.0), (3.0, -2.0)):
        candidates.append([a0, b0, min(c_hi, FIXED_MAPPING_FRACTION)])
    return candidates


def _nelder_mead(
    loss: Callable[[np.ndarray], float], candidates: list[list[float]], keep: int, c_hi: float
) -> np.ndarray:
    """The best end point of Nelder–Mead from every candidate, over the first ``keep`` of
    (a, b, c) within ``fit_bounds``."""
    lower, upper = (bound[:keep] for bound in fit_bounds(c_hi))
    best: tuple[float, np.ndarray] | None = None
    for start in candidates:
        x0 = np.clip(np.asarray(start[:keep], float), lower, upper)
        steps = np.array([0.3 * max(x0[0], 1e-3), 0.5, 0.1 * max(x0[-1], 1e-2)])[:keep]
        simplex = np.vstack([x0, x0 + np.diag(steps)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = minimize(
                loss,
                x0,
                method="Nelder-Mead",
                bounds=list(zip(lower, upper, strict=True)),
                options={
                    "initial_simplex": np.clip(simplex, lower, upper),
                    "xatol": 1e-6,
                    "fatol": 1e-9,
                    "maxfev": 2000,
                },
            )
        if best is None or result.fun < best[0]:
            best = (float(result.fun), result.x)
    assert best is not None
    return best[1]


def held_out_excess(
    points: Points,
    fit: Callable[[Points], SigmoidFit | None],
) -> dict[int, float]:
    """Leave-one-length-out: the relative PPL excess at each length of the fit made without it
    (``CurveReader.excess``: m clamped into that curve's measured range). Lengths where ``fit``
    returns None (too few points left) are left out.

    Example: ``held_out_excess(points, lambda rest: fit_sigmoid_excess(rest, 256))``.
    """
    curves = read_curves(points)
    out = {}
    for length in sorted(points):
        rest = {k: v for k, v in points.items() if k != length}
        fitted = fit(rest)
        if fitted is not None:
            out[length] = curves[length].excess(fitted(length))
    return out


def choose_objective(held_out: Mapping[str, Mapping[int, float]]) -> str:
    """The objective whose fit has the lower mean held-out excess over the lengths both scored;
    "argmin" on a tie or when either has no score.

    Example: ``choose_objective({"argmin": {512: 0.02}, "excess": {512: 0.01}})`` -> ``"excess"``.
    """
    argmin, excess = held_out.get("argmin", {}), held_out.get("excess", {})
    common = sorted(set(argmin) & set(excess))
    if not common:
        return "argmin"
    mean = {name: float(np.mean([held_out[name][k] for k in common])) for name in OBJECTIVES}
    return "excess" if mean["excess"] < mean["argmin"] else "argmin"
