"""``lampe-eval``'s evaluation tasks: every subcommand has one shape, ``EvalTask``.

A task names its subcommand and declares, in this order of use:

1. ``add_arguments``: its own flags, beside the ones every task takes (``_eval``);
2. ``check``: what can be checked before the model loads, so a typo fails fast;
3. ``settings``: what its cells' values depend on, for ``--json`` resume (``_results``);
4. ``begin``: what it settles once the methods are known (``ppl``'s reference method);
5. ``prepare``: its cells, each one (method, length) or (task, method, length), with the function
   that runs it and returns its JSON row; prompts or books are built here, before any cell runs;
6. ``print_tables``: the tables printed from the rows (one row per method, one column per length).

``_eval.main`` runs every task the same way: parse, check, open the results file, load the model,
settle methods, lengths and profile, prepare, run the cells not yet in the file, print. A new task
is one module with an ``EvalTask`` subclass, one entry in ``_eval.TASKS``, and its tests.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Cell", "ContextFor", "EvalTask", "Prepared", "rich_table"]

# progress(done, total), called by a cell as it runs.
Progress = Callable[[int, int], None]
# context_for(method, length) -> a factory of the method's context manager at that length.
ContextFor = Callable[[str, int], Callable[[], AbstractContextManager[Any]]]


class Cell(NamedTuple):
    """One cell of a run: its key (``_results.cell_key``), its progress label and size (books or
    prompts), and ``run(progress)``, which evaluates it and returns its JSON row."""

    key: tuple
    label: str
    size: int
    run: Callable[[Progress], dict]


@dataclass(frozen=True)
class Prepared:
    """What ``EvalTask.prepare`` built: the header's data line and the cells, in running order."""

    data: str
    cells: list[Cell]


class EvalTask:
    """One ``lampe-eval`` subcommand (see the module docstring for the order of the calls).

    Subclasses set ``name`` and ``help`` and define ``add_arguments``, ``prepare`` and
    ``print_tables``; the other methods default to nothing to add.
    """

    name: str = ""
    help: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the task's own flags (``--samples`` among them: its default differs per task)."""
        raise NotImplementedError

    def check(self, args: argparse.Namespace, methods: Sequence[str] | None) -> None:
        """Check (and resolve in ``args``) the task's flags before the model loads; ``methods``
        is None when ``--methods`` was not given."""

    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        """The task's own settings, beside model, samples, seed and dtype."""
        return {}

    def finish(self, args: argparse.Namespace) -> Callable[[list[dict]], list[dict]] | None:
        """What the results file applies to its rows before each write (``ResultsFile.finish``)."""
        return None

    def begin(self, args: argparse.Namespace, methods: Sequence[str]) -> dict[str, Any]:
        """Settle what depends on the methods; returns top-level fields for the results file."""
        return {}

    def methods_note(self, args: argparse.Namespace) -> str:
        """Said after the methods in the header (``ppl``: the reference of its ratios)."""
        return ""

    def prepare(
        self,
        args: argparse.Namespace,
        model: Any,
        tokenizer: Any,
        methods: Sequence[str],
        lengths: Sequence[int],
        context_for: ContextFor,
    ) -> Prepared:
        """Build the books or prompts of every length and the cells that evaluate them."""
        raise NotImplementedError

    def print_tables(
        self,
        out: Any,
        args: argparse.Namespace,
        title: str,
        methods: Sequence[str],
        lengths: Sequence[int],
        rows: list[dict],
    ) -> None:
        """Print the task's tables on ``out`` (a ``rich.console.Console``) from the cells' rows."""
        raise NotImplementedError


def rich_table(
    methods: Sequence[str],
    lengths: Sequence[int],
    cells: dict[tuple[str, int], tuple[Any, str]],
    best: Callable[[list[Any]], Any] | None,
) -> Any:
    """A rich table, a row per method and a column per length, of ``cells[method, length] =
    (value, text)``; the ``best`` value of each column in bold, unless the whole column ties."""
    from rich.table import Table

    table = Table(title=None, title_justify="left")
    table.add_column("method")
    for length in lengths:
        table.add_column(f"L={length}", justify="right")
    columns = {length: [cells[m, length][0] for m in methods] for length in lengths}
    winners = {n: best(v) if best is not None and len(set(v)) > 1 else None for n, v in columns.items()}
    for method in methods:
        row = []
        for length in lengths:
            value, text = cells[method, length]
            bold = winners[length] is not None and value == winners[length]
            row.append(f"[bold]{text}[/bold]" if bold else text)
        table.add_row(method, *row)
    return table
