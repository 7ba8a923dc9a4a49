"""Calibration end to end: books, sweep, fit, profile (docs/design.md §3); ``lampe-calibrate`` is a UI on it.

Example::

    model, tokenizer = load_model("reference")
    run = calibrate_model(model, tokenizer, storage="sqlite:///reference.db")
    save_profile(run.profile, "reference.json")
    with apply_lampe(model, run.profile):
        ...
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from optuna.storages import BaseStorage

from ..evaluation._books import Books
from ..methods import STOCK
from ..methods._registry import RESCALED_BASE_FACTOR
from ..models._registry import ModelInfo, model_info
from ._curves import Curve, Optimum
from ._fit import Calibration, SigmoidFit, calibrate
from ._profiles import Profile
from ._runs import SweepInputs, model_dtype, model_record, profile_name, run_provenance, sweep_model
from ._space import SweepSpec, default_lengths, default_mappings
from .sweep._run import SweepProgress
from .sweep._store import SweepResult

__all__ = ["CalibrationRun", "build_profile", "calibrate_model", "default_spec", "usable_window"]

logger = logging.getLogger(__name__)

# The largest mapping length a sweep may try, in windows: past the V's right arm (about W) a
# mapping only shows the model positions it never saw.
MAX_MAPPING_WINDOWS = 2


def usable_window(window: int, base: str) -> int:
    """The positions a mapping may use: W on the stock rotary, s·W on a rescaled base.

    Example: ``usable_window(256, "yarn")`` -> 512.
    """
    return window if base == STOCK else RESCALED_BASE_FACTOR * window


def default_spec(window: int, **overrides: Any) -> SweepSpec:
    """The default sweep for a model of window W: s1 = W/8, s2 = W/16, L in {W/2, W, 2W, 4W, 8W},
    8 mapping lengths from s1 + s2 + 1 to 1.25·W (1.25·s·W on a rescaled ``base``).
    ``overrides`` replace ``SweepSpec`` fields.

    The head and tail scale with W like the official release's 512 and 200 for W = 4096
    (about W/8 and W/20); W/16 keeps a 16-token tail at W = 256.

    Example: ``default_spec(256).mappings`` -> ``(49, 88, 126, 165, 204, 243, 281, 320)``.
    """
    head = overrides.get("heads", (max(1, window // 8),))
    tail = overrides.get("tails", (max(1, window // 16),))
    usable = usable_window(window, overrides.get("base", STOCK))
    fields = {
        "lengths": default_lengths(window),
        "mappings": default_mappings(usable, max(head), max(tail)),
        "heads": head,
        "tails": tail,
    }
    fields.update(overrides)
    spec = SweepSpec(**fields)
    check_spec_window(spec, window)
    return spec


def check_spec_window(spec: SweepSpec, window: int) -> None:
    """Refuse a sweep that cannot mean anything for a model of window W: a head or tail of W
    or more (nothing left to map), a length at or below head + tail (nothing to compress), or a
    mapping length past 2·W (positions the model never saw, far beyond the V's right arm; 2·s·W
    on a rescaled base).

    Example: for W = 256, s1 = 32, s2 = 16, lengths must be > 48 and mappings <= 512.
    """
    for name, sizes in (("head", spec.heads), ("tail", spec.tails)):
        if sizes[-1] >= window:
            raise ValueError(f"{name} sizes must be < the window W = {window}, got {sizes[-1]}")
    floor = spec.heads[-1] + spec.tails[-1]
    if spec.lengths[0] <= floor:
        raise ValueError(
            f"lengths must be > head + tail = {floor} (valid: {floor + 1} and up), got {spec.lengths[0]}"
        )
    top = MAX_MAPPING_WINDOWS * usable_window(window, spec.base)
    if spec.mappings[-1] > top:
        windows = f"{MAX_MAPPING_WINDOWS}·W" if spec.base == STOCK else f"{MAX_MAPPING_WINDOWS}·s·W"
        raise ValueError(
            f"mappings must be <= {windows} = {top} (valid: {floor + 1} .. {top}), got {spec.mappings[-1]}"
        )


def _fit_record(
    fit: SigmoidFit, ci: dict[str, tuple[float, float]] | None, cal: Calibration
) -> dict[str, Any]:
    return {
        "a": fit.a,
        "b": fit.b,
        "c": fit.c,
        "c_mode": fit.c_mode,
        "r2": fit.r2,
        "ci": None
        if not ci
        else {"level": cal.level, "resamples": cal.resamples, **{k: list(v) for k, v in ci.items()}},
    }


def _objective_records(cal: Calibration) -> dict[str, Any]:
    """``objective`` (the fit the profile uses) and ``fits``: every fit made, by objective and c
    mode, with its R² against m*(L) and its mean leave-one-length-out relative PPL excess."""
    fits = [
        {
            "objective": objective,
            "c_mode": mode,
            "a": fit.a,
            "b": fit.b,
            "c": fit.c,
            "r2": fit.r2,
            "held_out_excess": cal.held_out.get(objective, {}).get(mode),
        }
        for objective, by_mode in (("argmin", cal.fits), ("excess", cal.excess_fits))
        for mode, fit in by_mode.items()
    ]
    return {"objective": cal.objective, "fits": fits}


def _curve_record(curve: Curve, optimum: Optimum) -> dict[str, Any]:
    first = curve.results[0] if curve.results else curve.unmapped
    assert first is not None
    return {
        "length": curve.length,
        "mappings": list(curve.mappings),
        "ppl": [r.ppl for r in curve.results],
        "nll": [list(r.nll) for r in curve.results],
        "unmapped_ppl": None if curve.unmapped is None else curve.unmapped.ppl,
        "vanilla_ppl": None if curve.vanilla is None else curve.vanilla.ppl,
        "m_star": optimum.mapping,
        "remapped": optimum.remapped,
        "bound": optimum.bound,
        "books": len(first.tokens),
        "tokens": first.total_tokens,
        "book_tokens": list(first.tokens),
        "skipped": curve.skipped,
    }


def build_profile(
    info: ModelInfo,
    calibration: Calibration,
    sweep: SweepResult,
    provenance: dict[str, Any],
) -> Profile:
    """The profile of a calibration (docs/design.md §3.4), with its curves and their optima; a
    degenerate calibration gives a degenerate profile."""
    cal = calibration
    sigmoid: dict[str, Any] = {"status": cal.status, "message": cal.message}
    # Sweep points without a finished trial (failed or never run): the fit was made without them.
    sigmoid["missing"] = [{**m.point.to_dict(), "reason": m.reason} for m in cal.missing]
    if cal.fit is not None:
        intervals = cal.excess_ci if cal.objective == "excess" else cal.ci
        sigmoid.update(_fit_record(cal.fit, intervals.get(cal.c_mode), cal))
        sigmoid["points"] = [
            {"length": length, "m_star": m, "fitted": m - r, "residual": r}
            for length, m, r in zip(cal.fit.lengths, cal.fit.mappings, cal.fit.residuals, strict=True)
        ]
        chosen = cal.excess_fits if cal.objective == "excess" else cal.fits
        sigmoid["alternatives"] = [
            _fit_record(fit, intervals.get(mode), cal) for mode, fit in chosen.items() if mode != cal.c_mode
        ]
        sigmoid.update(_objective_records(cal))
    rescaled = sweep.spec.base != STOCK
    base = {"base": {"type": sweep.spec.base, "factor": RESCALED_BASE_FACTOR}} if rescaled else {}
    return Profile(
        model=model_record(info),
        window=info.window,
        rope={"theta": info.rope_theta, "type": info.rope_type, "scaling": dict(info.rope_scaling)},
        lampe={
            "head": cal.head,
            "tail": cal.tail,
            "mode": sweep.spec.mode,
            "attention_factor": cal.attention_factor,
            **base,
        },
        sigmoid=sigmoid,
        curves=tuple(_curve_record(c, o) for c, o in zip(cal.curves, cal.optima, strict=True)),
        provenance=provenance,
    )


@dataclass(frozen=True)
class CalibrationRun:
    """What ``calibrate_model`` returns: the profile and the pieces it was made of."""

    profile: Profile
    calibration: Calibration
    sweep: SweepResult
    books: Books
    seconds: float


def calibrate_model(
    model: Any,
    tokenizer: Any,
    *,
    storage: str | BaseStorage,
    spec: SweepSpec | None = None,
    data: str = "pg19",
    samples: int = 8,
    seed: int = 0,
    study_name: str | None = None,
    c_mode: str = "fixed",
    refine: bool = True,
    fit: bool = True,
    allow_transfer: bool = False,
    resamples: int = 200,
    batch_tokens: int = 16384,
    chunk_size: int = 1024,
    books: Books | None = None,
    command: str | None = None,
    progress: Callable[[SweepProgress], None] | None = None,
) -> CalibrationRun:
    """Calibrate ``model``: select books, run (or resume) the sweep, fit m(L), build the profile.

    Args:
        model, tokenizer: from ``load_model``.
        storage: Optuna storage or database URL holding the sweep (resumable).
        spec: the sweep; None: ``default_spec(W)``.
        data, samples, seed: book selection (``load_books``).
        study_name: base name of the sweep's studies; None: the profile name.
        c_mode, refine, resamples: passed to ``calibrate`` (``seed`` seeds the bootstrap too).
        fit: False: measure the curves only; the profile holds no m(L) (status "degenerate").
        allow_transfer: resume a study run on a model whose position facts differ (``open_study``).
        batch_tokens, chunk_size: passed to ``run_sweep``.
        books: books already loaded with ``load_books`` (then ``data`` is not read).
        command: the command line, recorded in the provenance.
        progress: called after each trial (``SweepProgress``).
    """
    started = time.perf_counter()
    info = model_info(model)
    spec = spec or default_spec(info.window, seed=seed)
    name = study_name or profile_name(info, spec.base)
    inputs = SweepInputs(books, data, samples, seed, batch_tokens, chunk_size, progress)
    books, sweep = sweep_model(model, tokenizer, spec, storage, name, inputs, allow_transfer=allow_transfer)
    window = usable_window(info.window, spec.base)  # the fixed c is 3/4 of what m may use
    calibration = calibrate(
        sweep, window, c_mode=c_mode, refine=refine, resamples=resamples if fit else 0, seed=seed
    )
    if not fit:
        message = "curves only (no fit asked for): the profile holds no m(L)"
        calibration = dataclasses.replace(calibration, status="degenerate", message=message, fits={}, ci={})
    seconds = time.perf_counter() - started
    provenance = run_provenance(books, spec, name, model_dtype(model), command, seconds)
    profile = build_profile(info, calibration, sweep, provenance)
    return CalibrationRun(profile, calibration, sweep, books, seconds)
