"""Running a calibration sweep: trials over (L, m) in Optuna studies (DESIGN §3.2).

The vanilla study (the stock model at every length), then the grid study or one GP study per
length (``_sweep_store`` describes the layout). Any number of workers may run one sweep on one
storage (``_sweep_workers``): each takes, under the sweep's lock, a point that nobody has taken
(the vanilla points, then the grid, most expensive first, so that the workers finish together),
enqueues it and pops it as its next trial, so every grid point gets exactly one finished trial.
Before evaluating, a trial looks for a finished evaluation of the same thing anywhere in the
sweep and copies it (m >= L is the stock model; re-running a command or changing the grid never
evaluates a point twice), or waits for the worker evaluating it. A worker with nothing left to
take waits while others run trials, so that a trial whose worker died is re-run before the end.

A trial whose evaluation fails (a non-finite loss, out of memory) is marked failed with the
reason in its user attribute ``error``; the sweep goes on without it, and ``collect_sweep``
reports the point as missing. Running the command again tries it again.
"""

from __future__ import annotations

import gc
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage

from ._apply import apply_lampe
from ._data import Books, BooksAtLength
from ._perplexity import PerplexityResult, evaluate_perplexity
from ._sweep_spec import SweepPoint, SweepSpec, initial_mappings
from ._sweep_store import Measurement, SweepResult, collect_sweep, open_storage, open_study
from ._sweep_view import SweepView, read_view
from ._sweep_workers import CLAIM, ERROR, SweepLock, Worker, fail_stale, fail_trial, worker_gone

__all__ = ["SweepProgress", "TrialFailure", "run_sweep"]

logger = logging.getLogger(__name__)

# What a failed evaluation at one point says about its memory (CUDA, CPU allocator, MPS).
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


class TrialFailure(Exception):
    """An evaluation that gives no usable loss at its point (non-finite loss, out of memory):
    its trial fails with this message and the sweep goes on."""


@dataclass(frozen=True)
class SweepProgress:
    """What a progress callback sees: the sweep's trials finished since this run started (by
    every worker), after each trial of this worker and while it waits for other workers.

    ``cost`` counts tokens to evaluate (L × books per trial; 0 for a copied result), the unit
    in which an ETA is meaningful: one trial at 8K tokens costs 16 at 512. ``waiting`` is the
    number of trials other workers are running while this one has nothing left to take.
    """

    done: int
    total: int
    cost_done: float
    cost_total: float
    last: Measurement | None
    stage: str
    waiting: int = 0


@dataclass
class _Stage:
    """One study of a sweep: a grid (``points``, the vanilla study is one) or the GP study of one
    ``length``."""

    name: str
    sampler: optuna.samplers.BaseSampler
    point_of: Callable[[optuna.Trial], SweepPoint]
    points: list[SweepPoint] | None = None
    length: int | None = None
    study: optuna.Study | None = None


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and any(m in str(error).lower() for m in _OOM_MESSAGES)
    )


