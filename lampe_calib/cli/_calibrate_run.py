"""What every ``lampe-calibrate`` run does around its calibration, LaMPE's (``_calibrate``) and
another method's (``_calibrate_method``): the console and the model, the books, the storage
and ``OUT``, the progress bar, and the command line as a profile records it."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "hide_password",
    "open_run_storage",
    "read_books",
    "run_with_progress",
    "start_run",
    "without_passwords",
]


def start_run(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, float]:
    """What every calibration does once its options are checked: the console and logging, the
    threads, and the model loaded. Returns ``(console, model, tokenizer, info, started)``."""
    import optuna
    import torch
    from rich.console import Console
    from rich.logging import RichHandler

    from ..models import load_model, model_info

    console = Console(highlight=False)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    # Errors only: the sweep logs each failed trial itself, in one line (Optuna's own warning
    # carries the whole traceback, 70 lines for a Ctrl-C).
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with console.status(f"loading {args.model}"):
        model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    return console, model, tokenizer, model_info(model), started


def read_books(console: Any, args: argparse.Namespace, tokenizer: Any, lengths: Sequence[int]) -> Any:
    """``--data``'s books, tokenized, checked to hold a book at every length (so that the
    error comes before anything is written)."""
    from ..evaluation import load_books

    with console.status("reading and tokenizing books"):
        books = load_books(args.data, tokenizer, max_length=lengths[-1], samples=args.samples, seed=args.seed)
        for length in lengths:
            books.at_length(length)
    return books


def open_run_storage(
    console: Any,
    args: argparse.Namespace,
    url: str,
    out: Path,
    study: str,
    before_open: Callable[[], None] | None = None,
) -> Any:
    """The sweep's storage at ``url``, with ``OUT`` created. An explicit ``--storage`` is opened
    (created, for SQLite) before ``OUT``, so that one that cannot be opened leaves nothing
    behind; the default one, inside ``OUT``, after ``before_open`` (which may put a study there)."""
    from ..calibration.sweep._store import open_storage

    storage = open_storage(url, heartbeat_interval=args.heartbeat) if args.storage else None
    out.mkdir(parents=True, exist_ok=True)
    if before_open is not None:
        before_open()
    storage = storage or open_storage(url, heartbeat_interval=args.heartbeat)
    console.print(f"storage: {hide_password(url)} (study {args.study or study!r})")
    return storage


def without_passwords(argv: list[str]) -> list[str]:
    """The command line as recorded in a profile: a ``--storage`` password becomes ``***``.

    Example: ``["--storage", "postgresql://u:pw@db/x"]`` -> ``["--storage", "postgresql://u:***@db/x"]``.
    """
    out, storage = [], False
    for item in argv:
        if storage or item.startswith("--storage="):
            prefix = "--storage=" if item.startswith("--storage=") else ""
            item = prefix + hide_password(item.removeprefix(prefix))
        storage = item == "--storage"
        out.append(item)
    return out


def hide_password(url: str) -> str:
    """Example: ``hide_password("postgresql://u:pw@db/x")`` -> ``"postgresql://u:***@db/x"``."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def run_with_progress(console: Any, calibrate: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``calibrate(*args, progress=..., **kwargs)`` under a rich progress bar whose ETA counts
    tokens evaluated (a trial at 8W costs 16 trials at W/2)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[trials]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("sweep", total=None, trials="")

        def update(p: Any) -> None:
            last = p.last.point.describe() if p.last else "sweep"
            ppl = f" ppl {p.last.result.ppl:.4g}" if p.last else ""
            if p.waiting:  # nothing left to take: other workers run the last trials
                last, ppl = p.stage, ""
            progress.update(
                task,
                total=max(p.cost_total, 1.0),
                completed=p.cost_done,
                trials=f"trials {p.done}/{p.total}",
                description=f"{last}{ppl}",
            )

        run = calibrate(*args, progress=update, **kwargs)
        progress.update(task, description="sweep done", completed=progress.tasks[0].total or 1)
    return run
