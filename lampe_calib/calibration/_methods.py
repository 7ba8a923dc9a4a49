"""Calibrating a method other than LaMPE: its main knob swept per length, the best value per
length and the best single value (docs/design.md §6, ``lampe-calibrate --method``).

The sweep is LaMPE's (``sweep.run_sweep``: the same studies, storage, resume and shared
workers), with the knob's value where LaMPE has m (``SweepPoint.method``). At each length the
method's curve is PPL against the knob; its best measured value is the length's choice. These
methods have no length rule to fit (LaMPE's is its sigmoid), so the profile's rule for a length
it did not measure is the best single value over the measured ones: the value with the least
mean log-PPL excess over the curves, each read between its points by linear interpolation (on
a log axis for a log knob) and at its nearest end outside its range.

"Same budget": every length of a method gets ``points`` values (the default is among them), the
number LaMPE's default grid gives m; the output states it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..evaluation._books import Books
from ..evaluation._perplexity import PerplexityResult
from ..methods._knobs import Knob
from ..methods._tuning import TUNABLE
from ..models._registry import ModelInfo, model_info
from ._profiles import Profile
from ._runs import SweepInputs, model_dtype, model_record, profile_name, run_provenance, sweep_model
from ._space import SweepSpec, default_lengths, default_mappings
from .sweep._run import SweepProgress
from .sweep._store import SweepResult

__all__ = [
    "KnobCurve",
    "MethodCalibration",
    "MethodRun",
    "best_single_value",
    "calibrate_method",
    "calibrate_method_model",
    "method_knobs",
    "method_spec",
]

# LaMPE's default grid has this many mapping lengths per length (``default_mappings``): the
# budget every method gets by default.
DEFAULT_POINTS = 8


def method_knobs(method: str, window: int, length: int) -> tuple[Knob, ...]:
    """The knobs of a method that can be calibrated here (not LaMPE: its own sweep).

    Raises:
        KeyError: an unknown method or one without knobs (naming those with).
    """
    tunable = TUNABLE.get(method)
    if tunable is None or tunable.build is None:
        known = ", ".join(name for name, t in TUNABLE.items() if t.build is not None)
        raise KeyError(f"method {method!r} cannot be calibrated by --method; methods with knobs: {known}")
    return tunable.knobs(window, length)


def method_spec(
    method: str,
    window: int,
    lengths: Sequence[int] | None = None,
    points: int = DEFAULT_POINTS,
    values: Sequence[float] | None = None,
) -> SweepSpec:
    """The sweep of ``method``'s main knob: at each length, ``points`` values over the knob's
    range there (``Knob.grid``, the default among them), or the given ``values`` that lie in it.

    Example: ``method_spec("rerope", 256, [512], 3).values`` -> ``((512, (1, 64, 255)),)``.

    Raises:
        ValueError: a length where none of ``values`` lies in the knob's range.
    """
    lengths = tuple(sorted(set(lengths or default_lengths(window))))
    grids = []
    for length in lengths:
        knob = method_knobs(method, window, length)[0]
        if values is None:
            grid = knob.grid(points)
        else:
            grid = tuple(v for v in values if knob.low <= v <= knob.high)
            if not grid:
                where = f"[{knob.low:g}, {knob.high:g}] at L = {length}"
                raise ValueError(f"no --values lie in {method}'s {knob.name} range {where}")
        grids.append((length, grid))
    head, tail = max(1, window // 8), max(1, window // 16)
    return SweepSpec(
        lengths=lengths,
        mappings=default_mappings(window, head, tail),  # (unused by a method's sweep)
        heads=(head,),
        tails=(tail,),
        method=method,
        values=tuple(grids),
    )


@dataclass(frozen=True)
class KnobCurve:
    """PPL against the main knob at one length: the values measured (ascending), their results,
    the method's default there, and the stock model's result."""

    length: int
    values: tuple[float, ...]
    results: tuple[PerplexityResult, ...]
    default: float
    vanilla: PerplexityResult | None

    @property
    def best(self) -> float:
        """The measured value with the lowest PPL."""
        return self.values[int(np.argmin([r.mean_nll for r in self.results]))]

    def ppl_at(self, value: float) -> float | None:
        """The measured PPL at ``value``, None if it was not measured."""
        return next((r.ppl for v, r in zip(self.values, self.results, strict=True) if v == value), None)


def knob_curves(sweep: SweepResult, window: int) -> list[KnobCurve]:
    """The curve of every length of a method's sweep that has a measured value."""
    spec, curves = sweep.spec, []
    for length in spec.lengths:
        found = {
            m.point.mapping: m.result
            for m in sweep.measurements
            if m.point.method == spec.method and m.point.length == length
        }
        if not found:
            continue
        keys = sorted(found)
        stock = sweep.stock(length)
        default = method_knobs(spec.method, window, length)[0].default
        curves.append(
            KnobCurve(
                length, tuple(keys), tuple(found[k] for k in keys), default, stock.result if stock else None
            )
        )
    return curves


