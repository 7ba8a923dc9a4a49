"""The fit of ``m(L) = c / (1 + exp(-(a·L + b)))`` to a sweep (docs/design.md §3.3): ``calibrate``.

m*(L) comes from each V-curve (``_curves``). The sigmoid is fitted with
``scipy.optimize.curve_fit`` on the lengths where remapping wins (m* < L), with c fixed at 0.75·W
(the paper) or free in (0, m_max] (the official release), a > 0 (``_sigmoid_fit``). R², residuals,
and a bootstrap interval over books (books resampled with replacement at each length, m* and the
fit redone) are reported. Beside it, the excess fit minimizes the PPL excess over the curves
(``_excess``); the calibration uses the one with the lower leave-one-length-out excess. When
that is the excess fit, it too gets a bootstrap interval, from the same resampled books (each
resample's curves refitted from the full data's excess fit).

Degenerate cases give a ``Calibration`` with ``status == "degenerate"`` and a message saying what
happened and what to change, never a fit through points that cannot determine it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ._curves import Curve, Optimum, Points, curve_optimum, curves_of
from ._excess import choose_objective, fit_sigmoid_excess, held_out_excess
from ._sigmoid_fit import C_MODES, SigmoidFit, fit_sigmoid
from .sweep._store import MissingPoint, SweepResult

__all__ = ["C_MODES", "Calibration", "SigmoidFit", "calibrate", "fit_sigmoid"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """Outcome of ``calibrate``: the curves and their optima, both fits, the chosen one, and
    bootstrap intervals.

    ``status`` is "fitted" or "degenerate" (then ``fit`` is None and ``message`` says why); a
    fitted calibration's ``message`` notes a fit at a bound of its parameters (e.g. a flat m*(L))
    and the sweep points it was made without (``missing``: their trials failed or never ran).
    ``ci[c_mode][name]`` is the ``level`` bootstrap interval of a, b or c of the argmin fit;
    ``excess_ci[c_mode]`` that of the excess fit, made when the profile uses it (``objective``),
    on the same resampled books.
    """

    status: str
    message: str | None
    head: int
    tail: int
    attention_factor: float
    optima: tuple[Optimum, ...]
    fits: dict[str, SigmoidFit]
    c_mode: str
    ci: dict[str, dict[str, tuple[float, float]]]
    level: float
    resamples: int
    missing: tuple[MissingPoint, ...] = ()
    # The excess fits (``_excess``) by c mode; the mean leave-one-length-out excess of each
    # objective's fit, ``held_out[objective][c_mode]``; the objective the profile uses.
    excess_fits: dict[str, SigmoidFit] = field(default_factory=dict)
    held_out: dict[str, dict[str, float]] = field(default_factory=dict)
    objective: str = "argmin"
    # The V-curves of the chosen head, tail and factor, one per measured length (``optima[i]``
    # is ``curves[i]``'s m*).
    curves: tuple[Curve, ...] = ()
    excess_ci: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    @property
    def fit(self) -> SigmoidFit | None:
        """The fit the profile uses: the ``objective``'s, in ``c_mode``."""
        if self.status != "fitted":
            return None
        return (self.excess_fits if self.objective == "excess" else self.fits).get(self.c_mode)


def _degenerate_reason(optima: Sequence[Optimum], mappings: tuple[int, ...]) -> str | None:
    used = [o for o in optima if o.remapped]
    if len(used) < 3:
        where = ", ".join(str(o.length) for o in used) or "none"
        return (
            f"remapping beats no remap at only {len(used)} of {len(optima)} lengths (L = {where}); the "
            "fit needs 3: add longer --lengths (past the window W)"
        )
    if all(o.bound == "lower" for o in used):
        return f"m* is the smallest swept m ({mappings[0]}) at every length: extend --mappings downward"
    if all(o.bound == "upper" for o in used):
        return f"m* is the largest swept m ({mappings[-1]}) at every length: extend --mappings upward"
    return None


def _best_curves(
    sweep: SweepResult, refine: bool
) -> tuple[tuple[int, int, float], list[Curve], list[Optimum]]:
    """The head, tail and factor whose optima have the lowest mean log PPL over lengths (among
    those measured at the most lengths: a length whose trials all failed is left out), with
    their curves and optima."""
    spec, scores, found = sweep.spec, {}, {}
    for h in spec.heads:
        for t in spec.tails:
            for f in spec.attention_factors:
                curves = curves_of(sweep, h, t, f)
                if curves:
                    optima = [curve_optimum(c, refine) for c in curves]
                    found[(h, t, f)] = (curves, optima)
                    scores[(h, t, f)] = (-len(curves), float(np.mean([math.log(o.ppl) for o in optima])))
    if not scores:
        raise ValueError("the sweep has no measured curve (no length has a finished trial)")
    best = min(scores, key=scores.__getitem__)
    return (best, *found[best])


