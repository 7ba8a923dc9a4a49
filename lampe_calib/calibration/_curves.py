"""V-curves and their optimum m*(L) (DESIGN §3.3, first step).

At each length L the sweep measures PPL against the mapping length m: too small an m
compresses the middle region too hard, too large an m leaves relative positions the model
has rarely seen, so the curve has a V shape. Every m >= L is the same evaluation (no remap),
placed at m = L. m*(L) is the best measured point, optionally refined by the vertex of the
parabola through it and its two neighbours, in log PPL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..evaluation._perplexity import PerplexityResult
from .sweep._store import SweepResult

__all__ = ["Curve", "Optimum", "curve_optimum", "curves_of", "parabola_vertex"]


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
