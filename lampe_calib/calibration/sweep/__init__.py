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

Guarantees from us, each with the test that checks it (tests/calibration/sweep/):

- each point is enqueued once, under ``sweep_lock`` (Optuna warns that
  ``enqueue_trial(skip_if_exists=True)`` may duplicate under concurrent callers, and it would
  skip a failed point that a re-run must retry): ``test_workers.py::
  test_three_workers_in_threads_take_each_point_once``; a dead worker's trial is re-queued
  under the same lock, and only when its point has no live trial (a run that planned between
  the fail and the retry has enqueued it): ``test_finished.py::
  test_a_reaped_point_enqueued_again_by_a_run_gets_no_second_retry``;
- on SQLite, which ignores ``FOR UPDATE``, each change of a trial's state (the pop, failing a
  stale trial) holds a file lock (``_db._SQLiteStorage``): the same test, three workers on one
  SQLite file;
- a trial whose worker died on this machine is failed at once (after the current trial of a
  worker inside ``optimize``, before Optuna's next trial start would fail it by its heartbeat
  without a reason): ``test_workers.py::
  test_a_dead_local_workers_trial_is_failed_between_two_trials``; one seen running with
  neither a heartbeat-time ``worker`` attribute nor parameters for a grace period (its worker
  died between Optuna's pop and the first beat, which ``fail_stale_trials`` never sees) is
  failed and re-queued the same way (``Reaper``; a retry carries its dead trial's attributes,
  so it is not covered): ``test_workers.py::test_a_dead_workers_trial_is_rerun`` (both cases)
  and ``test_crash_safety.py::test_five_sigkills_then_resume_lose_and_repeat_nothing``;
- a retry names its immediate predecessor, not only the first failed trial
  (``_db.retried_from``): ``test_trial_failures.py::
  test_a_retry_names_its_immediate_predecessor_also_in_a_second_generation``;
- no point is evaluated twice: a trial copies a finished evaluation of the same thing anywhere
  in the sweep (m >= L is the stock model; re-running a command or changing the grid), or waits
  while another worker runs the point that evaluates it: ``test_sweep.py::
  test_no_remap_points_copy_the_vanilla_trial`` and
  ``test_resume_after_interrupt_runs_only_missing_trials``; several workers give the profile
  one worker gives: ``test_workers.py::test_three_postgres_workers_give_the_one_worker_profile``;
- a worker takes the sweep for finished only when one read of each study shows no trial waiting
  or running and no reaped trial without its retry (waited for up to a minute, or the grace
  period if longer: the reaping worker enqueues it a few database calls after the fail), so it
  never writes a profile while a dead worker's point is being re-run: ``test_finished.py`` and
  ``test_workers.py::test_three_postgres_workers_give_the_one_worker_profile``;
- a study resumes only with the same signature (data, books, dtype, mode, base) and model
  facts (``_store.open_study``): ``test_sweep.py::test_resume_with_other_settings_is_refused``;
- a failed evaluation fails its trial only (next paragraph): ``test_trial_failures.py``.

Optuna's undocumented names (a trial's storage id, the enqueued parameters, the retry
history) are read in ``_optuna_compat`` only.

Not guaranteed: a GP budget is checked before each trial, so workers racing on one GP study may
run a trial or two more; a trial that would copy a point waiting to be retried (its worker died)
evaluates it itself, and may race that retry.

A trial whose evaluation fails (a non-finite loss, out of memory) is marked failed with the
reason in its user attribute ``error``; the sweep goes on without it, and ``collect_sweep``
reports the point as missing. Running the command again tries it again.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

# Module -> the public names it defines.
_MODULES = {
    "._run": "SweepProgress TrialFailure run_sweep",
    ".._space": "SEARCHES SweepPoint SweepSpec default_lengths default_mappings",
    "._store": "MissingPoint SweepResult collect_sweep open_storage study_names",
    "._db": "check_storage_url",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
