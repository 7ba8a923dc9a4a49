"""The one module that reads Optuna's undocumented names; the sweep calls its functions.

- ``trial_id``: the storage's id of a trial (``Trial._trial_id``, ``FrozenTrial._trial_id``),
  which the storage's own methods take (``record_heartbeat``, ``set_trial_state_values``).
- ``enqueued_params``: the parameters a trial was enqueued with, before it suggests them (the
  system attribute ``fixed_params`` that ``Study.enqueue_trial`` writes).
- ``retry_history``: the failed trials a retry descends from, oldest first
  (``RetryFailedTrialCallback.retry_history``: documented, but experimental).

Checked by tests/calibration/sweep (every test that enqueues, retries or reaps a trial): a
change of these names in Optuna fails them.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage, RetryFailedTrialCallback
from optuna.trial import FrozenTrial

__all__ = ["enqueued_params", "retry_history", "trial_id", "trial_params"]


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of ``trial`` (not its number in the study)."""
    return trial._trial_id


def enqueued_params(
    trial: optuna.Trial | FrozenTrial, storage: BaseStorage | None = None
) -> dict[str, Any] | None:
    """The parameters ``trial`` was enqueued with (None: it was not enqueued). A running
    ``Trial`` is read from ``storage`` (its own copy of the attributes may be older)."""
    if isinstance(trial, FrozenTrial):
        return trial.system_attrs.get("fixed_params")
    assert storage is not None, "a running trial's enqueued parameters are read from its storage"
    return storage.get_trial_system_attrs(trial_id(trial)).get("fixed_params")


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters ``trial`` was enqueued with, else those it suggested (empty: neither yet)."""
    return enqueued_params(trial) or trial.params


def retry_history(trial: FrozenTrial) -> list[int]:
    """The numbers of the failed trials ``trial`` retries, the first one first (empty: not a
    retry). Example: a retry of trial 7, itself a retry of trial 3 -> ``[3, 7]``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return list(RetryFailedTrialCallback.retry_history(trial))
