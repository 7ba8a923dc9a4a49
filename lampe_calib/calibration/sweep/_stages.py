"""The studies of a sweep (``Stage``: the vanilla queue, the grid queue, a GP study per length),
opened or created with their samplers, and what ``optimize`` is given to stop with."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from .._space import SweepPoint, SweepSpec, initial_mappings
from ._optuna_compat import trial_params
from ._store import open_study

__all__ = ["LIVE", "RUNNING", "Stage", "enqueue_initial_design", "open_stages", "stop_unless"]

logger = logging.getLogger(__name__)

LIVE, RUNNING = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING), (TrialState.RUNNING,)


@dataclass
class Stage:
    """One study of a sweep: a queue of ``points`` (vanilla, grid) or the GP study of ``length``."""

    study: optuna.Study
    point_of: Callable[[optuna.Trial], SweepPoint]
    points: list[SweepPoint] | None = None
    length: int | None = None

    @property
    def name(self) -> str:
        return self.study.study_name

    def trials(self, states: tuple[TrialState, ...]) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)


def stop_unless(more: Callable[[], bool], report: Callable[[], None]) -> Callable[..., None]:
    """An ``optimize`` callback: report progress, and stop the study when ``more()`` is False."""

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        report()
        if not more():
            study.stop()

    return after_trial


def _gp_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # deterministic_objective
        return optuna.samplers.GPSampler(
            seed=spec.seed, n_startup_trials=spec.initial_points, deterministic_objective=True
        )


def open_stages(
    storage: BaseStorage,
    spec: SweepSpec,
    study_name: str,
    signature: dict[str, Any],
    model_record: dict[str, Any] | None,
    allow_transfer: bool,
) -> list[Stage]:
    """The sweep's studies (``open_study``, under ``sweep_lock``): the vanilla queue, then the
    grid queue or a GP study per length whose range holds a remap."""
    queue = optuna.samplers.RandomSampler(seed=spec.seed)  # never asked: every parameter is enqueued
    stages = [(":vanilla", queue, spec.vanilla_point, [SweepPoint(n, None) for n in spec.lengths], None)]
    if spec.search == "grid":
        stages.append(("", queue, spec.grid_point, spec.grid_points(), None))
    for length in spec.lengths if spec.search == "gp" else ():
        lo, hi = spec.gp_range(length)
        if hi <= lo:
            logger.info("length %d: every mapping length is >= L (no remap); nothing to search", length)
            continue
        stages.append((f":gp:L{length}", _gp_sampler(spec), spec.gp_point(length), None, length))
    return [
        Stage(
            open_study(storage, study_name + suffix, sampler, signature, model_record, allow_transfer),
            point_of,
            points,
            length,
        )
        for suffix, sampler, point_of, points, length in stages
    ]


def enqueue_initial_design(stage: Stage, spec: SweepSpec) -> None:
    """A GP study starts from log-spaced points: enqueue those without a trial, as long as the
    GP has proposed nothing (a run killed while enqueuing them gets the rest next time)."""
    assert stage.length is not None
    initial = initial_mappings(
        *spec.gp_range(stage.length), spec.initial_points, spec.start_for(stage.length)
    )
    tried = [trial_params(t).get("mapping") for t in stage.trials(tuple(TrialState))]
    if all(m in initial for m in tried if m is not None):
        for m in initial:
            stage.study.enqueue_trial({"mapping": m}, skip_if_exists=True)
