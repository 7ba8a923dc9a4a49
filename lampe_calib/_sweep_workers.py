"""Several workers on one sweep: a lock over the sweep, who evaluates what, and dead workers.

Any number of ``lampe-calibrate`` processes (one per GPU or machine) may run the same sweep on
one storage. Each claim (which point a new trial takes, whether a trial evaluates or copies) is
decided while holding ``SweepLock``, a mutex shared through the storage itself:

- PostgreSQL: a transaction-level advisory lock (``pg_advisory_xact_lock``) on a key derived
  from the sweep's name; the server drops it when the holder's connection ends, so a worker
  killed while holding it blocks nobody;
- SQLite file: ``flock`` on the database's directory (an advisory lock the kernel drops with
  the process; SQLite's own locks on the file are not touched);
- anything else (an in-memory storage, another database): a lock inside this process only,
  so workers in other processes are not coordinated (a warning says so).

Grid points are enqueued and popped one at a time under the lock, so each is taken by exactly
one trial, and a trial evaluates only when no finished or running trial of the sweep evaluates
the same thing. A trial records its worker (``Worker``) in the system attribute ``lampe:claim``
before the lock is let go: a worker whose process is gone from this machine is detected by the
next worker here that looks (``Worker.gone``), one on another machine through Optuna's heartbeat
(``fail_stale``); either way its trial is failed and re-queued by the storage's stale-trial
callback (``RetryStaleTrial``). A running trial seen without a claim under the lock lost its
worker before it could claim; it is failed, and its point is free again.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "CLAIM",
    "ERROR",
    "RetryStaleTrial",
    "SweepLock",
    "Worker",
    "claim_of",
    "creation_lock",
    "fail_stale",
    "fail_trial",
    "stale_trial_callback",
    "worker_gone",
]

logger = logging.getLogger(__name__)

CLAIM = "lampe:claim"  # system attribute: {"number", "worker", "evaluates"} of the trial holding it
ERROR = "error"  # user attribute: why a trial failed, in words


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), None if it is gone or a zombie.

    Example: ``_start_time(os.getpid())`` -> ``81231977``.
    """
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # Fields after the command name (which may hold spaces), from field 3 (state) on.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass(frozen=True)
class Worker:
    """The process running a trial.

    ``kernel`` names the kernel boot and PID namespace the process ran in (None where they
    cannot be read): inside the same one, a pid that no longer exists, or that now belongs to a
    process started at another time, means the worker is gone.
    """

    host: str
    pid: int
    kernel: str | None
    started: int | None

    @classmethod
    def this(cls) -> Worker:
        boot, namespace = _read("/proc/sys/kernel/random/boot_id"), None
        try:
            namespace = os.readlink("/proc/self/ns/pid")
        except OSError:
            pass
        pid = os.getpid()
        kernel = f"{boot}/{namespace}" if boot and namespace else None
        return cls(socket.gethostname(), pid, kernel, _start_time(pid) if kernel else None)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "kernel": self.kernel, "started": self.started}

    @classmethod
    def from_dict(cls, data: Any) -> Worker | None:
        try:
            return cls(str(data["host"]), int(data["pid"]), data["kernel"], data["started"])
        except (KeyError, TypeError, ValueError):
            return None

    def gone(self, here: Worker) -> bool:
        """True when this worker ran where ``here`` runs and its process no longer exists."""
        if self.kernel is None or self.kernel != here.kernel or self.started is None:
            return False
        return _start_time(self.pid) != self.started

    def describe(self) -> str:
        return f"{self.host}:{self.pid}"


class RetryStaleTrial:
    """Stale-trial callback: re-queue a dead worker's trial (``RetryHeartbeatStaleTrialCallback``)
    with its parameters only: results it had half written and its claim are not carried over."""

    def __init__(self, max_retry: int | None = None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        clean = copy.deepcopy(trial)
        clean.user_attrs = {}
        clean.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != CLAIM}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry(study, clean)


def stale_trial_callback(storage: BaseStorage) -> Any:
    """The stale-trial callback ``storage`` was opened with, if any (only ``RDBStorage`` has one)."""
    getter = getattr(storage, "get_heartbeat_stale_trial_callback", None)
    return getter() if getter is not None else None


def claim_of(trial: FrozenTrial) -> dict[str, Any] | None:
    """The trial's own claim (a re-queued copy of another trial's claim does not count)."""
    claim = trial.system_attrs.get(CLAIM)
    if isinstance(claim, dict) and claim.get("number") == trial.number:
        return claim
    return None


