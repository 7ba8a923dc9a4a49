"""``lampe-calibrate --method NAME`` for a method other than LaMPE: sweep its main knob per
length, write ``OUT/<name>-<method>.json``, print the best value per length, the method's
default beside it, and the budget (evaluated points per length).

The same storage, resume and shared workers as LaMPE's sweep (``calibrate_method_model``).
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..methods import MODES, STOCK
from ..methods._names import LAMPE
from ._args import parse_floats, parse_sizes
from ._calibrate_run import open_run_storage, read_books, run_with_progress, start_run, without_passwords
from ._outputs import sqlite_url

__all__ = ["main_method"]

# Options that only mean something for LaMPE's (L, m) sweep, with their defaults.
_LAMPE_ONLY = {
    "mappings": None,
    "head": None,
    "tail": None,
    "attention_factor": ["1"],
    "mode": MODES[0],
    "base": STOCK,
    "search": "grid",
}


def check_method_options(args: argparse.Namespace) -> None:
    """Refuse an unknown method and LaMPE-only options with ``--method``, before anything is loaded."""
    from ..methods._tuning import TUNABLE

    tunable = TUNABLE.get(args.method)
    if tunable is None or tunable.build is None:
        known = ", ".join([LAMPE, *(name for name, t in TUNABLE.items() if t.build is not None)])
        raise ValueError(f"--method must be one of {known}, got {args.method!r}")
    for name, default in _LAMPE_ONLY.items():
        if getattr(args, name) != default:
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{flag} is LaMPE's; --method {args.method} sweeps its main knob (--points, --values)"
            )
    if args.points is not None and args.values:
        raise ValueError("--points and --values are exclusive: --values gives the knob values themselves")


def main_method(args: argparse.Namespace, argv: Sequence[str], out: Path) -> int:
    """The ``--method`` run of ``lampe-calibrate`` (``_calibrate.main`` checked the common options)."""
    from ..calibration._methods import DEFAULT_POINTS, calibrate_method_model, method_knobs, method_spec
    from ..calibration._profiles import save_profile
    from ..calibration._runs import profile_name

    check_method_options(args)
    values = parse_floats("--values", args.values) if args.values else None
    console, model, tokenizer, info, started = start_run(args)
    w = info.window
    method_knobs(args.method, w, w)  # an unknown method fails before any work
    lengths = parse_sizes("--lengths", args.lengths, w) if args.lengths else None
    spec = method_spec(args.method, w, lengths, args.points or DEFAULT_POINTS, values)
    name = f"{profile_name(info)}-{args.method}"
    books = read_books(console, args, tokenizer, spec.lengths)
    knob = method_knobs(args.method, w, spec.lengths[-1])[0]
    console.print(
        f"[bold]{name}[/]: {info.family}, W = {w}; {args.method}'s {knob.name} ({knob.description})"
    )
    console.print(f"data: {books.source.describe()}, {len(books.rows)} books")
    for length, grid in spec.values:
        console.print(f"L = {length}: {knob.name} = {', '.join(f'{v:g}' for v in grid)}")
    storage = open_run_storage(console, args, args.storage or sqlite_url(out / f"{name}.db"), out, name)
    run = run_with_progress(
        console,
        calibrate_method_model,
        model,
        tokenizer,
        args.method,
        storage=storage,
        spec=spec,
        books=books,
        study_name=args.study,
        batch_tokens=args.batch_tokens,
        chunk_size=args.chunk_size,
        command=shlex.join(["lampe-calibrate", *without_passwords(list(argv))]),
        seed=args.seed,
    )
    path = out / f"{name}.json"
    save_profile(run.profile, path)
    report(console, run.calibration)
    console.print(f"wrote {path} in {time.perf_counter() - started:.0f} s")
    return 0


def report(console: Any, cal: Any) -> None:
    """The table of a method's calibration, its single value and its budget."""
    from rich.table import Table

    name = cal.knob.name
    table = Table(title=f"{cal.method}: {name} per length")
    for column in ("L", f"best {name}", "PPL", f"default {name}", "PPL at default", "vanilla PPL", "points"):
        table.add_column(column, justify="right")
    for curve in cal.curves:
        default_ppl = curve.ppl_at(curve.default)
        # At an end of the values tried, the curve's other side was not seen: a bound only.
        edge = {curve.values[0]: " (lowest tried)", curve.values[-1]: " (highest tried)"}
        table.add_row(
            str(curve.length),
            f"{curve.best:g}{edge.get(curve.best, '') if len(curve.values) > 1 else ''}",
            f"{curve.ppl_at(curve.best):.4g}",
            f"{curve.default:g}",
            "not measured" if default_ppl is None else f"{default_ppl:.4g}",
            "—" if curve.vanilla is None else f"{curve.vanilla.ppl:.4g}",
            str(len(curve.values)),
        )
    console.print(table)
    console.print(
        f"best single {name} over the lengths: {cal.single:g} (the profile's rule at other lengths)"
    )
    counts = sorted({len(c.values) for c in cal.curves})
    shown = "-".join(str(n) for n in sorted({counts[0], counts[-1]}))
    console.print(f"budget: {shown} evaluated points per length (--points; LaMPE's default grid has 8 m)")
