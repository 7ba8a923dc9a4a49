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

import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from ._perplexity import PerplexityResult
from ._sweep_spec import SweepPoint, SweepSpec
from ._sweep_workers import RetryStaleTrial, creation_lock

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
    return [
        s.study_name
        for s in storage.get_all_studies()
        if s.study_name == base or s.study_name.startswith(base + ":")
    ]


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
            params = trial.system_attrs.get("fixed_params") or trial.params
            try:
                point = SweepPoint.from_params(params)
            except (KeyError, TypeError, ValueError):
                continue
            reasons[(name, point)] = trial.user_attrs.get("error", "its worker stopped (no heartbeat)")
    return tuple(
        MissingPoint(point, reasons.get((name, point), "not run yet"))
        for name, point in expected
        if point.key() not in measured
    )


def _driver_url(url: Any) -> Any:
    """SQLAlchemy's plain ``postgresql://`` means psycopg2; this package's ``postgres`` extra
    installs psycopg 3, so a URL without a driver gets ``postgresql+psycopg``.

    Example: ``postgres://u@db/sweeps`` -> ``postgresql+psycopg://u@db/sweeps``.
    """
    if url.drivername in ("postgres", "postgresql"):
        return url.set(drivername="postgresql+psycopg")
    return url


_CONNECT_TIMEOUT = 15  # seconds: an unreachable PostgreSQL server fails instead of hanging


def check_storage_url(storage: str) -> None:
    """Check a ``--storage`` URL without opening it: its syntax, its driver, and for an SQLite
    file that its directory exists.

    Raises:
        ValueError: not a database URL, or an SQLite file in a directory that does not exist.
        ImportError: PostgreSQL without psycopg (the ``postgres`` extra).
    """
    if not isinstance(storage, str) or "://" not in storage:
        raise ValueError(f"--storage must be a database URL such as sqlite:///sweep.db, got {storage!r}")
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        url = _driver_url(make_url(storage))
    except sqlalchemy.exc.ArgumentError as error:
        raise ValueError(f"--storage {storage!r} is not a database URL: {error}") from error
    shown = url.render_as_string(hide_password=True)
    backend = url.get_backend_name()
    if (
        backend == "postgresql"
        and url.get_driver_name() == "psycopg"
        and importlib.util.find_spec("psycopg") is None
    ):
        raise ImportError(f"--storage {shown}: PostgreSQL needs psycopg: pip install 'lampe-calib[postgres]'")
    if backend == "sqlite" and url.database not in (None, "", ":memory:"):
        directory = os.path.dirname(os.path.abspath(url.database))
        if not os.path.isdir(directory):
            raise ValueError(f"--storage {shown}: directory {directory!r} does not exist")
    elif backend not in ("sqlite", "postgresql", "mysql"):
        raise ValueError(
            f"--storage {shown}: cannot open: unsupported database {backend!r}; "
            "use sqlite:///PATH or postgresql://USER@HOST/DB"
        )


def open_storage(
    storage: str | BaseStorage, heartbeat_interval: int | None = 60, grace_period: int | None = None
) -> BaseStorage:
    """An Optuna storage from a database URL (``sqlite:///path.db``, ``postgresql://user@host/db``).

    URL storages get a heartbeat (``heartbeat_interval`` seconds, None: off): a trial whose
    worker sent none for ``grace_period`` seconds (default: twice the interval) is failed by the
    next worker that looks, and re-queued with the same parameters (``RetryStaleTrial``). A
    storage object is returned as is. ``postgresql://`` uses psycopg 3 (the ``postgres`` extra).

    Raises:
        ValueError: not a URL, the database cannot be opened, or a bad interval.
        ImportError: the URL's database driver is missing (PostgreSQL: the ``postgres`` extra).
    """
    if isinstance(storage, BaseStorage):
        return storage
    check_storage_url(storage)
    for name, value in (("--heartbeat", heartbeat_interval), ("grace_period", grace_period)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a whole number of seconds >= 1, got {value!r}")
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    url = _driver_url(make_url(storage))
    shown = url.render_as_string(hide_password=True)
    postgres = url.get_backend_name() == "postgresql"
    # SQLite: wait for a writer (the heartbeat thread, another worker) instead of failing at once.
    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if shown.startswith("sqlite") else {}
    if postgres:
        # pre-ping: a server restart between two trials is survived.
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": _CONNECT_TIMEOUT}}
    try:
        # Workers started together would race on CREATE TABLE: one creates Optuna's tables.
        with creation_lock(url, _CONNECT_TIMEOUT), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = {}
            if heartbeat_interval:
                retry = {"heartbeat_stale_trial_callback": RetryStaleTrial(max_retry=3)}
            return optuna.storages.RDBStorage(
                url.render_as_string(hide_password=False),
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                **retry,
            )
    except ModuleNotFoundError as error:
        hint = " (pip install 'lampe-calib[postgres]')" if postgres else ""
        raise ImportError(f"--storage {shown}: database driver missing: {error.name}{hint}") from error
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as error:
        raise ValueError(f"--storage {shown}: cannot open: {' '.join(str(error).split())[:200]}") from error
