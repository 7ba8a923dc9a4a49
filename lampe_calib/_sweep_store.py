"""Where a sweep lives: Optuna storages, the sweep's studies, and the measurements in their trials.

Studies of a sweep named ``NAME`` (by default the model's alias), all in one storage:

- ``NAME:vanilla``: the stock model at every length (GridSampler over L), the reference of
  every V-curve and the "vanilla" column of the closing table;
- ``NAME``: ``--search grid``, GridSampler over L × m × head × tail × attention_factor;
- ``NAME:gp:L<L>``: ``--search gp``, one study per length (Optuna's GPSampler over m): a GP
  models one objective surface, and the V of each length is its own surface.

Each trial's user attributes hold its point (``point``), the per-book NLL sums (``nll``) and
token counts (``tokens``), the book rows, skipped books and seconds; a trial that copied an
equal, finished evaluation also holds ``reused_from`` ("study#trial"). Each study holds the
sweep's ``signature`` (model, data, samples, seed, dtype, mode, book rows): results are only
comparable under one signature, so a resumed study with another is refused.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from ._perplexity import PerplexityResult
from ._sweep_spec import SweepPoint, SweepSpec

__all__ = [
    "Measurement",
    "SweepResult",
    "collect_sweep",
    "finished_measurements",
    "open_storage",
    "open_study",
    "study_names",
]

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
        attrs = trial.user_attrs
        return cls(
            point=SweepPoint.from_dict(attrs["point"]),
            result=PerplexityResult(tuple(attrs["nll"]), tuple(attrs["tokens"])),
            rows=tuple(attrs["rows"]),
            skipped=int(attrs["skipped"]),
            seconds=float(attrs["seconds"]),
            study=study,
            trial=trial.number,
        )


@dataclass(frozen=True)
class SweepResult:
    """All measurements of a sweep (deduplicated by evaluation), for ``spec``'s lengths."""

    spec: SweepSpec
    measurements: tuple[Measurement, ...] = field(repr=False)

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


def _related_studies(storage: BaseStorage, base: str) -> list[str]:
    return [
        s.study_name
        for s in storage.get_all_studies()
        if s.study_name == base or s.study_name.startswith(base + ":")
    ]


def finished_measurements(storage: BaseStorage, base: str) -> dict[tuple[Any, ...], Measurement]:
    """Every completed evaluation of the sweep's studies, by ``SweepPoint.key()`` (first wins)."""
    found: dict[tuple[Any, ...], Measurement] = {}
    for name in sorted(_related_studies(storage, base)):
        study_id = storage.get_study_id_from_name(name)
        for trial in storage.get_all_trials(study_id, deepcopy=False, states=COMPLETE):
            if "point" in trial.user_attrs and "reused_from" not in trial.user_attrs:
                measurement = Measurement.from_trial(name, trial)
                found.setdefault(measurement.point.key(), measurement)
    return found


def open_study(
    storage: BaseStorage, name: str, sampler: optuna.samplers.BaseSampler, signature: dict
) -> optuna.Study:
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, direction="minimize", load_if_exists=True
    )
    stored = study.user_attrs.get("signature")
    if stored is None:
        study.set_user_attr("signature", signature)
    elif stored != signature:
        changed = sorted(k for k in set(stored) | set(signature) if stored.get(k) != signature.get(k))
        raise ValueError(
            f"study {name!r} in this storage was run with other settings ({', '.join(changed)} differ: "
            f"stored {[stored.get(k) for k in changed]}, now {[signature.get(k) for k in changed]}); "
            "pass another --study name or --storage, or the original settings"
        )
    return study


def collect_sweep(storage: str | BaseStorage, study_name: str, spec: SweepSpec) -> SweepResult:
    """The finished measurements of sweep ``study_name`` restricted to ``spec``'s lengths, heads,
    tails and attention factors (any mapping length measured is kept)."""
    storage = open_storage(storage)
    measurements = [
        m
        for m in finished_measurements(storage, study_name).values()
        if m.point.length in spec.lengths
        and (
            m.point.mapping is None
            or (
                m.point.head in spec.heads
                and m.point.tail in spec.tails
                and m.point.attention_factor in spec.attention_factors
            )
        )
    ]
    measurements.sort(key=lambda m: m.point.sort_key())
    return SweepResult(spec, tuple(measurements))


def open_storage(storage: str | BaseStorage, heartbeat_interval: int | None = 60) -> BaseStorage:
    """An Optuna storage from a database URL (``sqlite:///path.db``, ``postgresql://…``).

    URL storages get a heartbeat (``heartbeat_interval`` seconds, None: off): a worker killed
    mid-trial leaves a trial that a later run marks failed and re-enqueues with the same
    parameters (``RetryFailedTrialCallback``). A storage object is returned as is.

    Raises:
        ValueError: not a URL, or the database cannot be opened.
        ImportError: the URL's database driver is missing (PostgreSQL: the ``postgres`` extra).
    """
    if isinstance(storage, BaseStorage):
        return storage
    if not isinstance(storage, str) or "://" not in storage:
        raise ValueError(f"--storage must be a database URL such as sqlite:///sweep.db, got {storage!r}")
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        shown = make_url(storage).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError as error:
        raise ValueError(f"--storage {storage!r} is not a database URL: {error}") from error
    # SQLite: wait for a writer (the heartbeat thread, another worker) instead of failing at once.
    engine_kwargs = {"connect_args": {"timeout": 60}} if shown.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = {}
            if heartbeat_interval:
                # Optuna >= 4.9 names the stale-trial hook; older versions only the failed-trial one.
                if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
                    retry = {
                        "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(3)
                    }
                else:
                    retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(3)}
            return optuna.storages.RDBStorage(
                storage, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, **retry
            )
    except ModuleNotFoundError as error:
        hint = " (pip install 'lampe-calib[postgres]')" if shown.startswith("postgres") else ""
        raise ImportError(f"--storage {shown}: database driver missing: {error.name}{hint}") from error
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as error:
        raise ValueError(f"--storage {shown}: cannot open: {' '.join(str(error).split())[:200]}") from error