class _Runner:
    """One worker of a sweep: takes points under the lock, evaluates them, reports progress."""

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
        poll_interval: float,
    ):
        self.model, self.books, self.spec, self.storage, self.base = model, books, spec, storage, base
        self.batch_tokens, self.chunk_size, self.progress = batch_tokens, chunk_size, progress
        self.poll_interval = poll_interval
        self.lock = SweepLock(storage, base)
        self.worker = Worker.this()
        self._at_length: dict[int, BooksAtLength] = {}
        self._last: Measurement | None = None
        # What this run leaves alone: points whose evaluation failed here, GP studies that failed.
        self.failed: set[tuple[str, tuple[Any, ...]]] = set()
        self.stopped: set[str] = set()
        # The work left when the run started, for progress: (study, point, cost) and GP budgets.
        self.items: list[tuple[str, SweepPoint, float]] = []
        self.budgets: dict[str, tuple[int, int, float]] = {}  # study -> (complete at start, budget, cost)
        self._reported: tuple[int, int] | None = None
        self._stale_checked = -math.inf
        # Handed from ``work`` to the objective of the trial it starts.
        self._view = SweepView({})
        self._enqueued: SweepPoint | None = None

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

    # -- the sweep as seen under the lock ---------------------------------------------------

    def view(self, stages: list[_Stage]) -> SweepView:
        """Every trial of the sweep, read once (``stages``: this run's studies)."""
        grids = {stage.name for stage in stages if stage.points is not None}
        return read_view(self.storage, self.base, grids, {stage.name for stage in stages})

    def reap(self, stages: list[_Stage], view: SweepView) -> bool:
        """Fail (and re-queue) the trials of dead workers: gone from this machine, or silent past
        the heartbeat's grace period (checked every ``poll_interval``). True if any was failed."""
        studies = {stage.name: stage.study for stage in stages}
        gone = [(name, t) for name, t in view.running if name in studies and worker_gone(t, self.worker)]
        for name, trial in gone:
            fail_trial(studies[name], self.storage, trial)
        unclaimed = [(name, t) for name, t in view.unclaimed if name in studies]
        for name, trial in unclaimed:  # their points are free again; nothing to re-queue
            fail_trial(studies[name], self.storage, trial, retry=False)
        stale = False
        if time.monotonic() - self._stale_checked >= self.poll_interval:
            self._stale_checked = time.monotonic()
            stale = any(fail_stale(study, self.storage) for study in studies.values())
        return bool(gone or unclaimed) or stale

    def next_action(self, stages: list[_Stage], view: SweepView) -> tuple[_Stage, SweepPoint | None] | None:
        """The next trial to run: a re-queued one first, then the vanilla points, then the grid
        (or GP studies with budget left), each by cost, most expensive first, among the points
        nobody has taken."""
        for stage in stages:
            if view.waiting.get(stage.name) and stage.name not in self.stopped:
                return stage, None
        best: tuple[tuple[Any, ...], _Stage, SweepPoint | None] | None = None
        for index, stage in enumerate(stages):
            if stage.points is not None:
                taken = view.taken.get(stage.name, set())
                for point in stage.points:
                    key = point.key()
                    if point in taken or (stage.name, key) in self.failed or key in view.inflight:
                        continue
                    rank = (index > 0, -self.cost(point, view.finished), index, point.sort_key())
                    if best is None or rank < best[0]:
                        best = (rank, stage, point)
            elif stage.name not in self.stopped and view.counted.get(stage.name, 0) < self.spec.evaluations:
                assert stage.length is not None
                rank = (True, -float(stage.length * len(self.at_length(stage.length).tokens)), index, ())
                if best is None or rank < best[0]:
                    best = (rank, stage, None)
        return None if best is None else (best[1], best[2])

    @staticmethod
    def decide(stage: _Stage, trial: optuna.Trial, point: SweepPoint, view: SweepView) -> Any:
        """Under the lock: "duplicate" (another trial of this grid study has the point),
        the ``Measurement`` to copy, "wait" (another worker evaluates it) or "evaluate"."""
        key = point.key()
        if stage.points is not None and any(
            n != trial.number for n in view.holders.get((stage.name, point), ())
        ):
            return "duplicate"
        if key in view.finished:
            return view.finished[key]
        if view.inflight.get(key, trial.number) != trial.number:
            return "wait"
        return "evaluate"

    # -- running trials -----------------------------------------------------------------------

    def objective(self, stage: _Stage, stages: list[_Stage]) -> Callable[[optuna.Trial], float]:
        def objective(trial: optuna.Trial) -> float:
            # Entered holding the sweep lock (``work``): the claim is decided and recorded
            # before anyone else looks, then the lock is handed back for the evaluation.
            try:
                claim = {"number": trial.number, "worker": self.worker.to_dict(), "evaluates": None}
                self.storage.set_trial_system_attr(trial._trial_id, CLAIM, claim)
                if getattr(self.storage, "get_heartbeat_interval", lambda: None)():
                    self.storage.record_heartbeat(trial._trial_id)  # the heartbeat check sees it from now on
                point = stage.point_of(trial)
                trial.set_user_attr("point", point.to_dict())
                # The view read in ``work`` holds unless Optuna popped a trial other than ours.
                view = self._view if point == self._enqueued else self.view(stages)
                while (outcome := self.decide(stage, trial, point, view)) == "wait":
                    logger.info("%s: another worker evaluates %s; waiting", stage.name, point.describe())
                    self.lock.release()
                    time.sleep(self.poll_interval)
                    self.lock.acquire()
                    view = self.view(stages)
                    if self.reap(stages, view):  # the worker waited for may have died
                        view = self.view(stages)
                if outcome == "duplicate":
                    raise optuna.TrialPruned(f"{point.describe()} already has a trial in {stage.name}")
                if isinstance(outcome, Measurement):
                    for key, value in outcome.user_attrs().items():
                        trial.set_user_attr(key, value)
                    trial.set_user_attr("point", point.to_dict())
                    trial.set_user_attr("reused_from", f"{outcome.study}#{outcome.trial}")
                    self._last = outcome
                    return outcome.result.mean_nll
                claim["evaluates"] = list(point.key())
                self.storage.set_trial_system_attr(trial._trial_id, CLAIM, claim)
            finally:
                self.lock.release()
            measurement = self.evaluate_or_fail(stage, trial, point)
            for key, value in measurement.user_attrs().items():
                trial.set_user_attr(key, value)
            self._last = measurement
            logger.info(
                "%s: %s ppl %.4g (%.1fs)",
                stage.name,
                point.describe(),
                measurement.result.ppl,
                measurement.seconds,
            )
            return measurement.result.mean_nll

        return objective

    def evaluate_or_fail(self, stage: _Stage, trial: optuna.Trial, point: SweepPoint) -> Measurement:
        """Evaluate ``point``; a non-finite loss or running out of memory raises ``TrialFailure``
        after writing the reason to the trial, so that Optuna fails it and the sweep goes on."""
        try:
            result, books, seconds = self.evaluate(point)
            bad = [x for x in result.nll if not math.isfinite(x)]
            if bad:
                raise TrialFailure(f"non-finite loss ({bad[0]}) at {point.describe()}")
        except KeyboardInterrupt:
            trial.set_user_attr(ERROR, "interrupted")
            raise
        except (TrialFailure, RuntimeError, MemoryError) as error:
            if not isinstance(error, TrialFailure) and not _is_oom(error):
                raise
            if not isinstance(error, TrialFailure):
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                error = TrialFailure(f"out of memory at {point.describe()}: {first[:200]}")
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            trial.set_user_attr(ERROR, str(error))
            if stage.points is not None:
                self.failed.add((stage.name, point.key()))
            else:
                self.stopped.add(stage.name)  # a GP study proposing more m would fail the same way
            logger.warning("%s: trial %d failed: %s", stage.name, trial.number, error)
            raise error from None
        return Measurement(point, result, books.rows, books.skipped, seconds, stage.name, trial.number)

    def work(self, stages: list[_Stage]) -> None:
        """Take and run trials until the sweep has nothing left that this worker may take and no
        other worker runs a trial (which may still fail and come back)."""
        while True:
            self.lock.acquire()
            try:
                view = self.view(stages)
                if self.reap(stages, view):
                    view = self.view(stages)
                self.report(view)
                action = self.next_action(stages, view)
                if action is None:
                    if not view.busy:
                        return
                    self.lock.release()
                    self.report(view, waiting=view.busy)
                    time.sleep(self.poll_interval)
                    continue
                stage, point = action
                assert stage.study is not None
                if point is not None:
                    # Enqueued and popped under the lock: this worker's next trial has the point.
                    stage.study.enqueue_trial(point.params())
                self._view, self._enqueued = view, point
                stage.study.optimize(self.objective(stage, stages), n_trials=1, catch=(TrialFailure,))
            finally:
                self.lock.release()

    # -- progress -------------------------------------------------------------------------

    def plan(self, stages: list[_Stage], view: SweepView) -> None:
        """Record the work left at the start of the run (the progress totals)."""
        for stage in stages:
            if stage.points is not None:
                complete = view.complete.get(stage.name, set())
                self.items += [
                    (stage.name, p, self.cost(p, view.finished)) for p in stage.points if p not in complete
                ]
            else:
                assert stage.length is not None
                done = view.completes.get(stage.name, 0)
                budget = max(0, self.spec.evaluations - done)
                cost = float(stage.length * len(self.at_length(stage.length).tokens))
                self.budgets[stage.name] = (done, budget, cost)

    def totals(self) -> tuple[int, float]:
        count = len(self.items) + sum(b for _, b, _ in self.budgets.values())
        return count, sum(c for *_, c in self.items) + sum(b * c for _, b, c in self.budgets.values())

    def report(self, view: SweepView, waiting: int = 0) -> None:
        if self.progress is None:
            return
        done = [c for name, p, c in self.items if p in view.complete.get(name, set())]
        gp = [(min(b, max(0, view.completes.get(n, 0) - d)), c) for n, (d, b, c) in self.budgets.items()]
        count, cost = len(done) + sum(k for k, _ in gp), sum(done) + sum(k * c for k, c in gp)
        if (count, waiting) == self._reported:
            return
        self._reported = (count, waiting)
        total, cost_total = self.totals()
        stage = f"waiting for {waiting} trial(s) of other workers" if waiting else ""
        self.progress(SweepProgress(count, total, cost, cost_total, self._last, stage, waiting))


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
    poll_interval: float | None = None,
) -> SweepResult:
    """Run (or resume, or join) the sweep ``spec`` of ``model`` on ``books``; return all its
    measurements.

    Args:
        model: a causal LM of a family ``apply_lampe`` supports.
        books: selected books (``load_books``), tokenized up to ``max(spec.lengths)``.
        spec: what to sweep (``SweepSpec``).
        storage: an Optuna storage or a database URL (``open_storage``); several processes on
            one URL (PostgreSQL, or SQLite on one machine) share the work, each point taken once.
        study_name: base name of the sweep's studies (``study_names``).
        signature: JSON-able facts the results depend on (model, data, samples, seed, dtype);
            stored on each study, and a resumed study with a different signature is refused
            (``ValueError``). ``spec.mode`` and the selected book rows are always included.
        batch_tokens: tokens per forward pass: books of length L go ``batch_tokens // L`` at a
            time (at least one).
        chunk_size: passed to ``evaluate_perplexity``.
        progress: called with a ``SweepProgress`` once before the first trial (``last`` None:
            the totals), after each trial and while waiting for other workers.
        poll_interval: seconds between looks at the storage while waiting for other workers
            (None: the storage's heartbeat interval, at most 5).

    Returns:
        The sweep's finished measurements, and the points left without one (``missing``).
    """
    storage = open_storage(storage)
    if poll_interval is None:
        heartbeat = getattr(storage, "heartbeat_interval", None)
        poll_interval = min(5.0, float(heartbeat or 5))
    signature = {**(signature or {}), "mode": spec.mode, "rows": list(books.rows)}
    if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
        raise ValueError(f"batch_tokens must be an integer >= 1, got {batch_tokens!r}")
    runner = _Runner(
        model, books, spec, storage, study_name, batch_tokens, chunk_size, progress, poll_interval
    )
    stages = [
        _Stage(
            study_name + ":vanilla",
            _QueueSampler(),
            _vanilla_point(spec),
            points=[SweepPoint(length, None) for length in spec.lengths],
        ),
    ]
    if spec.search == "grid":
        stages.append(_Stage(study_name, _QueueSampler(), spec.grid_point, points=spec.grid_points()))
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

    with runner.lock:
        for stage in stages:
            stage.study = open_study(storage, stage.name, stage.sampler, signature)
            if stage.length is not None:
                _enqueue_initial_design(stage.study, spec, stage.length)
        runner.plan(stages, runner.view(stages))
    total, cost_total = runner.totals()
    logger.info("sweep %s: %d trials to run", study_name, total)
    if progress is not None:
        progress(SweepProgress(0, total, 0.0, cost_total, None, ""))
        runner._reported = (0, 0)
    runner.work(stages)
    return collect_sweep(storage, study_name, spec)