def worker_gone(trial: FrozenTrial, here: Worker) -> bool:
    """True when the running ``trial``'s worker ran on this machine and its process is gone."""
    claim = claim_of(trial)
    worker = Worker.from_dict(claim["worker"]) if claim else None
    return worker is not None and worker.gone(here)


def fail_trial(study: optuna.Study, storage: BaseStorage, trial: FrozenTrial, retry: bool = True) -> bool:
    """Fail the running ``trial`` of a dead worker and (``retry``) hand it to the storage's
    stale-trial callback, which re-queues it, as ``fail_stale_trials`` does. False if it
    finished meanwhile."""
    claim = claim_of(trial)
    worker = Worker.from_dict(claim["worker"]) if claim else None
    reason = f"its worker {worker.describe()} died" if worker else "its worker stopped before claiming it"
    try:
        storage.set_trial_user_attr(trial._trial_id, ERROR, reason)
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    logger.warning("%s: trial %d failed: %s", study.study_name, trial.number, reason)
    callback = stale_trial_callback(storage)
    if retry and callback is not None:
        callback(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
    return True


def fail_stale(study: optuna.Study, storage: BaseStorage) -> bool:
    """Optuna's ``fail_stale_trials``: fail (and re-queue) the running trials whose heartbeat is
    older than the grace period. True if any was failed."""
    running = [t._trial_id for t in storage.get_all_trials(study._study_id, states=(TrialState.RUNNING,))]
    if not running:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    # Failed by the heartbeat check: failed now, and not by an error of their own (that sets ERROR).
    after = [storage.get_trial(i) for i in running]
    silent = [t.number for t in after if t.state == TrialState.FAIL and ERROR not in t.user_attrs]
    if silent:
        logger.warning("%s: trials %s sent no heartbeat in time; re-queued", study.study_name, silent)
    return bool(silent)


@contextmanager
def creation_lock(url: Any, connect_timeout: int) -> Iterator[None]:
    """Held while a storage is opened the first time (Optuna creates its tables then), so that
    workers started together do not race on ``CREATE TABLE``: a PostgreSQL session advisory lock,
    or ``flock`` on an SQLite file's directory (nothing for other databases)."""
    if url.get_backend_name() == "postgresql":
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": connect_timeout}
        )
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _lock_key("")})
            yield  # the lock ends with the session
        engine.dispose()
        return
    directory = None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        directory = os.path.dirname(os.path.abspath(url.database))
    try:
        import fcntl
    except ImportError:
        directory = None
    if directory is None or not os.path.isdir(directory):
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _lock_key(name: str) -> int:
    """A signed 64-bit key for ``pg_advisory_xact_lock`` from the sweep's name.

    Example: ``_lock_key("reference")`` -> a fixed integer in [-2**63, 2**63).
    """
    digest = hashlib.blake2b(f"lampe-calib sweep {name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class SweepLock:
    """A mutex shared by every worker of the sweep ``name`` in ``storage`` (module docstring).

    ``acquire`` blocks until the lock is free; ``release`` is idempotent, so a holder may hand
    the lock back early (after recording a claim) and release again on the way out.
    """

    def __init__(self, storage: BaseStorage, name: str):
        self._name = name
        self._local = threading.Lock()
        self._kind, self._engine, self._directory = "local", None, None
        self._connection: Any = None
        self._fd: int | None = None
        self.held = False
        dialect = storage.engine.dialect.name if isinstance(storage, RDBStorage) else None
        if dialect == "postgresql":
            self._kind, self._engine = "postgresql", storage.engine
        elif dialect == "sqlite" and storage.engine.url.database not in (None, "", ":memory:"):
            try:
                import fcntl  # noqa: F401  (POSIX only)

                self._kind = "file"
                self._directory = str(Path(storage.engine.url.database).resolve().parent)
            except ImportError:
                logger.warning("no flock on this system: workers in other processes are not coordinated")
        elif dialect is not None and dialect != "sqlite":
            logger.warning(
                "storage %s: workers in other processes are not coordinated (use PostgreSQL)", dialect
            )

    def acquire(self) -> None:
        assert not self.held, "SweepLock is not reentrant"
        self._local.acquire()
        try:
            if self._kind == "postgresql":
                import sqlalchemy

                self._connection = self._engine.connect()
                self._connection.execute(
                    sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(self._name)}
                )
            elif self._kind == "file":
                import fcntl

                self._fd = os.open(self._directory, os.O_RDONLY)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._close()
            self._local.release()
            raise
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self._close()
        self._local.release()

    def _close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.rollback()  # ends the transaction, and with it the advisory lock
            finally:
                connection.close()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # drops the flock

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
