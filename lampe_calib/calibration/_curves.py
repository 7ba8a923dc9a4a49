"""V-curves and their optimum m*(L) (docs/design.md §3.3, first step).

At each length L the sweep measures PPL against the mapping length m: too small an m
compresses the middle region too hard, too large an m leaves relative positions the model
has rarely seen, so the curve has a V shape. Every m >= L is the same evaluation (no remap),
placed at m = L. m*(L) is the best measured point, optionally refined by the vertex of the
parabola through it and its two neighbours, in log PPL. ``best_fixed_mapping`` is the one
m that does best over every length at once (the length-awareness ablation, tuned).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..evaluation._perplexity import PerplexityResult
from .sweep._store import SweepResult

__all__ = [
    "Curve",
    "FixedMapping",
    "Optimum",
    "best_fixed_mapping",
    "curve_optimum",
    "curves_of",
    "mapping_excess",
    "parabola_vertex",
]


@dataclass(frozen=True, eq=False)
class Curve:
    """Perplexity against m at one length, for one head, tail and attention factor.

    ``mappings`` are the remapped points (all < ``length``), ascending, with their ``results``;
    ``unmapped`` is the result for m >= L (the stock model when the attention factor is 1);
    ``vanilla`` is the stock model's; ``upper`` is the largest m the sweep could try.
    """

    length: int
    mappings: tuple[int, ...]
    results: tuple[PerplexityResult, ...]
    unmapped: PerplexityResult | None
    vanilla: PerplexityResult | None
    upper: int
    head: int
    tail: int
    attention_factor: float
    skipped: int = 0

    def points(self, books: Sequence[int] | None = None) -> tuple[list[float], list[float]]:
        """``(m, log PPL)`` of every point, the unmapped one at m = L; ``books`` resamples books."""
        xs: list[float] = [float(m) for m in self.mappings]
        results = list(self.results)
        if self.unmapped is not None:
            xs.append(float(self.length))
            results.append(self.unmapped)
        return xs, [(r if books is None else r.subset(books)).mean_nll for r in results]


def curves_of(sweep: SweepResult, head: int, tail: int, attention_factor: float) -> list[Curve]:
    """The V-curve of every length of ``sweep`` for these settings (lengths with no point are left out)."""
    curves = []
    for length in sweep.spec.lengths:
        remapped: dict[int, PerplexityResult] = {}
        unmapped = None
        for m in sweep.select(length, head, tail, attention_factor):
            if m.point.mapping is not None and m.point.mapping < length:
                remapped[m.point.mapping] = m.result
            else:
                unmapped = m.result
        stock = sweep.stock(length)
        if attention_factor == 1.0 and unmapped is None and stock is not None:
            unmapped = stock.result
        if not remapped and unmapped is None:
            continue
        keys = sorted(remapped)
        curves.append(
            Curve(
                length,
                tuple(keys),
                tuple(remapped[k] for k in keys),
                unmapped,
                stock.result if stock else None,
                sweep.spec.mappings[-1],
                head,
                tail,
                attention_factor,
                stock.skipped if stock else 0,
            )
        )
    return curves


def parabola_vertex(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Abscissa of the vertex of the parabola through three points; None unless it opens upward.

    Example: ``parabola_vertex((1, 2, 4), (3, 1, 3))`` -> ``2.5`` (y = (x - 2.5)² + …).
    """
    (x0, x1, x2), (y0, y1, y2) = xs, ys
    # Divided differences: y = y0 + d1 (x - x0) + d2 (x - x0)(x - x1).
    d1 = (y1 - y0) / (x1 - x0)
    d2 = ((y2 - y1) / (x2 - x1) - d1) / (x2 - x0)
    if d2 <= 0:
        return None
    return (x0 + x1) / 2 - d1 / (2 * d2)


@dataclass(frozen=True)
class Optimum:
    """m*(L) of one curve. ``remapped`` is False when no remap (m >= L) is best (then
    ``mapping == length``); ``bound`` is "lower"/"upper" when m* is the smallest/largest m swept
    and the V's other arm was not seen."""

    length: int
    mapping: float
    ppl: float
    vanilla_ppl: float | None
    remapped: bool
    bound: str | None
    refined: bool


