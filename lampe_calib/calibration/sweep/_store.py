"""Where a sweep lives: Optuna storages, the sweep's studies, and the measurements in their trials.

Studies of a sweep named ``NAME`` (by default the model's alias), all in one storage:

- ``NAME:vanilla``: the stock model at every length (each L enqueued once), the reference of
  every V-curve and the "vanilla" column of the closing table;
- ``NAME``: ``--search grid``, each point of L × m × head × tail × attention_factor enqueued once;
- ``NAME:gp:L<L>``: ``--search gp``, one study per length (Optuna's GPSampler over m): a GP
  models one objective surface, and the V of each length is its own surface.

Each trial's user attributes hold its point (``point``), the per-book NLL sums (``nll``) and
token counts (``tokens``), the book rows, skipped books and seconds; a trial that copied an
equal, finished evaluation also holds ``reused_from`` ("study#trial"), and a failed trial the
reason in ``error``. Each study holds the sweep's ``signature`` (model, data, samples, seed,
dtype, mode, book rows): results are only comparable under one signature, so a resumed study
with another is refused.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from ...evaluation._perplexity import PerplexityResult
from ...methods._names import LAMPE
from .._space import SweepPoint, SweepSpec
from ._db import check_storage_url, open_storage
from ._optuna_compat import trial_params

__all__ = [
    "Measurement",
    "MissingPoint",
    "SweepResult",
    "collect_sweep",
    "finished_measurements",
    "check_storage_url",
    "open_storage",
    "open_study",
    "related_studies",
    "study_names",
    "trial_point",
]

logger = logging.getLogger(__name__)

COMPLETE = (TrialState.COMPLETE,)


@dataclass(frozen=True)
class Measurement:
    """One evaluated point: its per-book result and where it is stored."""

    point: SweepPoint
    result: PerplexityResult
    rows: tuple[int, ...]
    skipped: int
    seconds: float
    study: str
    trial: int

    def user_attrs(self) -> dict[str, Any]:
        return {
            "point": self.point.to_dict(),
            "nll": list(self.result.nll),
            "tokens": list(self.result.tokens),
            "ppl": self.result.ppl,
            "rows": list(self.rows),
            "skipped": self.skipped,
            "seconds": self.seconds,
        }

    @classmethod
    def from_trial(cls, study: str, trial: optuna.trial.FrozenTrial) -> Measurement:
        a = trial.user_attrs
        point, result = (
            SweepPoint.from_dict(a["point"]),
            PerplexityResult(tuple(a["nll"]), tuple(a["tokens"])),
        )
        return cls(
            point, result, tuple(a["rows"]), int(a["skipped"]), float(a["seconds"]), study, trial.number
        )


@dataclass(frozen=True)
class MissingPoint:
    """A point of the sweep without a finished trial, and why (its last trial's error)."""

    point: SweepPoint
    reason: str

    def describe(self) -> str:
        """Example: ``"L=512 m=88 (s1=32, s2=16): out of memory at ..."``."""
        return f"{self.point.describe()}: {self.reason}"


@dataclass(frozen=True)
class SweepResult:
    """All measurements of a sweep (deduplicated by evaluation), for ``spec``'s lengths, and the
    vanilla and grid points that have none (``missing``)."""

    spec: SweepSpec
    measurements: tuple[Measurement, ...] = field(repr=False)
    missing: tuple[MissingPoint, ...] = ()

    def stock(self, length: int) -> Measurement | None:
        """The stock model's measurement at ``length`` (vanilla), if any."""
        return next((m for m in self.measurements if m.point.length == length and m.point.stock), None)

    def select(self, length: int, head: int, tail: int, attention_factor: float) -> list[Measurement]:
        """Measurements at ``length`` with these LaMPE settings (remapped points and m >= L ones)."""
        return [
            m
            for m in self.measurements
            if m.point.mapping is not None
            and m.point.length == length
            and (m.point.head, m.point.tail, m.point.attention_factor) == (head, tail, attention_factor)
        ]


def trial_point(trial: optuna.trial.FrozenTrial) -> SweepPoint | None:
    """The point of a vanilla or grid trial: its parameters, or those it was enqueued with."""
    params = trial_params(trial)
    try:
        return SweepPoint.from_params(params) if params else None
    except (KeyError, TypeError, ValueError):
        return None  # a GP trial, or one killed half-way through suggesting its parameters


def study_names(base: str, spec: SweepSpec) -> list[str]:
    """Names of the studies a sweep of ``spec`` uses.

    Example: ``study_names("reference", spec_with_lengths_512_1024_search_gp)`` ->
    ``["reference:vanilla", "reference:gp:L512", "reference:gp:L1024"]``.
    """
    names = [f"{base}:vanilla"]
    if spec.search == "grid":
        names.append(base)
    else:
        names.extend(f"{base}:gp:L{length}" for length in spec.lengths)
    return names


def related_studies(storage: BaseStorage, base: str) -> list[str]:
    """Names of the studies in ``storage`` that belong to sweep ``base``."""
    names = [s.study_name for s in storage.get_all_studies()]
    return [name for name in names if name == base or name.startswith(base + ":")]


def finished_measurements(storage: BaseStorage, base: str) -> dict[tuple[Any, ...], Measurement]:
    """Every completed evaluation of the sweep's studies, by ``SweepPoint.key()`` (first wins)."""
    found: dict[tuple[Any, ...], Measurement] = {}
    for name in sorted(related_studies(storage, base)):
        study_id = storage.get_study_id_from_name(name)
        for trial in storage.get_all_trials(study_id, deepcopy=False, states=COMPLETE):
            if "point" in trial.user_attrs and "reused_from" not in trial.user_attrs:
                measurement = Measurement.from_trial(name, trial)
                found.setdefault(measurement.point.key(), measurement)
    return found


def open_study(
    storage: BaseStorage,
    name: str,
    sampler: optuna.samplers.BaseSampler,
    signature: dict,
    model: dict | None = None,
    allow_transfer: bool = False,
) -> optuna.Study:
    """Create or load study ``name``; a loaded one must have been run under ``signature`` and,
    when ``model`` (``{"source", "facts"}``) is given, on a model with the same facts.

    A study stored before models were recorded by their facts holds the model's source in its
    signature: it is taken over (its record rewritten) when that source is this model's
    (``model["path"]``, the path it was loaded from), its portable id, or a path of the same
    last part (the same wheel installed elsewhere).
    """
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, direction="minimize", load_if_exists=True
    )
    stored = study.user_attrs.get("signature")
    if stored is not None and model is not None and "model" in stored and "model" not in signature:
        legacy, path = str(stored["model"]), model.get("path") or ""
        same = legacy in (model["source"], path) or (path and Path(legacy).name == Path(path).name)
        if same or allow_transfer:
            stored = {k: v for k, v in stored.items() if k != "model"}
            if stored == signature:
                study.set_user_attr("signature", stored)
                study.set_user_attr("model", _model_record(model))
        else:
            raise ValueError(
                f"study {name!r} in this storage was run on model {legacy!r}, now {model['source']!r}; "
                "pass another --study name or --storage, or --allow-transfer to resume it on this model"
            )
    if stored is None:
        study.set_user_attr("signature", signature)
    elif stored != signature:
        changed = sorted(k for k in set(stored) | set(signature) if stored.get(k) != signature.get(k))
        raise ValueError(
            f"study {name!r} in this storage was run with other settings ({', '.join(changed)} differ: "
            f"stored {[stored.get(k) for k in changed]}, now {[signature.get(k) for k in changed]}); "
            "pass another --study name or --storage, or the original settings"
        )
    if model is not None:
        _check_model(study, name, model, allow_transfer)
    return study