def _enqueue_initial_design(study: optuna.Study, spec: SweepSpec, length: int) -> None:
    """A GP study starts from log-spaced points: enqueue those without a trial, as long as the
    GP has proposed nothing (a run killed while enqueuing them gets the rest next time)."""
    initial = initial_mappings(*spec.gp_range(length), spec.initial_points)
    tried = [
        t.system_attrs.get("fixed_params", t.params).get("mapping") for t in study.get_trials(deepcopy=False)
    ]
    tried = [m for m in tried if m is not None]
    if any(m not in initial for m in tried):
        return
    for m in initial:
        if m not in tried:
            study.enqueue_trial({"mapping": m})


class _QueueSampler(optuna.samplers.BaseSampler):
    """The sampler of the vanilla and grid studies: ``_Runner.work`` enqueues every trial with
    its point (Optuna's GridSampler picks points on its own, and may pick one twice under races)."""

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: Any, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: Any, name: str, distribution: Any) -> Any:
        raise AssertionError(f"trial {trial.number} of {study.study_name} was not enqueued with its point")


def _vanilla_point(spec: SweepSpec) -> Callable[[optuna.Trial], SweepPoint]:
    def point(trial: optuna.Trial) -> SweepPoint:
        return SweepPoint(trial.suggest_int("length", spec.lengths[0], spec.lengths[-1]), None)

    return point
