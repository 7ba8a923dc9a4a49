"""What every calibration run shares, LaMPE's (``_calibrate``) and another method's (``_methods``):
the name of its profile and study, the records a profile and a study keep of the model, the
provenance, and the sweep step (books, signature, ``run_sweep``)."""

from __future__ import annotations

import datetime
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage

from ..evaluation._books import Books, load_books
from ..methods import STOCK
from ..models._facts import ModelFacts, portable_source
from ..models._registry import ModelInfo, model_info
from ._space import SweepSpec
from .sweep._run import SweepProgress, run_sweep
from .sweep._store import SweepResult

__all__ = [
    "SweepInputs",
    "model_dtype",
    "model_record",
    "profile_name",
    "run_provenance",
    "study_model_record",
    "study_signature",
    "sweep_model",
]

_VERSIONED = ("lampe-calib", "torch", "transformers", "optuna", "datasets", "scipy")


def profile_name(info: ModelInfo, base: str = STOCK) -> str:
    """What a model's profile and study are named after: its alias, else its path's last part;
    ``-<base>`` appended for a rescaled base.

    Example: a model loaded from ``/models/my-llama`` -> ``"my-llama"``; its YaRN-base
    calibration -> ``"my-llama-yarn"``.
    """
    source = (info.source or info.family).rstrip("/")
    name = info.alias or Path(source).name.removesuffix(".gguf") or info.family
    return name if base == STOCK else f"{name}-{base}"


def model_dtype(model: Any) -> str:
    """Example: a bfloat16 model -> ``"bfloat16"``."""
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def _versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


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
        "dtype": model_dtype(model),
        "mode": spec.mode,
        "rows": list(books.rows),
    }
    if spec.base != STOCK:
        signature["base"] = spec.base
    return signature


@dataclass(frozen=True)
class SweepInputs:
    """How a calibration's sweep gets its books and runs its trials: the arguments of these
    names of ``calibrate_model`` and ``calibrate_method_model``."""

    books: Books | None  # books already loaded; None: ``load_books(data, samples=, seed=)``
    data: str
    samples: int
    seed: int
    batch_tokens: int
    chunk_size: int
    progress: Callable[[SweepProgress], None] | None


def sweep_model(
    model: Any,
    tokenizer: Any,
    spec: SweepSpec,
    storage: str | BaseStorage,
    study: str,
    inputs: SweepInputs,
    *,
    method: str | None = None,
    allow_transfer: bool = False,
) -> tuple[Books, SweepResult]:
    """The books and the sweep of ``spec`` over them in the studies named ``study`` (run or
    resumed, ``run_sweep``); ``method`` is added to the signature of a method's sweep. The model
    is checked by its position facts (and its source is said), not by its path: the same study
    resumes from any install (``open_study``)."""
    info = model_info(model)
    books = inputs.books
    if books is None:
        books = load_books(
            inputs.data, tokenizer, max_length=spec.lengths[-1], samples=inputs.samples, seed=inputs.seed
        )
    signature = study_signature(model, books, spec)
    if method is not None:
        signature["method"] = method
    sweep = run_sweep(
        model,
        books,
        spec,
        storage,
        study,
        signature=signature,
        model_record=study_model_record(info, study),
        allow_transfer=allow_transfer,
        batch_tokens=inputs.batch_tokens,
        chunk_size=inputs.chunk_size,
        progress=inputs.progress,
    )
    return books, sweep
