"""Running a calibration sweep: the trial loop, the objective and its progress (the package
docstring says how the work is shared and what is guaranteed)."""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from ..._checks import check_integer
from ...evaluation._books import Books, BooksAtLength
from ...evaluation._perplexity import PerplexityResult, evaluate_perplexity
from ...methods import STOCK
from ...methods._lampe import apply_lampe
from ...methods._names import LAMPE
from ...methods._registry import rescaled_base
from ...methods._tuning import main_knob_context
from ...models._registry import model_info
from .._space import SweepPoint, SweepSpec
from ._db import ERROR, MACHINE, RETRIES, WORKER, Reaper, retried_from, sweep_lock, this_machine
from ._optuna_compat import enqueued_params, retry_history, trial_id
from ._stages import LIVE, RUNNING, Stage, enqueue_initial_design, open_stages, stop_unless
from ._store import (
    Measurement,
    SweepResult,
    collect_sweep,
    finished_measurements,
    open_storage,
    trial_point,
)

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


def _is_oom(message: str) -> bool:
    return any(m in message.lower() for m in _OOM_MESSAGES)


@dataclass
class _Runner:
    """One worker of a sweep: pops trials, evaluates or copies their points, reports progress."""

    model: Any
    books: Books
    spec: SweepSpec
    storage: BaseStorage
    study_name: str  # the sweep's base study name (``study_names``)
    batch_tokens: int
    chunk_size: int
    progress: Callable[[SweepProgress], None] | None
    poll_interval: float
    stages: list[Stage] = field(default_factory=list)
    stopped: set[str] = field(default_factory=set)  # GP studies whose evaluation failed in this run
    # The study and point that evaluate each shared key (the others copy it), from ``plan``.
    evaluator: dict[tuple[Any, ...], tuple[str, SweepPoint]] = field(default_factory=dict)
    # The work left when the run started, for progress: (study, point, cost) and GP budgets.
    items: list[tuple[str, SweepPoint, float]] = field(default_factory=list)
    budgets: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # complete, budget, cost
    last: Measurement | None = None
    reported: tuple[int, int] | None = (0, 0)
    at_length: dict[int, BooksAtLength] = field(default_factory=dict)
    reaped: dict[tuple[str, int], float] = field(default_factory=dict)  # first seen without a retry

    def __post_init__(self) -> None:
        self.reaper = Reaper(self.storage)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.machine = this_machine()
        # W of the model, read once, when the points run on a rescaled rotary.
        self.window = None if self.spec.base == STOCK else model_info(self.model).window

    def books_at(self, length: int) -> BooksAtLength:
        if length not in self.at_length:
            self.at_length[length] = self.books.at_length(length)
        return self.at_length[length]

    def cost(self, length: int) -> float:
        return float(length * len(self.books_at(length).tokens))

    def context(self, point: SweepPoint) -> Callable[[], Any] | None:
        """What ``point`` is evaluated under: LaMPE (None for the stock model), every point on
        the rescaled rotary when the sweep has one (the vanilla point too), or another method
        with its main knob at the point's value."""
        if point.method != LAMPE:
            window = model_info(self.model).window
            return lambda: main_knob_context(point.method, self.model, window, point.length, point.mapping)
        config = point.config(self.spec.mode)
        if self.window is not None:
            return lambda: rescaled_base(self.model, self.window, self.spec.base, config)
        return None if config is None else (lambda: apply_lampe(self.model, config))

    def evaluate(self, point: SweepPoint) -> tuple[PerplexityResult, BooksAtLength, float]:
        books, context = self.books_at(point.length), self.context(point)
        started = time.perf_counter()
        # Batching amortises the per-forward work (2x fewer CPU-seconds per token at 6 books of 2K).
        batch_size = max(1, self.batch_tokens // point.length)
        result = evaluate_perplexity(
            self.model, books.tokens, context, chunk_size=self.chunk_size, batch_size=batch_size
        )
        return result, books, time.perf_counter() - started

    def plan(self) -> None:
        """Under ``sweep_lock``: enqueue the vanilla and grid points without a live trial, most
        expensive first, and the GP studies' initial designs; record the progress totals."""
        finished = finished_measurements(self.storage, self.study_name)
        for stage in self.stages:  # (stale trials are reaped in ``work``: no state changes here)
            if stage.points is None:
                assert stage.length is not None
                enqueue_initial_design(stage, self.spec)
                done = len(stage.trials((TrialState.COMPLETE,)))
                left = max(0, self.spec.evaluations - done)
                self.budgets[stage.name] = (done, left, self.cost(stage.length))
                continue
            live, costs = {trial_point(t): t.state for t in stage.trials(LIVE)}, {}
            for point in stage.points:
                first = self.evaluator.setdefault(point.key(), (stage.name, point)) == (stage.name, point)
                costs[point] = self.cost(point.length) if first and point.key() not in finished else 0.0
                if live.get(point) != TrialState.COMPLETE:
                    self.items.append((stage.name, point, costs[point]))
            for point in sorted(stage.points, key=lambda p: (-costs[p], p.sort_key())):
                if point not in live:
                    stage.study.enqueue_trial(point.params())

    def objective(self, stage: Stage) -> Callable[[optuna.Trial], float]:
        def objective(trial: optuna.Trial) -> float:
            fixed = enqueued_params(trial, self.storage)
            if stage.points is not None and fixed is None:
                stage.study.stop()  # another worker popped the last waiting trial first
                raise optuna.TrialPruned("no waiting trial was left to pop")
            if self.reaper.grace is not None:  # never a WORKER without a heartbeat (``Reaper``)
                self.storage.record_heartbeat(trial_id(trial))
            trial.set_user_attr(MACHINE, self.machine)
            trial.set_user_attr(WORKER, self.worker)
            point = stage.point_of(trial)
            self.last = measurement = self.measure(stage, trial, point)
            for key, value in {**measurement.user_attrs(), "point": point.to_dict()}.items():
                trial.set_user_attr(key, value)
            return measurement.result.mean_nll

        return objective

    def measure(self, stage: Stage, trial: optuna.Trial, point: SweepPoint) -> Measurement:
        """A finished evaluation of ``point``'s key anywhere in the sweep (copied), else, once
        the point that evaluates the key runs nowhere else, a new one."""
        name, evaluator = self.evaluator.get(point.key(), (stage.name, point))
        owner = next(s for s in self.stages if s.name == name)
        while (found := finished_measurements(self.storage, self.study_name).get(point.key())) is None:
            if (name, evaluator) == (stage.name, point) or evaluator not in map(
                trial_point, owner.trials(RUNNING)
            ):
                return self.evaluate_or_fail(stage, trial, point)
            logger.info("%s: another worker evaluates %s; waiting", stage.name, evaluator.describe())
            time.sleep(self.poll_interval)
            self.reaper.stale(owner.study)
        trial.set_user_attr("reused_from", f"{found.study}#{found.trial}")
        return found

    def evaluate_or_fail(self, stage: Stage, trial: optuna.Trial, point: SweepPoint) -> Measurement:
        """Evaluate ``point``; a non-finite loss or running out of memory raises ``TrialFailure``
        after writing the reason to the trial, so that Optuna fails it and the sweep goes on."""
        try:
            result, books, seconds = self.evaluate(point)
            if bad := [x for x in result.nll if not math.isfinite(x)]:
                raise TrialFailure(f"non-finite loss ({bad[0]}) at {point.describe()}")
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM (``cli.Terminated``): Optuna fails it
            trial.set_user_attr(ERROR, str(stop) or "interrupted")
            raise
        except (TrialFailure, RuntimeError, MemoryError) as error:
            if not isinstance(error, (TrialFailure, MemoryError)) and not _is_oom(str(error)):
                raise
            if not isinstance(error, TrialFailure):
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                error = TrialFailure(f"out of memory at {point.describe()}: {first[:200]}")
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            trial.set_user_attr(ERROR, str(error))
            if stage.points is None:
                self.stopped.add(stage.name)  # a GP study proposing more m would fail the same way
            logger.warning("%s: trial %d failed: %s", stage.name, trial.number, error)
            raise error from None
        logger.info("%s: %s ppl %.4g (%.1fs)", stage.name, point.describe(), result.ppl, seconds)
        return Measurement(point, result, books.rows, books.skipped, seconds, stage.name, trial.number)

    def has_work(self, stage: Stage) -> bool:
        """Waiting trials to pop, or (GP) budget left; none in a GP study that failed here."""
        if stage.points is None and stage.name in self.stopped:
            return False
        if stage.trials((TrialState.WAITING,)):
            return True
        return stage.points is None and len(stage.trials(LIVE)) < self.spec.evaluations

    def work(self) -> None:
        """Run the stages' trials until none is waiting and no other worker runs one (which may
        still go stale and come back)."""
        while True:
            for stage in self.stages:
                self.reaper.stale(stage.study)
                if self.has_work(stage):
                    stop = stop_unless(lambda stage=stage: self.has_work(stage), self.after_trial)
                    stage.study.optimize(self.objective(stage), callbacks=[stop], catch=(TrialFailure,))
            if any(map(self.has_work, self.stages)):
                continue
            if not (running := [t for stage in self.stages for t in stage.trials(RUNNING)]):
                if self.unfinished():
                    time.sleep(self.poll_interval)
                    continue
                return self.report()
            self.reaper.unseen([stage.study for stage in self.stages])
            self.report(waiting=len(running))
            time.sleep(self.poll_interval)

    def after_trial(self) -> None:
        """After each trial of this worker: fail the trials of dead workers (at once for those
        of this machine, before Optuna's next trial start finds their heartbeat stale), and
        report progress."""
        for stage in self.stages:
            self.reaper.stale(stage.study)
        self.report()

    def unfinished(self) -> bool:
        """True while a stage has a trial waiting or running, or a point whose trial a worker
        reaped (failed as dead) has neither a retry nor another complete trial yet: the reaper
        fails the trial, then enqueues its retry, and that gap is waited for (at most
        ``Reaper.retry_wait``, in case the reaper died in it). Each stage is judged from one
        read of its trials, so a retry that moves from waiting to running between two reads is
        not missed."""
        now, pending = time.monotonic(), False
        for stage in self.stages:
            trials = stage.trials(tuple(TrialState))
            live = (
                (TrialState.RUNNING,)
                if stage.name in self.stopped
                else (TrialState.WAITING, TrialState.RUNNING)
            )
            if any(t.state in live for t in trials):  # (a GP study stopped here leaves its waiting trials)
                return True
            if self.reaper.retry_wait is None:
                continue
            retried = {retried_from(t) for t in trials}
            done = {trial_point(t) for t in trials if t.state == TrialState.COMPLETE} - {None}
            for trial in trials:
                reason = str(trial.user_attrs.get(ERROR, "its worker"))
                if (
                    trial.state != TrialState.FAIL
                    or trial.number in retried
                    or trial_point(trial) in done  # measured by another trial (a re-run's)
                    or not reason.startswith("its worker")  # reaped: by us, or Optuna (no reason)
                    or len(retry_history(trial)) >= RETRIES
                ):
                    continue
                first = self.reaped.setdefault((stage.name, trial.number), now)
                pending = pending or now - first < self.reaper.retry_wait
        return pending

    def totals(self) -> tuple[int, float]:
        count = len(self.items) + sum(b for _, b, _ in self.budgets.values())
        return count, sum(c for *_, c in self.items) + sum(b * c for _, b, c in self.budgets.values())

    def report(self, waiting: int = 0) -> None:
        if self.progress is None:
            return
        complete = {stage.name: stage.trials((TrialState.COMPLETE,)) for stage in self.stages}
        points = {name: set(map(trial_point, trials)) for name, trials in complete.items()}
        done = [c for name, p, c in self.items if p in points[name]]
        gp = [(min(b, max(0, len(complete[n]) - d)), c) for n, (d, b, c) in self.budgets.items()]
        count, cost = len(done) + sum(k for k, _ in gp), sum(done) + sum(k * c for k, c in gp)
        if (count, waiting) != self.reported:
            self.reported = (count, waiting)
            stage = f"waiting for {waiting} trial(s) of other workers" if waiting else ""
            total, cost_total = self.totals()
            self.progress(SweepProgress(count, total, cost, cost_total, self.last, stage, waiting))


def run_sweep(
    model: Any,
    books: Books,
    spec: SweepSpec,
    storage: str | BaseStorage,
    study_name: str,
    *,
    signature: dict[str, Any] | None = None,
    model_record: dict[str, Any] | None = None,
    allow_transfer: bool = False,
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
        signature: JSON-able facts the results depend on (data, samples, seed, dtype);
            stored on each study, and a resumed study with a different signature is refused
            (``ValueError``). ``spec.mode`` and the selected book rows are always included.
        model_record: ``{"source": portable id, "facts": ModelFacts.to_dict()}`` of the model,
            stored on each study; a resumed study whose facts differ is refused unless
            ``allow_transfer``, and one from another source with the same facts is logged.
        batch_tokens, chunk_size: ``evaluate_perplexity``'s (L-token books go by ``batch_tokens // L``).
        progress: called with a ``SweepProgress`` once before the first trial (``last`` None:
            the totals), after each trial and while waiting for other workers.
        poll_interval: seconds between looks at the storage while waiting for other workers
            (None: the storage's heartbeat interval, at most 5).

    Returns:
        The sweep's finished measurements, and the points left without one (``missing``).
    """
    storage = open_storage(storage)
    if poll_interval is None:
        poll_interval = min(5.0, float(getattr(storage, "heartbeat_interval", None) or 5))
    signature = {**(signature or {}), "mode": spec.mode, "rows": list(books.rows)}
    if spec.base != STOCK:  # (absent for the stock rotary: studies stored before it resume)
        signature["base"] = spec.base
    check_integer("batch_tokens", batch_tokens, 1)
    runner = _Runner(
        model, books, spec, storage, study_name, batch_tokens, chunk_size, progress, poll_interval
    )
    with sweep_lock(storage):
        runner.stages = open_stages(storage, spec, study_name, signature, model_record, allow_transfer)
        runner.plan()
    total, cost_total = runner.totals()
    logger.info("sweep %s: %d trials to run", study_name, total)
    if progress is not None:
        progress(SweepProgress(0, total, 0.0, cost_total, None, ""))
    runner.work()
    return collect_sweep(storage, study_name, spec)
