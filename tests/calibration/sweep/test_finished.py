"""When a worker takes a sweep for finished: from one read of each study, so that a reaped
trial's retry is waited for whether it is waiting, running or not yet enqueued, for longer than
a short heartbeat's grace period (the reaping worker enqueues it a few database calls after the
fail, which a loaded machine can stretch past the grace period)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from lampe_calib.calibration.sweep import SweepPoint, open_storage
from lampe_calib.calibration.sweep._db import ERROR, RETRY_WAIT, Reaper
from lampe_calib.calibration.sweep._run import _Runner
from lampe_calib.calibration.sweep._stages import Stage

REAPED = "its worker host:1 on this machine is gone"
POINT = {"fixed_params": SweepPoint(512, None).params()}


def _runner(
    *retry_states: TrialState, wait: float = 60.0, stopped: bool = False, rerun: bool = False
) -> _Runner:
    study = optuna.create_study(study_name="reference-vanilla")
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={ERROR: REAPED}, system_attrs=POINT))
    for state in retry_states:  # the dead trial's retry, at the state a worker reads it in
        values = {"value": 1.0} if state == TrialState.COMPLETE else {}
        history = {"failed_trial": 0, "retry_history": [0], **POINT}
        study.add_trial(create_trial(state=state, system_attrs=history, **values))
    if rerun:  # the point measured again by a later run's own trial (not a retry)
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=1.0, system_attrs=POINT))
    runner = object.__new__(_Runner)  # (only what ``unfinished`` reads)
    runner.stages = [Stage(study, point_of=None, points=None if stopped else [])]
    runner.stopped = {study.study_name} if stopped else set()
    runner.reaped = {}
    runner.reaper = object.__new__(Reaper)
    runner.reaper.retry_wait = wait
    return runner


def test_a_reaped_trial_is_unfinished_until_its_retry_completes():
    assert _runner().unfinished()  # failed, its retry not yet enqueued (within the grace period)
    assert _runner(TrialState.WAITING).unfinished()  # enqueued: a worker that read no waiting trial
    assert _runner(TrialState.RUNNING).unfinished()  # ... before it was, and no running one after
    assert not _runner(TrialState.COMPLETE).unfinished()
    assert not _runner(wait=0.0).unfinished()  # no retry after the wait: reported missing
    assert not _runner(rerun=True).unfinished()  # no retry, but the point was measured again


def test_the_retry_is_waited_for_longer_than_a_short_grace_period(tmp_path):
    reaper = Reaper(open_storage(f"sqlite:///{tmp_path / 'sweep.db'}", heartbeat_interval=2))
    assert reaper.grace == 4 and reaper.retry_wait == RETRY_WAIT >= 60
    slow = Reaper(open_storage(f"sqlite:///{tmp_path / 'sweep.db'}", heartbeat_interval=60))
    assert slow.retry_wait == slow.grace == 120
    off = Reaper(open_storage(f"sqlite:///{tmp_path / 'sweep.db'}", heartbeat_interval=None))
    assert off.retry_wait is None


def test_a_gp_study_stopped_here_does_not_wait_for_its_waiting_trials():
    assert not _runner(TrialState.COMPLETE, TrialState.WAITING, stopped=True).unfinished()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_reaped_point_enqueued_again_by_a_run_gets_no_second_retry(tmp_path):
    """A worker that plans between a dead trial's fail and its retry enqueues the point (it has
    no live trial then); the retry then sees that trial and is not added, so the point runs once.
    Without such a run, the retry is added."""
    storage = open_storage(f"sqlite:///{tmp_path / 'sweep.db'}", heartbeat_interval=2)
    study = optuna.create_study(study_name="reference:vanilla", storage=storage)
    retry = storage.get_heartbeat_stale_trial_callback()
    for length, planned_between in ((512, True), (1024, False)):
        point = SweepPoint(length, None).params()
        study.enqueue_trial(point)
        dead = study.ask()  # popped by a worker that then died
        storage.set_trial_state_values(dead._trial_id, TrialState.FAIL)
        if planned_between:
            study.enqueue_trial(point)  # a run's plan, between the fail and the retry
        retry(study, storage.get_trial(dead._trial_id))
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        assert len(waiting) == 1, [t.number for t in waiting]
        assert (waiting[0].system_attrs.get("failed_trial") == dead.number) is not planned_between
        study.tell(study.ask(), 1.0)  # the point runs, once
