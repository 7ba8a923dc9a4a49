"""The database under a sweep: Optuna storages from URLs, the locks workers share, dead workers.

Workers on one storage coordinate through Optuna (module docstring of ``_sweep``) and, where
Optuna leaves a gap, through a lock of the database's own kind: a PostgreSQL advisory lock (the
server drops it with the connection, so a killed worker blocks nobody) or ``flock`` on an SQLite
file's directory (the kernel drops it with the process). ``sweep_lock`` holds it while a run
creates Optuna's tables, opens its studies and enqueues their points; ``_SQLiteStorage`` holds
it around each change of a trial's state. ``Reaper`` fails the trials of dead workers.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ._optuna_compat import retry_history, trial_id, trial_params

__all__ = [
    "ERROR",
    "MACHINE",
    "RETRIES",
    "RETRY_WAIT",
    "WORKER",
    "Reaper",
    "check_storage_url",
    "open_storage",
    "retried_from",
    "sweep_lock",
    "this_machine",
]

logger = logging.getLogger(__name__)

ERROR, WORKER = "error", "worker"  # user attributes: why a trial failed; host:pid running it
RETRIES = 3  # a reaped trial is re-queued at most this many times (Optuna's retry callback)
# Seconds (at least; else the grace period) a worker waits for the retry of a trial that another
# worker failed as dead: that worker enqueues it a few database calls later, which on a loaded
# machine can take longer than a short heartbeat's grace period.
RETRY_WAIT = 60.0
MACHINE = "machine"  # user attribute: the boot and PID namespace its worker's pid belongs to


def this_machine() -> str:
    """Who can judge a pid of this worker: the host, its boot and its PID namespace (two
    containers with one host name do not share pids; a reboot reuses them). Linux reads the
    last two from /proc; elsewhere the host name alone.

    Example: ``"gpu-3/2f4c.../pid:[4026531836]"``.
    """
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(path) if path.endswith("/pid") else Path(path).read_text().strip())
        except OSError:
            pass
    return "/".join(parts)


def retried_from(trial: FrozenTrial) -> int | None:
    """The number of the failed trial that ``trial`` retries (None: not a retry).

    The immediate predecessor is the last of the retry's history (``retry_history``).
    Example: a retry of trial 7, itself a retry of trial 3 -> 7.
    """
    history = retry_history(trial)
    return history[-1] if history else None


def _alive(pid: int) -> bool:
    """True when process ``pid`` of this machine exists (it may be another process by then:
    a reused pid only delays the reaping to the heartbeat's grace period)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _driver_url(url: Any) -> Any:
    """SQLAlchemy's plain ``postgresql://`` means psycopg2; this package's ``postgres`` extra
    installs psycopg 3, so a URL without a driver gets ``postgresql+psycopg``.

    Example: ``postgres://u@db/sweeps`` -> ``postgresql+psycopg://u@db/sweeps``.
    """
    if url.drivername in ("postgres", "postgresql"):
        return url.set(drivername="postgresql+psycopg")
    return url


_CONNECT_TIMEOUT = 15  # seconds: an unreachable PostgreSQL server fails instead of hanging


def check_storage_url(storage: str) -> Any:
    """Check a ``--storage`` URL without opening it: its syntax, its driver, and for an SQLite
    file that its directory exists. Returns the parsed URL (SQLAlchemy's ``URL``).

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
    return url


def open_storage(
    storage: str | BaseStorage, heartbeat_interval: int | None = 60, grace_period: int | None = None
) -> BaseStorage:
    """An Optuna storage from a database URL (``sqlite:///path.db``, ``postgresql://user@host/db``).

    URL storages get a heartbeat (``heartbeat_interval`` seconds, None: off): a trial whose
    worker sent none for ``grace_period`` seconds (default: twice the interval) is failed by the
    next worker that looks (``fail_stale_trials``) and re-queued with its parameters (Optuna's
    ``RetryHeartbeatStaleTrialCallback``). An SQLite file gets ``_SQLiteStorage`` (a lock around
    the pop of a waiting trial). A storage object is returned as is. ``postgresql://`` uses
    psycopg 3 (the ``postgres`` extra).

    Raises:
        ValueError: not a URL, the database cannot be opened, or a bad interval.
        ImportError: the URL's database driver is missing (PostgreSQL: the ``postgres`` extra).
    """
    if isinstance(storage, BaseStorage):
        return storage
    url = check_storage_url(storage)
    for name, value in (("--heartbeat", heartbeat_interval), ("grace_period", grace_period)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a whole number of seconds >= 1, got {value!r}")
    import sqlalchemy.exc

    shown = url.render_as_string(hide_password=True)
    postgres = url.get_backend_name() == "postgresql"
    # SQLite: wait for a writer (the heartbeat thread, another worker) instead of failing at once.
    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if shown.startswith("sqlite") else {}
    if postgres:
        # pre-ping: a server restart between two trials is survived.
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": _CONNECT_TIMEOUT}}
    try:
        # Workers started together would race on CREATE TABLE: one creates Optuna's tables.
        with _url_lock(url), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = {}
            if heartbeat_interval:
                retry = {"heartbeat_stale_trial_callback": _RetryUnlessLive(url, RETRIES)}
            kind = _SQLiteStorage if _sqlite_directory(url) else RDBStorage
            return kind(
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


class _RetryUnlessLive(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a dead worker's trial, under ``_url_lock`` (the lock a run enqueues
    its points under) and only when the trial's point has no waiting, running or complete
    trial. The trial is failed first and re-queued after: a run that planned in between found
    its point without a live trial and enqueued it already, and a second copy would run it twice.
    """

    def __init__(self, url: Any, max_retry: int):
        super().__init__(max_retry=max_retry)
        self.url = url

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        params = trial_params(trial)
        with _url_lock(self.url):
            live = study.get_trials(
                deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
            )
            if params and any(trial_params(t) == params for t in live):
                logger.info("%s: trial %d not re-queued: its point is queued", study.study_name, trial.number)
                return
            super().__call__(study, trial)


def _sqlite_directory(url: Any) -> str | None:
    """The directory of an SQLite file URL (None: another database, or in memory)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return os.path.dirname(os.path.abspath(url.database))


@contextmanager
def _flock(directory: str) -> Iterator[None]:
    """``flock`` on a directory: an advisory lock that the kernel drops with the process (SQLite's
    own locks on the file are not touched, and no file is added next to it)."""
    import fcntl

    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


@contextmanager
def _url_lock(url: Any) -> Iterator[None]:
    """A lock shared by every worker on the database ``url``: a PostgreSQL session advisory lock
    (the server drops it with the connection), ``flock`` for an SQLite file, none otherwise."""
    if url.get_backend_name() == "postgresql":
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": _CONNECT_TIMEOUT}
        )
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(7105367314)"))  # one fixed key
            yield
        engine.dispose()
    elif (directory := _sqlite_directory(url)) is not None and os.path.isdir(directory):
        with _flock(directory):
            yield
    else:
        yield


def sweep_lock(storage: BaseStorage) -> Any:
    """``_url_lock`` of an ``RDBStorage``'s database: two workers starting together enqueue
    each point once."""
    return _url_lock(storage.engine.url) if isinstance(storage, RDBStorage) else nullcontext()


class _SQLiteStorage(RDBStorage):
    """``RDBStorage`` on an SQLite file whose trial state changes hold ``_flock``.

    Optuna pops a trial, and fails a stale one, by reading its state and writing the new one
    with ``SELECT ... FOR UPDATE``: atomic on PostgreSQL, but SQLite ignores ``FOR UPDATE``, so
    two workers could both pop one trial (Optuna's ``test_pop_waiting_trial_thread_safe`` skips
    SQLite for that reason) or both fail and re-queue one. Never called under ``sweep_lock``
    (the same ``flock``): a run enqueues there, and changes no state; the retry callback
    (``_RetryUnlessLive``) takes it after the state change, not inside it.
    """

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        directory = _sqlite_directory(self.engine.url)
        assert directory is not None
        with _flock(directory):
            return super().set_trial_state_values(trial_id, state, values)


class Reaper:
    """Fails the running trials of dead workers and re-queues them (the storage's stale-trial
    callback, ``RetryHeartbeatStaleTrialCallback`` from ``open_storage``).

    ``stale``: first ``dead_here`` (a trial whose worker ran on this machine and whose process
    is gone: failed at once), then Optuna's ``fail_stale_trials`` (a heartbeat older than the
    grace period: a worker elsewhere).
    ``unseen``: trials seen running with neither parameters nor a ``WORKER`` for a grace period
    of our own clock; their worker died between Optuna's pop and its heartbeat thread's first
    beat, which ``fail_stale_trials`` never sees (a live worker records a heartbeat and its
    ``WORKER`` within milliseconds of the pop). Neither does anything without a heartbeat.
    """

    def __init__(self, storage: BaseStorage):
        interval = getattr(storage, "heartbeat_interval", None)
        self.storage, self.seen = storage, {}
        self.grace = (getattr(storage, "grace_period", None) or 2 * interval) if interval else None
        self.retry_wait = None if self.grace is None else max(float(self.grace), RETRY_WAIT)

    def stale(self, study: optuna.Study) -> None:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if self.grace is not None and running:
            self.dead_here(study, running)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)

    def dead_here(self, study: optuna.Study, running: list[optuna.trial.FrozenTrial]) -> None:
        """Fail at once the running trials whose worker ran on this machine and is gone (killed,
        crashed): no need to wait for its heartbeat to go stale."""
        machine, numbers = this_machine(), None
        for trial in running:
            worker = str(trial.user_attrs.get(WORKER, ""))
            host, _, pid = worker.rpartition(":")
            if trial.user_attrs.get(MACHINE) != machine or not pid.isdigit() or int(pid) == os.getpid():
                continue
            if (previous := retried_from(trial)) is not None:
                # A retry starts with its dead predecessor's attributes, until the worker that
                # popped it writes its own: that worker is alive, the attributes are not its.
                if numbers is None:
                    numbers = {t.number: t for t in study.get_trials(deepcopy=False)}
                if numbers.get(previous) is not None and numbers[previous].user_attrs.get(WORKER) == worker:
                    continue
            if not _alive(int(pid)):
                self.fail(study, trial_id(trial), f"its worker {worker} on this machine is gone")

    def unseen(self, studies: list[optuna.Study]) -> None:
        now, seen, reason = time.monotonic(), {}, "its worker stopped before its first heartbeat"
        for study in studies if self.grace is not None else ():
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.params or WORKER in trial.user_attrs:
                    continue
                if now - seen.setdefault(trial_id(trial), self.seen.get(trial_id(trial), now)) > self.grace:
                    self.fail(study, trial_id(trial), reason)
        self.seen = seen

    def fail(self, study: optuna.Study, trial_id: int, reason: str) -> None:
        """Fail a running trial with ``reason`` and re-queue it, as ``fail_stale_trials`` does."""
        try:
            self.storage.set_trial_user_attr(trial_id, ERROR, reason)
            if not self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                return
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # finished meanwhile, or failed by another worker
        trial = copy.deepcopy(self.storage.get_trial(trial_id))
        logger.warning("%s: trial %d failed: %s", study.study_name, trial.number, reason)
        if (retry := self.storage.get_heartbeat_stale_trial_callback()) is not None:
            retry(study, trial)
