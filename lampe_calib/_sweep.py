"""Running a calibration sweep: trials over (L, m) in Optuna studies (DESIGN §3.2).

The vanilla study runs first (the stock model at every length), then the grid study or one
GP study per length (``_sweep_store`` describes the layout). Before evaluating, a trial looks
for a finished trial of the same evaluation anywhere in the sweep and copies it: re-running a
command, changing the grid, or m >= L (no remap: the stock model) never evaluates a point
twice. Trials run through ``Study.optimize``, so a storage with heartbeats detects a dead
worker and retries its trial; progress is reported from an Optuna callback, after the trial is
stored, so an interrupt there loses nothing.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from ._apply import apply_lampe
from ._data import Books, BooksAtLength
from ._perplexity import PerplexityResult, evaluate_perplexity
from ._sweep_spec import SweepPoint, SweepSpec, initial_mappings
from ._sweep_store import (
    COMPLETE,
    Measurement,
    SweepResult,
    collect_sweep,
    finished_measurements,
    open_storage,
    open_study,
)

__all__ = ["SweepProgress", "run_sweep"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepProgress:
    """What a progress callback sees after each trial of this run.

    ``cost`` counts tokens to evaluate (L × books per trial; 0 for a copied result), the unit
    in which an ETA is meaningful: one trial at 8K tokens costs 16 at 512.
    """

    done: int
    total: int
    cost_done: float
    cost_total: float
    last: Measurement | None
    stage: str


class _Runner:
    """Evaluates sweep points on one model and books, and reports progress."""

    def __init__(
        self,
        model: Any,
        books: Books,
        spec: SweepSpec,
        storage: BaseStorage,
        base: str,
        batch_tokens: int,
        chunk_size: int,
        progress: Callable[[SweepProgress], None] | None,
    ):
        self.model, self.books, self.spec, self.storage, self.base = model, books, spec, storage, base
        self.batch_tokens, self.chunk_size, self.progress = batch_tokens, chunk_size, progress
        self._at_length: dict[int, BooksAtLength] = {}
        self._last: Measurement | None = None
        self._last_cost = 0.0
        self.done = self.total = 0
        self.cost_done = self.cost_total = 0.0

    def at_length(self, length: int) -> BooksAtLength:
        if length not in self._at_length:
            self._at_length[length] = self.books.at_length(length)
        return self._at_length[length]

    def cost(self, point: SweepPoint, finished: dict) -> float:
        if point.key() in finished or (point.stock and point.mapping is not None):
            return 0.0  # copied from an existing trial (m >= L copies the vanilla trial)
        return float(point.length * len(self.at_length(point.length).tokens))

    def evaluate(self, point: SweepPoint) -> tuple[PerplexityResult, BooksAtLength, float]:
        books = self.at_length(point.length)
        config = point.config(self.spec.mode)
        context = None if config is None else (lambda: apply_lampe(self.model, config))
        started = time.perf_counter()
        result = evaluate_perplexity(
            self.model,
            books.tokens,
            context,
            chunk_size=self.chunk_size,
            # Batching amortises the per-forward work (2x fewer CPU-seconds per token at 6 books of 2K).
            batch_size=max(1, self.batch_tokens // point.length),
        )
        return result, books, time.perf_counter() - started

    def objective(
        self, point_of: Callable[[optuna.Trial], SweepPoint], stage: str
    ) -> Callable[[optuna.Trial], float]:
        def objective(trial: optuna.Trial) -> float:
            point = point_of(trial)
            previous = finished_measurements(self.storage, self.base).get(point.key())
            if previous is not None:
                for key, value in previous.user_attrs().items():
                    trial.set_user_attr(key, value)
                trial.set_user_attr("point", point.to_dict())
                trial.set_user_attr("reused_from", f"{previous.study}#{previous.trial}")
                self._last, self._last_cost = previous, 0.0
            else:
                result, books, seconds = self.evaluate(point)
                measurement = Measurement(
                    point, result, books.rows, books.skipped, seconds, stage, trial.number
                )
                for key, value in measurement.user_attrs().items():
                    trial.set_user_attr(key, value)
                self._last, self._last_cost = measurement, float(point.length * len(books.tokens))
                logger.info("%s: %s ppl %.4g (%.1fs)", stage, point.describe(), result.ppl, seconds)
            return self._last.result.mean_nll

        return objective

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna callback: runs once the trial is stored, so an interrupt here loses nothing."""
        if trial.state != TrialState.COMPLETE:
            return
        self.done += 1
        self.cost_done += self._last_cost
        if self.progress is not None:
            progress = SweepProgress(
                self.done, self.total, self.cost_done, self.cost_total, self._last, study.study_name
            )
            self.progress(progress)


def _grid_pending(study: optuna.Study, points: list[SweepPoint]) -> list[SweepPoint]:
    """Grid points without a completed trial in ``study``."""
    complete = {
        SweepPoint.from_dict(t.user_attrs["point"]).key()
        for t in study.get_trials(deepcopy=False, states=COMPLETE)
        if "point" in t.user_attrs
    }
    return [p for p in points if p.key() not in complete]


def _requeue_failed(study: optuna.Study, pending: list[SweepPoint]) -> None:
    """Enqueue pending grid points whose trials all failed (an interrupt, an error): GridSampler
    counts a failed trial as visited and would never run its point again."""
    live = {TrialState.RUNNING, TrialState.WAITING}
    tried: dict[tuple[Any, ...], set[TrialState]] = {}
    for t in study.get_trials(deepcopy=False):
        params = t.params or t.system_attrs.get("fixed_params")
        if params:
            tried.setdefault(SweepPoint.from_params(params).key(), set()).add(t.state)
    for point in pending:
        states = tried.get(point.key(), set())
        if TrialState.FAIL in states and not states & live:
            logger.info("%s: re-running %s (its trial failed)", study.study_name, point.describe())
            study.enqueue_trial(point.params())


