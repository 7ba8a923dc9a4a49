"""A sweep is not finished while a reaped trial's retry is still being queued (the gap between
Optuna's ``fail_stale_trials`` failing a trial and its callback queueing the retry)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from lampe_calib.calibration.sweep._db import ERROR, REQUEUED, retry_pending


def _failed(study: optuna.Study, **attrs: object) -> int:
    trial = study.ask()
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.FAIL)
    return trial.number


def test_retry_pending_names_reaped_trials_without_their_retry():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    stale = _failed(study)  # failed by Optuna's heartbeat check: no error recorded
    reaped = _failed(study, **{ERROR: "its worker stopped before its first heartbeat", REQUEUED: True})
    broken = _failed(study, **{ERROR: "non-finite loss"})  # an evaluation failure: never retried
    assert retry_pending(study.get_trials(deepcopy=False)) == {stale, reaped}

    callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
    callback(study, study.trials[stale])  # the retry of the stale one is queued
    assert retry_pending(study.get_trials(deepcopy=False)) == {reaped}
    callback(study, study.trials[reaped])
    assert retry_pending(study.get_trials(deepcopy=False)) == set()
    assert study.trials[broken].state == TrialState.FAIL
