"""What one worker sees of a sweep while it holds the sweep's lock (``_sweep_workers``).

Every trial of the sweep's studies is read once: which points are taken, finished, evaluated
by a running trial, and which running trials hold a claim (or lost their worker before making
one). ``_sweep._Runner`` decides from it what to run next and what a trial does.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from ._sweep_spec import SweepPoint
from ._sweep_store import Measurement, related_studies
from ._sweep_workers import claim_of

__all__ = ["SweepView", "read_view", "trial_point"]


@dataclass
class SweepView:
    """The sweep's trials as one worker sees them under the lock.

    ``taken[study]`` holds the points of the study's waiting, running and complete trials,
    ``complete[study]`` those of its complete ones, ``holders`` the trial numbers holding each;
    ``finished`` maps an evaluation key to its measurement, ``inflight`` to the number of the
    running trial evaluating it; ``busy`` counts the claimed running trials of this run's studies
    (``running``), ``unclaimed`` holds the running trials that no worker claimed.
    """

    finished: dict[tuple[Any, ...], Measurement]
    taken: dict[str, set[SweepPoint]] = field(default_factory=dict)
    complete: dict[str, set[SweepPoint]] = field(default_factory=dict)
    completes: dict[str, int] = field(default_factory=dict)
    counted: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    inflight: dict[tuple[Any, ...], int] = field(default_factory=dict)
    holders: dict[tuple[str, SweepPoint], list[int]] = field(default_factory=dict)
    running: list[tuple[str, optuna.trial.FrozenTrial]] = field(default_factory=list)
    unclaimed: list[tuple[str, optuna.trial.FrozenTrial]] = field(default_factory=list)
    busy: int = 0


def trial_point(trial: optuna.trial.FrozenTrial) -> SweepPoint | None:
    """The point of a vanilla or grid trial: its parameters, or those it was enqueued with."""
    params = trial.system_attrs.get("fixed_params") or trial.params
    try:
        return SweepPoint.from_params(params) if params else None
    except (KeyError, TypeError, ValueError):
        return None  # killed half-way through suggesting its parameters


def read_view(storage: BaseStorage, base: str, grids: Collection[str], ours: Collection[str]) -> SweepView:
    """Every trial of sweep ``base`` in ``storage``, read once. ``grids``: the vanilla and grid
    studies (their trials' points are tracked), ``ours``: the studies of this run."""
    view = SweepView({})
    for name in sorted(related_studies(storage, base)):
        study_id = storage.get_study_id_from_name(name)
        taken, complete = view.taken.setdefault(name, set()), view.complete.setdefault(name, set())
        view.completes[name] = view.counted[name] = view.waiting[name] = 0
        grid = name in grids
        for trial in storage.get_all_trials(study_id, deepcopy=False):
            if trial.state.is_finished() and trial.state != TrialState.COMPLETE:
                continue
            claim = claim_of(trial) if trial.state == TrialState.RUNNING else None
            point = trial_point(trial) if grid else None
            if trial.state == TrialState.COMPLETE:
                view.completes[name] += 1
                attrs = trial.user_attrs
                if "point" in attrs and "reused_from" not in attrs:  # first wins, as in collect_sweep
                    measurement = Measurement.from_trial(name, trial)
                    view.finished.setdefault(measurement.point.key(), measurement)
            elif trial.state == TrialState.WAITING:
                view.waiting[name] += 1
            elif claim is None:
                # A trial is claimed before its worker lets go of the lock, so one seen
                # unclaimed under the lock lost its worker (or an older lampe-calib's).
                view.unclaimed.append((name, trial))
                continue
            else:
                view.running.append((name, trial))
                view.busy += name in ours
                if claim and claim.get("evaluates") is not None:
                    view.inflight[tuple(claim["evaluates"])] = trial.number
            view.counted[name] += 1
            if point is not None:
                taken.add(point)
                view.holders.setdefault((name, point), []).append(trial.number)
                if trial.state == TrialState.COMPLETE:
                    complete.add(point)
    return view
