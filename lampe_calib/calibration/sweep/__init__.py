"""The calibration sweep: trials over (L, m) in Optuna studies (docs/design.md §3.2).

The vanilla study (the stock model at every length), then the grid study or one GP study per
length (``_store`` describes the layout). Any number of workers (``lampe-calibrate``
processes, one per GPU or machine) may run one sweep on one storage; the work is shared through
Optuna's own trial queue and heartbeat:

- a run enqueues every vanilla and grid point that has no complete, running or waiting trial
  (most expensive first, so that the workers finish together), then each worker pops waiting
  trials in ``study.optimize`` until none is left;
- a worker that dies stops its trial's heartbeat: once that is older than the grace period,
  ``fail_stale_trials`` fails the trial and ``RetryHeartbeatStaleTrialCallback`` enqueues it
  again; a worker with nothing left waits while others run trials, so such a retry runs
  before the end;
- progress comes from ``optimize``'s callbacks, and from the storage while waiting.

Guarantees from Optuna: a waiting trial is popped by one worker only, and a stale trial failed
and re-queued by one worker only (``SELECT ... FOR UPDATE`` on PostgreSQL); a trial's state and
values are written atomically; the retry keeps the trial's parameters (at most 3 retries, then a
re-run enqueues the point again); ``optimize`` runs each trial's heartbeat thread.

Guarantees from us: each point is enqueued once (under ``sweep_lock``: Optuna warns that
``enqueue_trial(skip_if_exists=True)`` may duplicate under concurrent callers, and it would skip
a failed point that a re-run must retry); on SQLite, which ignores ``FOR UPDATE``, each change
of a trial's state (the pop, failing a stale trial) holds a file lock; a trial records a
heartbeat, then its worker (user attribute ``worker``), as its objective starts, and one seen
running with neither that nor parameters for a grace period (its worker died between Optuna's
pop and the heartbeat thread's first beat, which ``fail_stale_trials`` never sees) is failed and
re-queued the same way (``Reaper``; a retry carries its dead trial's attributes, so it is not
covered). Before evaluating, a trial looks for a finished evaluation of the same thing anywhere
in the sweep and copies it (m >= L is the stock model; re-running a command or changing the grid
never evaluates a point twice), or waits while another worker runs the point that evaluates it
(the vanilla point of its length, the first grid point of its key). Not guaranteed: a GP budget
is checked before each trial, so workers racing on one GP study may run a trial or two more; a
trial that would copy a point waiting to be retried (its worker died) evaluates it itself, and
may race that retry.

A trial whose evaluation fails (a non-finite loss, out of memory) is marked failed with the
reason in its user attribute ``error``; the sweep goes on without it, and ``collect_sweep``
reports the point as missing. Running the command again tries it again.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

# Module -> the public names it defines.
_MODULES = {
    "._run": "SweepProgress TrialFailure run_sweep",
    "._spec": "SEARCHES SweepPoint SweepSpec default_lengths default_mappings",
    "._store": "MissingPoint SweepResult collect_sweep open_storage study_names",
    "._db": "check_storage_url",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
