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
import datetime
import importlib.metadata
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage

from ..evaluation._books import Books, load_books
from ..methods._registry import RESCALED_BASE_FACTOR
from ..models._facts import ModelFacts, portable_source
from ..models._registry import ModelInfo, model_info
from ._curves import Curve, curve_optimum, curves_of
from ._fit import Calibration, SigmoidFit, calibrate
from ._profiles import Profile
from .sweep._run import SweepProgress, run_sweep
from .sweep._spec import SweepSpec, default_lengths, default_mappings
from .sweep._store import SweepResult

__all__ = [
    "CalibrationRun",
    "build_profile",
    "calibrate_model",
    "default_spec",
    "profile_name",
    "study_signature",
]

logger = logging.getLogger(__name__)

_VERSIONED = ("lampe-calib", "torch", "transformers", "optuna", "datasets", "scipy")


# The largest mapping length a sweep may try, in windows: past the V's right arm (about W) a
# mapping only shows the model positions it never saw.
MAX_MAPPING_WINDOWS = 2


def usable_window(window: int, base: str) -> int:
    """The positions a mapping may use: W on the stock rotary, s·W on a rescaled base.

    Example: ``usable_window(256, "yarn")`` -> 512.
    """
    return window if base == "stock" else RESCALED_BASE_FACTOR * window


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
    usable = usable_window(window, overrides.get("base", "stock"))
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
        windows = f"{MAX_MAPPING_WINDOWS}·W" if spec.base == "stock" else f"{MAX_MAPPING_WINDOWS}·s·W"
        raise ValueError(
            f"mappings must be <= {windows} = {top} (valid: {floor + 1} .. {top}), got {spec.mappings[-1]}"
        )


def profile_name(info: ModelInfo, base: str = "stock") -> str:
    """What a model's profile and study are named after: its alias, else its path's last part;
    ``-<base>`` appended for a rescaled base.

    Example: a model loaded from ``/models/my-llama`` -> ``"my-llama"``; its YaRN-base
    calibration -> ``"my-llama-yarn"``.
    """
    source = (info.source or info.family).rstrip("/")
    name = info.alias or Path(source).name.removesuffix(".gguf") or info.family
    return name if base == "stock" else f"{name}-{base}"


def _versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


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


def _curve_record(curve: Curve, refine: bool) -> dict[str, Any]:
    optimum = curve_optimum(curve, refine)
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


def model_record(info: ModelInfo) -> dict[str, Any]:
    """A profile's ``model`` section: its name, portable source, revision and the facts its
    positions depend on beside ``window`` and ``rope`` (``ModelFacts``)."""
    return {
        "alias": profile_name(info),
        "source": portable_source(info),
        "revision": info.revision,
        "family": info.family,
        "head_dim": info.head_dim,
    }


def build_profile(
    info: ModelInfo,
    calibration: Calibration,
    sweep: SweepResult,
    provenance: dict[str, Any],
    refine: bool = True,
) -> Profile:
    """The profile of a calibration (docs/design.md §3.4); a degenerate calibration gives a
    degenerate profile."""
    cal = calibration
    sigmoid: dict[str, Any] = {"status": cal.status, "message": cal.message}
    # Sweep points without a finished trial (failed or never run): the fit was made without them.
    sigmoid["missing"] = [{**m.point.to_dict(), "reason": m.reason} for m in cal.missing]
    if cal.fit is not None:
        # The bootstrap interval is the argmin fit's: none is recorded for an excess fit.
        ci = cal.ci.get(cal.c_mode) if cal.objective == "argmin" else None
        sigmoid.update(_fit_record(cal.fit, ci, cal))
        sigmoid["points"] = [
            {"length": length, "m_star": m, "fitted": m - r, "residual": r}
            for length, m, r in zip(cal.fit.lengths, cal.fit.mappings, cal.fit.residuals, strict=True)
        ]
        chosen = cal.excess_fits if cal.objective == "excess" else cal.fits
        sigmoid["alternatives"] = [
            _fit_record(fit, cal.ci.get(mode) if cal.objective == "argmin" else None, cal)
            for mode, fit in chosen.items()
            if mode != cal.c_mode
        ]
        sigmoid.update(_objective_records(cal))
    curves = curves_of(sweep, cal.head, cal.tail, cal.attention_factor)
    rescaled = sweep.spec.base != "stock"
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
        curves=tuple(_curve_record(c, refine) for c in curves),
        provenance=provenance,
    )


def run_provenance(
    books: Books, spec: SweepSpec, study: str, dtype: str, command: str | None, seconds: float
) -> dict[str, Any]:
    """A calibration's ``provenance`` section: its data, search, study, dtype, library
    versions, date, command and wall time."""
    return {
        "imported": False,
        "dataset": books.source.describe(),
        "split": books.source.split,
        "samples": books.samples,
        "seed": books.seed,
        "books": list(books.titles),
        "search": spec.search,
        "lengths": list(spec.lengths),
        "study": study,
        "dtype": dtype,
        "versions": _versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "seconds": round(seconds, 1),
    }


def study_model_record(info: ModelInfo, name: str) -> dict[str, Any]:
    """How a study records its model (``run_sweep``'s ``model_record``): a portable source and
    the position facts, never a machine path except to recognise a study stored before."""
    return {
        "source": portable_source(info) or name,
        "facts": ModelFacts.from_info(info).to_dict(),
        "path": info.source,  # only to recognise a study stored before facts were recorded
    }


def study_signature(model: Any, books: Books, spec: SweepSpec) -> dict[str, Any]:
    """What a sweep's results depend on besides the model (``run_sweep``'s ``signature``, with
    the mode, book rows and base it adds): two runs share a study only when these are equal."""
    signature = {
        "data": books.source.describe(),
        "samples": books.samples,
        "seed": books.seed,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "mode": spec.mode,
        "rows": list(books.rows),
    }
    if spec.base != "stock":
        signature["base"] = spec.base
    return signature


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
    if books is None:
        books = load_books(data, tokenizer, max_length=spec.lengths[-1], samples=samples, seed=seed)
    name = study_name or profile_name(info, spec.base)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    # The model is checked by its position facts (and its source is said), not by its path:
    # the same study resumes from any install (``open_study``).
    signature = study_signature(model, books, spec)
    sweep = run_sweep(
        model,
        books,
        spec,
        storage,
        name,
        signature=signature,
        model_record=study_model_record(info, name),
        allow_transfer=allow_transfer,
        batch_tokens=batch_tokens,
        chunk_size=chunk_size,
        progress=progress,
    )
    window = usable_window(info.window, spec.base)  # the fixed c is 3/4 of what m may use
    calibration = calibrate(
        sweep, window, c_mode=c_mode, refine=refine, resamples=resamples if fit else 0, seed=seed
    )
    if not fit:
        message = "curves only (no fit asked for): the profile holds no m(L)"
        calibration = dataclasses.replace(calibration, status="degenerate", message=message, fits={}, ci={})
    seconds = time.perf_counter() - started
    provenance = run_provenance(books, spec, name, dtype, command, seconds)
    profile = build_profile(info, calibration, sweep, provenance, refine)
    return CalibrationRun(profile, calibration, sweep, books, seconds)