def _run_grid(study: optuna.Study, points: list[SweepPoint], objective: Callable, runner: _Runner) -> None:
    # GridSampler stops the study once every point has a finished trial (also when other
    # workers finish some); loop for points whose trials failed and were re-enqueued.
    complete = -1
    while True:
        pending = _grid_pending(study, points)
        if not pending or len(points) - len(pending) == complete:
            return
        complete = len(points) - len(pending)
        _requeue_failed(study, pending)
        study.optimize(objective, n_trials=None, callbacks=[runner.after_trial])


def run_sweep(
    model: Any,
    books: Books,
    spec: SweepSpec,
    storage: str | BaseStorage,
    study_name: str,
    *,
    signature: dict[str, Any] | None = None,
    batch_tokens: int = 16384,
    chunk_size: int = 1024,
    progress: Callable[[SweepProgress], None] | None = None,
) -> SweepResult:
    """Run (or resume) the sweep ``spec`` of ``model`` on ``books``; return all its measurements.

    Args:
        model: a causal LM of a family ``apply_lampe`` supports.
        books: selected books (``load_books``), tokenized up to ``max(spec.lengths)``.
        spec: what to sweep (``SweepSpec``).
        storage: an Optuna storage or a database URL (``open_storage``); several processes on
            one URL share the work.
        study_name: base name of the sweep's studies (``study_names``).
        signature: JSON-able facts the results depend on (model, data, samples, seed, dtype);
            stored on each study, and a resumed study with a different signature is refused
            (``ValueError``). ``spec.mode`` and the selected book rows are always included.
        batch_tokens: tokens per forward pass: books of length L go ``batch_tokens // L`` at a
            time (at least one).
        chunk_size: passed to ``evaluate_perplexity``.
        progress: called with a ``SweepProgress`` once before the first trial (``last`` None:
            the totals) and after each trial.
    """
    storage = open_storage(storage)
    signature = {**(signature or {}), "mode": spec.mode, "rows": list(books.rows)}
    if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise ValueError(f"batch_tokens must be an integer >= 1, got {batch_tokens!r}")
    runner = _Runner(model, books, spec, storage, study_name, batch_tokens, chunk_size, progress)
    finished = finished_measurements(storage, study_name)
    stages = [
        _Stage(
            study_name + ":vanilla",
            _grid_sampler({"length": list(spec.lengths)}, spec.seed),
            _vanilla_point(spec),
            points=[SweepPoint(length, None) for length in spec.lengths],
        ),
    ]
    if spec.search == "grid":
        sampler = _grid_sampler(spec.grid_space(), spec.seed)
        stages.append(_Stage(study_name, sampler, spec.grid_point, points=spec.grid_points()))
    for length in spec.lengths if spec.search == "gp" else ():
        lo, hi = spec.gp_range(length)
        if hi <= lo:
            logger.info("length %d: every mapping length is >= L (no remap); nothing to search", length)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # deterministic_objective
            sampler = optuna.samplers.GPSampler(
                seed=spec.seed, n_startup_trials=spec.initial_points, deterministic_objective=True
            )
        stages.append(_Stage(f"{study_name}:gp:L{length}", sampler, spec.gp_point(length), length=length))

    for stage in stages:
        stage.study = open_study(storage, stage.name, stage.sampler, signature)
        if stage.points is not None:
            pending = _grid_pending(stage.study, stage.points)
            runner.total += len(pending)
            runner.cost_total += sum(runner.cost(p, finished) for p in pending)
            continue
        assert stage.length is not None
        if not stage.study.get_trials(deepcopy=False):
            # A fresh GP study starts from log-spaced points (enqueued once, by its creator).
            for m in initial_mappings(*spec.gp_range(stage.length), spec.initial_points):
                stage.study.enqueue_trial({"mapping": m})
        stage.budget = max(0, spec.evaluations - len(stage.study.get_trials(deepcopy=False, states=COMPLETE)))
        runner.total += stage.budget
        runner.cost_total += stage.budget * float(stage.length * len(runner.at_length(stage.length).tokens))
    logger.info("sweep %s: %d trials to run", study_name, runner.total)
    if progress is not None:
        progress(SweepProgress(0, runner.total, 0.0, runner.cost_total, None, ""))

    for stage in stages:
        assert stage.study is not None
        objective = runner.objective(stage.point_of, stage.name)
        if stage.points is not None:
            _run_grid(stage.study, stage.points, objective, runner)
        elif stage.budget > 0:
            limit = optuna.study.MaxTrialsCallback(spec.evaluations, states=COMPLETE)
            stage.study.optimize(objective, n_trials=stage.budget, callbacks=[limit, runner.after_trial])
    return collect_sweep(storage, study_name, spec)


def _grid_sampler(space: dict[str, list[Any]], seed: int) -> optuna.samplers.GridSampler:
    return optuna.samplers.GridSampler(space, seed=seed)


def _vanilla_point(spec: SweepSpec) -> Callable[[optuna.Trial], SweepPoint]:
    def point(trial: optuna.Trial) -> SweepPoint:
        return SweepPoint(trial.suggest_int("length", spec.lengths[0], spec.lengths[-1]), None)

    return point


@dataclass
class _Stage:
    """One study of a sweep: a grid (``points``) or a GP study of one ``length`` (``budget`` trials)."""

    name: str
    sampler: optuna.samplers.BaseSampler
    point_of: Callable[[optuna.Trial], SweepPoint]
    points: list[SweepPoint] | None = None
    length: int | None = None
    study: optuna.Study | None = None
    budget: int = 0