def _model_record(model: dict) -> dict:
    return {"source": model["source"], "facts": model["facts"]}


def _check_model(study: optuna.Study, name: str, model: dict, allow_transfer: bool) -> None:
    """Record the study's model, or check this one against it (``ModelFacts``)."""
    from ...models._facts import ModelFacts, check_transfer

    record = study.user_attrs.get("model")
    if record is None:
        study.set_user_attr("model", _model_record(model))
        return
    ours, theirs = ModelFacts.from_dict(record["facts"]), ModelFacts.from_dict(model["facts"])
    check_transfer(
        f"study {name!r} was run",
        (record["source"], ours),
        (model["source"], theirs),
        allow_transfer=allow_transfer,
        same_source=record["source"] == model["source"],
        opt_in="pass --allow-transfer to resume it anyway",
    )


def collect_sweep(storage: str | BaseStorage, study_name: str, spec: SweepSpec) -> SweepResult:
    """The finished measurements of sweep ``study_name`` restricted to ``spec``'s lengths, heads,
    tails and attention factors (any mapping length measured is kept)."""
    storage = open_storage(storage)
    settings = set(itertools.product(spec.heads, spec.tails, spec.attention_factors))
    measurements = [
        m
        for m in finished_measurements(storage, study_name).values()
        if m.point.length in spec.lengths
        and (
            m.point.mapping is None
            or (m.point.method == spec.method != LAMPE)  # another method's knob values
            or (
                m.point.method == LAMPE and (m.point.head, m.point.tail, m.point.attention_factor) in settings
            )
        )
    ]
    measurements.sort(key=lambda m: m.point.sort_key())
    return SweepResult(spec, tuple(measurements), _missing(storage, study_name, spec, measurements))


def _missing(
    storage: BaseStorage, base: str, spec: SweepSpec, measurements: list[Measurement]
) -> tuple[MissingPoint, ...]:
    """Vanilla and grid points of ``spec`` with no measurement of their evaluation, each with the
    error of its last failed trial."""
    expected = [(f"{base}:vanilla", SweepPoint(length, None)) for length in spec.lengths]
    if spec.search == "grid":
        expected += [(base, point) for point in spec.grid_points()]
    measured = {m.point.key() for m in measurements}
    names = set(related_studies(storage, base))
    reasons: dict[tuple[str, SweepPoint], str] = {}
    for name in {name for name, _ in expected} & names:
        study_id = storage.get_study_id_from_name(name)
        for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.FAIL,)):
            if (point := trial_point(trial)) is not None:
                reasons[(name, point)] = trial.user_attrs.get("error", "its worker stopped (no heartbeat)")
    return tuple(
        MissingPoint(point, reasons.get((name, point), "not run yet"))
        for name, point in expected
        if point.key() not in measured
    )
