"""The sigmoid ``m(L) = c / (1 + exp(-(a·L + b)))`` fitted by least squares to points (L, m*(L))
(docs/design.md §3.3): c fixed at 0.75·W (the paper) or free in (0, m_max] (the official release), a > 0.
``_fit.calibrate`` runs it on a sweep's optima; ``_excess`` fits the same sigmoid to the curves.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from ..methods import FIXED_MAPPING_FRACTION, sigmoid_mapping_length

__all__ = ["C_MODES", "SigmoidFit", "fit_bounds", "fit_of", "fit_sigmoid", "sigmoid_values"]

logger = logging.getLogger(__name__)

C_MODES = ("fixed", "free")


@dataclass(frozen=True)
class SigmoidFit:
    """A fitted ``m(L) = c / (1 + exp(-(a·L + b)))`` and how well it fits its points."""

    a: float
    b: float
    c: float
    c_mode: str
    r2: float | None
    lengths: tuple[int, ...]
    mappings: tuple[float, ...]
    residuals: tuple[float, ...] = field(default=())
    # What the fit minimized: "argmin" (least squares on m*(L)) or "excess" (``_excess``).
    objective: str = "argmin"

    def __call__(self, length: float) -> float:
        return sigmoid_mapping_length(length, self.a, self.b, self.c)


def fit_bounds(c_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of (a, b, c) in window units (L/W, m/W): a > 0 (m grows with L),
    |b| <= 50, c in (0, ``c_hi``]."""
    return np.array([1e-6, -50.0, 1e-3]), np.array([1e3, 50.0, c_hi])


def sigmoid_values(x: Sequence[float] | np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """``sigmoid_mapping_length`` at each of ``x`` (the one sigmoid of the package, element-wise).

    Example: ``sigmoid_values([0.0], 1.0, 0.0, 2.0)`` -> ``array([1.])``.
    """
    return np.array([sigmoid_mapping_length(float(v), a, b, c) for v in np.asarray(x, float)])


def _sigmoid_jacobian(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """``(n, 3)`` derivatives of the sigmoid by a, b, c (exact: far fewer evaluations than finite
    differences where the fit is flat, e.g. a drifting to its bound)."""
    s = sigmoid_values(x, a, b, 1.0)
    slope = c * s * (1 - s)
    return np.stack([slope * x, slope, s], axis=1)


def _starts(
    x: np.ndarray, y: np.ndarray, c_hi: float, c_fixed: float | None, start: SigmoidFit | None, window: int
) -> list[list[float]]:
    """Where the least squares begin, in window units: ``start``, or the linearised fits
    ``logit(m / c) = a·L + b`` for a few c (points clipped inside (0, c))."""
    if start is not None:
        return [[start.a * window, start.b, c_fixed or min(c_hi, start.c / window)]]
    c_starts = (
        [c_fixed]
        if c_fixed
        else {min(c_hi, max(y) * k) for k in (1.02, 1.2, 1.5)} | {min(c_hi, FIXED_MAPPING_FRACTION)}
    )
    starts = []
    for c0 in sorted(c_starts):
        z = np.log(np.clip(y / c0, 0.02, 0.98) / (1 - np.clip(y / c0, 0.02, 0.98)))
        slope, intercept = np.polyfit(x, z, 1) if np.ptp(x) > 0 else (1.0, 0.0)
        starts.append([max(slope, 1e-3), float(np.clip(intercept, -49, 49)), c0])
    return starts


def _least_squares(
    x: np.ndarray, y: np.ndarray, starts: list[list[float]], c_fixed: float | None, c_hi: float
) -> tuple[float, float, float] | None:
    """The best (a, b, c) over ``starts``: one ``curve_fit`` whose parameter mask leaves c out
    when it is fixed (at ``c_fixed``); None when no start converges."""
    free = np.array([True, True, c_fixed is None])

    def full(p: Sequence[float]) -> list[float]:
        return [*p, c_fixed] if c_fixed else list(p)

    lower, upper = fit_bounds(c_hi)
    best = None
    for start_values in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                fitted, _ = curve_fit(
                    lambda x, *p: sigmoid_values(x, *full(p)),
                    x,
                    y,
                    p0=np.asarray(start_values)[free],
                    jac=lambda x, *p: _sigmoid_jacobian(x, *full(p))[:, free],
                    bounds=(lower[free], upper[free]),
                    maxfev=2000,
                )
                params = full(fitted)
        except (RuntimeError, ValueError) as error:
            logger.debug("sigmoid fit from %s failed: %s", start_values, error)
            continue
        sse = float(np.sum((sigmoid_values(x, *params) - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, params)
    return None if best is None else tuple(best[1])  # type: ignore[return-value]


def fit_sigmoid(
    lengths: Sequence[float],
    mappings: Sequence[float],
    window: int,
    c_mode: str = "fixed",
    c_max: float | None = None,
    start: SigmoidFit | None = None,
) -> SigmoidFit:
    """Least-squares fit of m(L) to points ``(lengths[i], mappings[i])`` (at least 3).

    Args:
        window: W; c is fixed at 0.75·W (``c_mode="fixed"``) or free in (0, ``c_max``]
            (default 1.25·W). L and m are divided by W for the fit, so a is about 1/W.
        start: a previous fit to start from (one start); None: several starts from the
            linearised fit ``logit(m / c) = a·L + b``.

    Raises:
        ValueError: fewer than 3 points, a bad ``c_mode``, or no convergence.

    Example: points on m = 192 / (1 + exp(-(L/256 - 2))) give back a = 1/256, b = -2, c = 192.
    """
    if c_mode not in C_MODES:
        raise ValueError(f"c_mode must be one of {C_MODES}, got {c_mode!r}")
    if len(lengths) != len(mappings) or len(lengths) < 3:
        raise ValueError(f"a sigmoid fit needs at least 3 points, got {len(lengths)}")
    x = np.asarray(lengths, float) / window
    y = np.asarray(mappings, float) / window
    c_hi = (c_max or 1.25 * window) / window
    c_fixed = FIXED_MAPPING_FRACTION if c_mode == "fixed" else None
    best = _least_squares(x, y, _starts(x, y, c_hi, c_fixed, start, window), c_fixed, c_hi)
    if best is None:
        raise ValueError(f"the sigmoid fit ({c_mode} c) did not converge on {len(x)} points")
    return fit_of(*best, window, c_mode, lengths, mappings)


def fit_of(
    a: float,
    b: float,
    c: float,
    window: int,
    c_mode: str,
    lengths: Sequence[float],
    mappings: Sequence[float],
    objective: str = "argmin",
) -> SigmoidFit:
    """The ``SigmoidFit`` of the sigmoid (a, b, c) in units of the window (L/W, m/W), with its
    residuals and R² against the optima (``lengths``, ``mappings``) in tokens."""
    opt_l, opt_m = np.asarray(lengths, float), np.asarray(mappings, float)
    residuals = opt_m - sigmoid_values(opt_l / window, a, b, c) * window
    total = float(np.sum((opt_m - opt_m.mean()) ** 2)) if opt_m.size else 0.0
    r2 = 1 - float(np.sum(residuals**2)) / total if total > 0 else None
    return SigmoidFit(
        float(a) / window,
        float(b),
        float(c) * window,
        c_mode,
        r2,
        tuple(int(v) for v in opt_l),
        tuple(float(v) for v in opt_m),
        tuple(residuals.tolist()),
        objective=objective,
    )
