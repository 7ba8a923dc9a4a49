"""``lampe-eval ruler``: the RULER-style tasks (``evaluation._ruler``), a table per task; a task
whose prompts score 0 or 1 (one answer: the needles) is a rate with its 95 % Wilson interval."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ._args import parse_names
from ._task import ContextFor, Prepared
from ._task_generation import GenerationTask

__all__ = ["RulerTasks", "parse_tasks"]


def parse_tasks(text: str) -> tuple[str, ...]:
    """``--tasks``: comma-separated RULER task names (``_ruler.TASKS``), in the given order.

    Example: ``parse_tasks("vt, niah_single")`` -> ``("vt", "niah_single")``.
    """
    from ..evaluation._ruler import TASKS

    return parse_names(text, "--tasks", "task", TASKS)


class RulerTasks(GenerationTask):
    name = "ruler"
    help = "RULER-style synthetic tasks (needles, variable tracking, common words)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--tasks", default="niah_single,niah_multikey,vt,cwe", help="comma-separated RULER tasks"
        )
        parser.add_argument("--samples", type=int, default=4, help="prompts per task and length (default 4)")
        parser.add_argument(
            "--new-tokens",
            type=int,
            help="tokens generated per prompt (default per task: niah 16, vt 32, cwe 40)",
        )

    def check(self, args: argparse.Namespace, methods: Sequence[str] | None) -> None:
        parse_tasks(args.tasks)
        super().check(args, methods)

    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"new_tokens": args.new_tokens}

    def extra_fields(self, scores: Sequence[float]) -> dict[str, Any]:
        return {"samples": len(scores)}

    def heading(self, title: str, task: str | None, rows: list[dict]) -> str:
        return f"{title}: RULER accuracy, {task} ({rows[0]['samples']} prompts per cell)"

    def prepare(self, args, model, tokenizer, methods, lengths, context_for: ContextFor) -> Prepared:
        from ..evaluation._ruler import RULER_TASKS, RulerSources, ruler_samples

        sources = RulerSources.shipped()
        tasks = parse_tasks(args.tasks)
        new = {
            t: args.new_tokens if args.new_tokens is not None else RULER_TASKS[t].new_tokens for t in tasks
        }
        prompts = {}  # every prompt first, so a length too short for a task fails before any generation
        for task in tasks:
            for length in lengths:
                try:
                    prompts[task, length] = ruler_samples(
                        tokenizer, task, length - new[task], args.samples, args.seed, sources
                    )
                except ValueError as error:
                    raise ValueError(f"--lengths {length}: {task}: {error}") from error
        cells = [
            self.generation_cell(model, tokenizer, prompts[t, n], new[t], context_for(m, n), (t, m, n))
            for t in tasks
            for n in lengths
            for m in methods
        ]
        data = f"RULER prompts: {args.samples} per task and length (tasks {args.tasks})"
        return Prepared(data, cells)
