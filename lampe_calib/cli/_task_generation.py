"""What every generation task of ``lampe-eval`` shares (``passkey``, ``ruler``): a cell is a list
of prompts answered by greedy decoding through the one evaluator (``evaluation._generation``), its
row keeps each prompt's score and the rate's 95 % Wilson interval (``evaluation._rates``), and its
table cell shows the rate, the prompts found and the interval."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from ..evaluation._rates import binomial_counts, rate_fields, rate_interval
from ._task import Cell, EvalTask, rich_table

__all__ = ["GenerationTask", "rate_text"]

INTERVAL_NOTE = "[low, high]: 95 % Wilson interval of the rate, where every prompt scores 0 or 1"


def rate_text(row: dict) -> str:
    """A generation cell as the table shows it: the rate in %, the prompts found of those run and
    the Wilson interval where the prompts score 0 or 1, else the mean score alone.

    Example: ``rate_text({"accuracy": 0.5, "scores": [1.0, 0.0]})`` -> ``"50% (1/2) [9%, 91%]"``;
    ``rate_text({"accuracy": 0.6, "scores": [0.6]})`` -> ``"60%"``.
    """
    text = f"{100 * row['accuracy']:.0f}%"
    counts, interval = binomial_counts(row), rate_interval(row)
    if counts is not None:
        text += f" ({counts[0]}/{counts[1]})"
    if interval is not None:
        text += f" [{100 * interval[0]:.0f}%, {100 * interval[1]:.0f}%]"
    return text


class GenerationTask(EvalTask):
    """An ``EvalTask`` whose cells are prompts scored in [0, 1] (``GenerationPrompt``).

    Subclasses define ``add_arguments`` (with ``--samples`` and ``--new-tokens``), ``prepare``
    (with ``generation_cell``), ``heading`` and, for fields of their own, ``extra_fields``.
    """

    def check(self, args: argparse.Namespace, methods: Sequence[str] | None) -> None:
        if args.new_tokens is not None and args.new_tokens < 1:
            raise ValueError(f"--new-tokens must be >= 1, got {args.new_tokens}")

    def extra_fields(self, scores: Sequence[float]) -> dict[str, Any]:
        """Fields a task's rows keep beside the rate (passkey: correct and trials)."""
        return {}

    def heading(self, title: str, task: str | None, rows: list[dict]) -> str:
        """The line above the table of ``task`` (None: the task has no sub-tasks)."""
        raise NotImplementedError

    def generation_cell(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[Any],
        new_tokens: int,
        context: Callable[[], Any],
        key: tuple[str | None, str, int],
    ) -> Cell:
        """The cell ``key = (task, method, length)`` that answers ``prompts`` under ``context``."""
        task, method, length = key

        def run(progress: Callable[[int, int], None]) -> dict:
            from ..evaluation import _generation  # looked up at run time (tests count the calls)

            result = _generation.evaluate_generation(model, tokenizer, prompts, context, new_tokens, progress)
            fields = {"task": task} if task is not None else {}
            fields |= {"method": method, "length": length}
            return fields | rate_fields(result.scores) | self.extra_fields(result.scores)

        label = f"{task} {method} L={length}" if task is not None else f"{method} L={length}"
        return Cell(key, label, len(prompts), run)

    def print_tables(self, out, args, title, methods, lengths, rows) -> None:
        """One table per task (the rate per method and length), then what the brackets mean."""
        for task in dict.fromkeys(r.get("task") for r in rows):
            group = [r for r in rows if r.get("task") == task]
            cells = {(r["method"], r["length"]): (r["accuracy"], rate_text(r)) for r in group}
            out.print(self.heading(title, task, group))
            out.print(rich_table(methods, lengths, cells, max))
        out.print(INTERVAL_NOTE, markup=False)  # "[low, high]" is not a rich tag