def _missing_note(missing: Sequence[MissingPoint], limit: int = 4) -> str | None:
    """What a calibration says (and logs) of the sweep points it was made without.

    Example: ``"made without 2 sweep points: L=512 m=88 (s1=32, s2=16): out of memory ...; ..."``."""
    if not missing:
        return None
    shown = "; ".join(m.describe() for m in missing[:limit])
    more = f"; and {len(missing) - limit} more" if len(missing) > limit else ""
    note = f"made without {len(missing)} sweep point(s): {shown}{more}"
    logger.warning("%s", note)
    return note


def calibrate(
    sweep: SweepResult,
    window: int,
    c_mode: str = "fixed",
    refine: bool = True,
    resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> Calibration:
    """m*(L) per length, the sigmoid fit in both c modes, and bootstrap intervals over books.

    Args:
        sweep: measurements (``run_sweep`` or ``collect_sweep``).
        window: the model's W.
        c_mode: the fit the calibration reports as its result ("fixed": 0.75·W, or "free").
        refine: refine m* by a local parabola on the V.
        resamples: bootstrap resamples (0: no interval).
        seed: seed of the resampling.
        level: coverage of the intervals.
    """
    if c_mode not in C_MODES:
        raise ValueError(f"c_mode must be one of {C_MODES}, got {c_mode!r}")
    (head, tail, factor), curves, optima = _best_curves(sweep, refine)
    settings = {"head": head, "tail": tail, "attention_factor": factor, "c_mode": c_mode, "level": level}
    fitless = {"fits": {}, "ci": {}, "resamples": 0, "missing": sweep.missing, "curves": tuple(curves)}
    unfitted = Calibration("degenerate", None, optima=tuple(optima), **settings, **fitless)
    missing = _missing_note(sweep.missing)
    reason = _degenerate_reason(optima, sweep.spec.mappings)
    if reason is not None:
        reason = f"{reason} ({missing})" if missing else reason
        logger.warning("no fit: %s", reason)
        return dataclasses.replace(unfitted, message=reason)
    c_max = float(sweep.spec.mappings[-1])
    fits = _argmin_fits(optima, window, c_max)
    if c_mode not in fits:
        message = f"the {c_mode}-c sigmoid fit did not converge"
        return dataclasses.replace(unfitted, message=message, fits=fits)
    excess_fits, held_out, objective = _excess_fits(curves, optima, window, c_max, fits, c_mode)
    fitters = {("argmin", mode): _argmin_fitter(window, c_max, fit) for mode, fit in fits.items()}
    if objective == "excess":  # (Nelder–Mead per resample: only for the fit the profile uses)
        fitters["excess", c_mode] = _excess_fitter(window, c_max, excess_fits[c_mode])
    intervals = _bootstrap(curves, refine, resamples, seed, level, fitters) if resamples else {}
    note = _shape_note((excess_fits if objective == "excess" else fits)[c_mode], c_max)
    if note:
        logger.warning("fit: %s", note)
    return dataclasses.replace(
        unfitted,
        status="fitted",
        message="; ".join(n for n in (note, missing) if n) or None,
        fits=fits,
        ci={mode: v for (kind, mode), v in intervals.items() if kind == "argmin"},
        excess_ci={mode: v for (kind, mode), v in intervals.items() if kind == "excess"},
        resamples=resamples,
        excess_fits=excess_fits,
        held_out=held_out,
        objective=objective,
    )


def _argmin_fits(optima: Sequence[Optimum], window: int, c_max: float) -> dict[str, SigmoidFit]:
    """The least-squares fit of m*(L) over the remapped lengths, in each c mode that converges."""
    lengths, points = _remapped(optima)
    fits: dict[str, SigmoidFit] = {}
    for mode in C_MODES:
        try:
            fits[mode] = fit_sigmoid(lengths, points, window, mode, c_max)
        except ValueError as error:
            logger.warning("%s-c fit failed: %s", mode, error)
    return fits


def _excess_fits(
    curves: list[Curve],
    optima: Sequence[Optimum],
    window: int,
    c_max: float,
    fits: dict[str, SigmoidFit],
    c_mode: str,
) -> tuple[dict[str, SigmoidFit], dict[str, dict[str, float]], str]:
    """The excess fit in each c mode, both objectives' mean leave-one-length-out excess, and
    the objective chosen for ``c_mode`` (``_excess.choose_objective``)."""
    points = {c.length: c.points() for c in curves}
    by_length = {o.length: o for o in optima}

    def used(lengths: Sequence[int]) -> tuple[list[int], list[float]]:
        return _remapped([by_length[n] for n in sorted(lengths)])

    def argmin_fit(rest: dict, mode: str) -> SigmoidFit | None:
        lengths, mappings = used(list(rest))
        if len(lengths) < 3:
            return None
        try:
            return fit_sigmoid(lengths, mappings, window, mode, c_max, start=fits.get(mode))
        except ValueError:
            return None

    def excess_fit(rest: dict, mode: str, spread: bool = False) -> SigmoidFit:
        # Held out: started from the full data's fits (and the argmin fit of the rest).
        starts = (fits.get(mode), excess_fits.get(mode), None if spread else argmin_fit(rest, mode))
        return fit_sigmoid_excess(
            rest, window, mode, c_max, [f for f in starts if f is not None], used(list(rest)), spread
        )

    excess_fits: dict[str, SigmoidFit] = {}
    for mode in fits:
        excess_fits[mode] = excess_fit(points, mode, spread=True)
    held_out: dict[str, dict[str, float]] = {"argmin": {}, "excess": {}}
    objective = "argmin"
    for mode in fits:
        scores = {
            "argmin": held_out_excess(points, lambda rest, mode=mode: argmin_fit(rest, mode)),
            "excess": held_out_excess(points, lambda rest, mode=mode: excess_fit(rest, mode)),
        }
        common = set(scores["argmin"]) & set(scores["excess"])
        for name, values in scores.items():
            if common:
                held_out[name][mode] = float(np.mean([values[k] for k in sorted(common)]))
        if mode == c_mode:
            objective = choose_objective(scores)
    logger.info("held-out excess %s; profile uses the %s fit", held_out, objective)
    return excess_fits, held_out, objective


def _shape_note(fit: SigmoidFit, c_max: float) -> str | None:
    """What a fit at a bound of its parameters means, or None for an ordinary sigmoid.

    Example: optima 150, 152, 149 at L = 512, 1024, 2048 give a at its lower bound, i.e. m(L) is
    the constant c / (1 + exp(-b)) ≈ 150: "m*(L) does not grow with L ..."
    """
    span = max(fit.lengths) - min(fit.lengths)
    if fit.a * span < 0.05:  # the logistic's argument moves < 0.05 over the lengths: flat
        return (
            f"m*(L) does not grow with L over L = {min(fit.lengths)}..{max(fit.lengths)}: the fit is the "
            f"constant m = {fit(max(fit.lengths)):.0f} (a at its lower bound)"
        )
    if fit.a * span > 50:
        return "m*(L) jumps between two adjacent lengths: the fit is a step; sweep more lengths in between"
    if fit.c_mode == "free" and fit.c >= 0.999 * c_max:
        return f"c is at its upper bound, the largest swept m ({c_max:g}): extend --mappings upward"
    return None


# A refit of resampled optima and curves (``_bootstrap``); None when it cannot be made.
Fitter = Callable[[list[Optimum], Points], "SigmoidFit | None"]


def _remapped(optima: Sequence[Optimum]) -> tuple[list[int], list[float]]:
    used = [o for o in optima if o.remapped]
    return [o.length for o in used], [o.mapping for o in used]


def _argmin_fitter(window: int, c_max: float, start: SigmoidFit) -> Fitter:
    """The argmin fit of resampled optima, from the full data's fit (None: too few remapped)."""

    def fit(optima: list[Optimum], points: Points) -> SigmoidFit | None:
        lengths, mappings = _remapped(optima)
        if len(lengths) < 3:
            return None
        try:
            return fit_sigmoid(lengths, mappings, window, start.c_mode, c_max, start=start)
        except ValueError:
            return None

    return fit


def _excess_fitter(window: int, c_max: float, start: SigmoidFit) -> Fitter:
    """The excess fit of resampled curves, from the full data's excess fit only."""

    def fit(optima: list[Optimum], points: Points) -> SigmoidFit:
        remapped = _remapped(optima)
        return fit_sigmoid_excess(points, window, start.c_mode, c_max, [start], remapped, spread=False)

    return fit


def _bootstrap(
    curves: list[Curve],
    refine: bool,
    resamples: int,
    seed: int,
    level: float,
    fitters: dict[tuple[str, str], Fitter],
) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """Percentile intervals of a, b, c of each of ``fitters`` over resampled books: at every
    length the books are drawn with replacement, and each fitter refits the resampled optima
    and curves (the same draws for all)."""
    rng = np.random.default_rng(seed)
    samples: dict[tuple[str, str], list[tuple[float, float, float]]] = {key: [] for key in fitters}
    for _ in range(resamples):
        optima, points = [], {}
        for curve in curves:
            n = len(curve.results[0].nll) if curve.results else len(curve.unmapped.nll)  # type: ignore[union-attr]
            books = rng.integers(0, n, n).tolist()
            optima.append(curve_optimum(curve, refine, books))
            points[curve.length] = curve.points(books)
        for key, fitter in fitters.items():
            fit = fitter(optima, points)
            if fit is not None:
                samples[key].append((fit.a, fit.b, fit.c))
    tail = (1 - level) / 2 * 100
    out = {}
    for key, values in samples.items():
        if len(values) < max(10, resamples // 2):
            note = "bootstrap (%s fit, %s c): only %d of %d resamples fitted; no interval"
            logger.warning(note, *key, len(values), resamples)
            continue
        arr = np.asarray(values)
        lo, hi = np.percentile(arr, [tail, 100 - tail], axis=0)
        out[key] = {name: (float(lo[i]), float(hi[i])) for i, name in enumerate("abc")}
    return out
