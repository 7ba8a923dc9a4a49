"""Progress of a command: rich bars on a terminal, plain lines anywhere else (a log file, CI,
``nohup``), where a live display prints nothing until it ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["LineProgress", "console", "progress_for"]


class LineProgress:
    """``rich.progress.Progress``'s ``add_task``/``update`` as lines: one when a task finishes,
    and, while it runs, at most one every ``interval`` seconds.

    Example: a task "vanilla L=512" of 10 books finishing prints ``vanilla L=512: 10/10 (4.2 s)``.
    """

    def __init__(self, stream: TextIO, interval: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.tasks: list[dict[str, Any]] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: int) -> int:
        now = self.clock()
        self.tasks.append({"label": description, "total": total, "started": now, "shown": now})
        return len(self.tasks) - 1

    def update(self, task: int, completed: int) -> None:
        state = self.tasks[task]
        now = self.clock()
        if completed < state["total"] and now - state["shown"] < self.interval:
            return
        state["shown"] = now
        elapsed = now - state["started"]
        print(
            f"{state['label']}: {completed}/{state['total']} ({elapsed:.1f} s)", file=self.stream, flush=True
        )


def progress_for(console: Any) -> Any:
    """Rich bars when ``console`` (a ``rich.console.Console``) is a terminal, else ``LineProgress``
    on its stream."""
    if console.is_terminal:
        from rich.progress import Progress

        return Progress(console=console, transient=True)
    return LineProgress(console.file)


def console(stderr: bool = False) -> Any:
    """A ``rich.console.Console`` on stdout or stderr; in a notebook, one that writes plain text:
    rich's Jupyter rendering keeps ANSI codes in its text copy, and a notebook's streams pass
    for terminals, so live bars there would print their cursor codes."""
    from rich.console import Console

    if Console().is_jupyter:
        return Console(stderr=stderr, force_jupyter=False, force_terminal=False)
    return Console(stderr=stderr)