def best_single_value(curves: Sequence[KnobCurve], log: bool) -> float:
    """The one value with the least mean log-PPL excess over the curves (see the module
    docstring for the reading); candidates are the values measured anywhere.

    Example: curves with log PPL 2, 1, 2 at 1, 2, 3 and 3, 2, 1 at 1, 2, 3 give 2 (mean excess
    0.5 against 0.5 at 3 and 1.0 at 1: the smaller value wins the tie).
    """
    if not curves:
        raise ValueError("best_single_value needs at least one curve")

    def axis(v: Any) -> np.ndarray:
        return np.log(np.asarray(v, float)) if log else np.asarray(v, float)

    def cost(value: float) -> float:
        total = 0.0
        for curve in curves:
            y = np.asarray([r.mean_nll for r in curve.results])
            total += float(np.interp(axis(value), axis(curve.values), y)) - float(y.min())
        return total / len(curves)

    candidates = sorted({v for c in curves for v in c.values})
    return min(candidates, key=lambda v: (cost(v), v))


@dataclass(frozen=True)
class MethodCalibration:
    """A method's calibration: its main knob, the curves, and the chosen values."""

    method: str
    knob: Knob  # the main knob at the longest length (its name, scale and description)
    curves: tuple[KnobCurve, ...]
    single: float
    points: int  # evaluated points per length (the budget); the most any length got

    def best(self) -> dict[int, float]:
        return {c.length: c.best for c in self.curves}


def calibrate_method(sweep: SweepResult, window: int) -> MethodCalibration:
    """The best value per length and the best single value of a method's sweep.

    Raises:
        ValueError: the sweep has no measured value.
    """
    spec = sweep.spec
    curves = knob_curves(sweep, window)
    if not curves:
        raise ValueError(f"the {spec.method} sweep has no measured value (no trial finished)")
    knob = method_knobs(spec.method, window, spec.lengths[-1])[0]
    single = best_single_value(curves, knob.log)
    return MethodCalibration(spec.method, knob, tuple(curves), single, max(len(c.values) for c in curves))


def _row(curve: KnobCurve) -> dict[str, Any]:
    first = curve.results[0]
    return {
        "length": curve.length,
        "values": list(curve.values),
        "ppl": [r.ppl for r in curve.results],
        "nll": [list(r.nll) for r in curve.results],
        "best": curve.best,
        "best_ppl": curve.ppl_at(curve.best),
        "default": curve.default,
        "default_ppl": curve.ppl_at(curve.default),
        "vanilla_ppl": None if curve.vanilla is None else curve.vanilla.ppl,
        "books": len(first.tokens),
        "tokens": first.total_tokens,
    }


def build_method_profile(info: ModelInfo, cal: MethodCalibration, provenance: dict[str, Any]) -> Profile:
    """The profile of a method's calibration: ``method`` and ``knob`` (docs/design.md §6)."""
    return Profile(
        model=model_record(info),
        window=info.window,
        rope={"theta": info.rope_theta, "type": info.rope_type, "scaling": dict(info.rope_scaling)},
        lampe={},
        sigmoid={},
        provenance=provenance,
        method=cal.method,
        knob={
            "name": cal.knob.name,
            "description": cal.knob.description,
            "log": cal.knob.log,
            "integer": cal.knob.integer,
            "single": cal.single,
            "points": cal.points,
            "lengths": [_row(c) for c in cal.curves],
        },
    )


@dataclass(frozen=True)
class MethodRun:
    """What ``calibrate_method_model`` returns."""

    profile: Profile
    calibration: MethodCalibration
    sweep: SweepResult
    books: Books
    seconds: float


def calibrate_method_model(
    model: Any,
    tokenizer: Any,
    method: str,
    *,
    storage: Any,
    spec: SweepSpec | None = None,
    books: Books | None = None,
    data: str = "pg19",
    samples: int = 8,
    seed: int = 0,
    study_name: str | None = None,
    command: str | None = None,
    batch_tokens: int = 16384,
    chunk_size: int = 1024,
    progress: Callable[[SweepProgress], None] | None = None,
) -> MethodRun:
    """Calibrate ``method``'s main knob for ``model``: sweep (or resume) it per length on the
    books, choose the best value per length and the best single value, build the profile.

    Args are ``calibrate_model``'s; ``spec`` defaults to ``method_spec(method, W)``, the study
    to ``<profile name>-<method>``.
    """
    started = time.perf_counter()
    info = model_info(model)
    spec = spec or method_spec(method, info.window)
    if spec.method != method:
        raise ValueError(f"the spec sweeps {spec.method!r}, not {method!r}")
    name = study_name or f"{profile_name(info)}-{method}"
    inputs = SweepInputs(books, data, samples, seed, batch_tokens, chunk_size, progress)
    books, sweep = sweep_model(model, tokenizer, spec, storage, name, inputs, method=method)
    calibration = calibrate_method(sweep, info.window)
    seconds = time.perf_counter() - started
    provenance = run_provenance(books, spec, name, model_dtype(model), command, seconds)
    profile = build_method_profile(info, calibration, provenance)
    return MethodRun(profile, calibration, sweep, books, seconds)