def curve_optimum(curve: Curve, refine: bool = True, books: Sequence[int] | None = None) -> Optimum:
    """m*(L): the best measured point, refined on the V by a parabola in log PPL when the
    best point has a measured neighbour on each side.

    Example: a curve with log PPL 3.0, 2.0, 3.0 at m = 100, 150, 200 (L = 512) gives m* = 150.
    """
    xs, ys = curve.points(books)
    best = int(np.argmin(ys))
    vanilla = (
        None if curve.vanilla is None else (curve.vanilla if books is None else curve.vanilla.subset(books))
    )
    remapped = xs[best] < curve.length
    bound = None
    if remapped and best == 0:
        bound = "lower"
    elif remapped and best == len(xs) - 1:
        bound = "upper"
    elif remapped and xs[best + 1] == curve.length and curve.length > curve.upper:
        bound = "upper"  # the next point is L itself, beyond the swept range
    mapping, refined = xs[best], False
    if refine and remapped and bound is None:
        vertex = parabola_vertex(xs[best - 1 : best + 2], ys[best - 1 : best + 2])
        if vertex is not None:
            mapping, refined = min(max(vertex, xs[best - 1]), xs[best + 1]), True
    return Optimum(
        curve.length,
        mapping,
        math.exp(ys[best]),
        None if vanilla is None else vanilla.ppl,
        remapped,
        bound,
        refined,
    )


Points = Mapping[int, tuple[Sequence[float], Sequence[float]]]


def _read(points: Points) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """Each curve's points sorted by m, and the largest m it says anything about (no bound
    when L itself, the unmapped point, was measured: every m >= L is that point)."""
    curves = {}
    for length, (xs, ys) in points.items():
        order = np.argsort(xs)
        x, y = np.asarray(xs, dtype=float)[order], np.asarray(ys, dtype=float)[order]
        curves[length] = (x, y, math.inf if x[-1] >= length else float(x[-1]))
    return curves


def mapping_excess(points: Points, mapping: Callable[[int], float]) -> dict[int, float]:
    """The PPL of m = ``mapping(L)`` over the best measured point at each L, less 1.

    ``points[L]`` is ``(m, log PPL)`` of the curve at L (``Curve.points``; m = L stands for
    every m >= L, the unmapped model); each curve is read between its points by linear
    interpolation in log PPL.

    Example: a curve at L = 100 with log PPL 2, 1, 2 at m = 20, 40, 60 gives excess
    e^0.5 − 1 = 0.65 at m = 50.

    Raises:
        ValueError: an m outside its curve's measured range (nothing is known there).
    """
    return _excess(_read(points), mapping)


def _excess(
    curves: dict[int, tuple[np.ndarray, np.ndarray, float]], mapping: Callable[[int], float]
) -> dict[int, float]:
    """``mapping_excess`` on curves already read by ``_read``."""
    excess = {}
    for length, (x, y, top) in sorted(curves.items()):
        m = float(mapping(length))
        if not x[0] <= m <= top:
            raise ValueError(f"m = {m:g} at L = {length} lies outside its measured range [{x[0]:g}, {top:g}]")
        excess[length] = math.expm1(float(np.interp(min(m, length), x, y)) - float(y.min()))
    return excess


@dataclass(frozen=True)
class FixedMapping:
    """One m for every length: ``excess[L]`` is its PPL over the best measured point at L, less 1."""

    mapping: float
    excess: Mapping[int, float]


def best_fixed_mapping(points: Points) -> FixedMapping:
    """The single m with the least mean log-PPL excess over the lengths' V-curves
    (``mapping_excess``, which says how the curves are read).

    The sum of piecewise-linear curves bends only at their points, so the best m is one of
    the measured m inside every curve's range.

    Example: curves at L = 100 with log PPL 2, 1, 2 at m = 20, 40, 60 and at L = 200 with
    2, 1.5, 1 at m = 20, 40, 60 give m = 40 (mean excess 0.25 against 0.5 at m = 60).

    Raises:
        ValueError: no curve, or no m inside every curve's range.
    """
    if not points:
        raise ValueError("best_fixed_mapping needs at least one curve")
    curves = _read(points)
    lo, hi = max(x[0] for x, _, _ in curves.values()), min(top for _, _, top in curves.values())
    candidates = sorted({float(m) for x, _, _ in curves.values() for m in x if lo <= m <= hi})
    if not candidates:
        raise ValueError(
            f"no mapping length lies inside every curve's measured range (above {lo:g}, below {hi:g})"
        )

    def cost(m: float) -> tuple[float, float]:
        return sum(math.log1p(e) for e in _excess(curves, lambda _: m).values()), m

    best = min(candidates, key=cost)
    return FixedMapping(best, _excess(curves, lambda _: best))
