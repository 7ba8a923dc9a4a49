"""``lampe-calibrate``: sweep PPL over (L, m), fit m(L), write ``OUT/<name>.json`` and ``.png``.

The UI layer: argument parsing, rich progress with an ETA over trials, the closing table.
Everything else is ``calibrate_model``. User errors raise ValueError/KeyError/... which
``cli.run_cli`` prints as one line with exit code 2; nothing is written before the model,
the data and every option have been checked.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..methods._names import LAMPE
from ._args import parse_sizes
from ._calibrate_args import build_parser, check_fit_possible, check_options
from ._calibrate_fit import report, start_from_previous_fit
from ._calibrate_run import read_books, run_with_progress, start_run
from ._calibrate_run import without_passwords as _without_passwords
from ._outputs import check_storage, check_targets, resolve_out, sqlite_url, start_from_shipped

__all__ = ["build_parser", "main", "parse_sizes"]


def main(argv: Sequence[str] | None = None) -> int:
    """``lampe-calibrate``: options and outputs checked, the model loaded, the sweep run and
    fitted (``calibrate_model``), the profile and its figure written."""
    args = build_parser().parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    factors = check_options(args)
    out = resolve_out(args.out, args.update_shipped)
    if args.method != LAMPE:
        if args.storage:  # a bad, read-only or damaged storage fails before the model loads
            check_storage(args.storage, args.update_shipped, default=False)
        from ._calibrate_method import main_method

        return main_method(args, argv, out)
    expected = _check_outputs(args, out)
    console, model, tokenizer, info, started = start_run(args)
    spec, name = _sweep_spec(args, info, factors, out, expected)
    spec = start_from_previous_fit(console, spec, out / f"{name}.json")
    rope = f"RoPE θ = {info.rope_theta:g} ({info.rope_type})"
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    console.print(f"[bold]{name}[/]: {info.family}, W = {info.window}, {rope}; {args.device}, {dtype}")
    books = read_books(console, args, tokenizer, spec.lengths)
    console.print(f"data: {books.source.describe()}, {len(books.rows)} books")
    console.print(
        f"sweep: L = {', '.join(map(str, spec.lengths))}; m = {', '.join(map(str, spec.mappings))}; "
        f"s1 = {','.join(map(str, spec.heads))}, s2 = {','.join(map(str, spec.tails))}; {spec.search} search"
    )
    storage = _open_storage(
        console,
        args,
        out,
        name,
        expected,
        lambda: _shipped_study(console, args, out, name, model, books, spec),
    )
    run = _calibrate(console, args, argv, model, tokenizer, storage, spec, books)
    _write(console, run, out, name, started)
    return 0


def _check_outputs(args: argparse.Namespace, out: Path) -> str:
    """Refuse what the run could not write, before the model loads: LaMPE-only options misused,
    a read-only profile, a bad, read-only or damaged storage (the default one too, when it
    exists: the name after loading is the same for an alias or a path). Returns the expected
    profile name."""
    if args.points is not None or args.values:
        raise ValueError("--points and --values set another method's knob: LaMPE's grid is --mappings")
    expected = _expected_name(args.model, args.base)
    check_targets(out, expected)
    check_storage(
        args.storage or sqlite_url(out / f"{expected}.db"), args.update_shipped, default=not args.storage
    )
    return expected


def _sweep_spec(
    args: argparse.Namespace, info: Any, factors: list[float], out: Path, expected: str
) -> tuple[Any, str]:
    """The sweep the options ask for on a model of ``info``'s window, and the profile name (its
    outputs checked again when it is not the ``expected`` one)."""
    from ..calibration._calibrate import default_spec
    from ..calibration._runs import profile_name

    w = info.window
    overrides: dict[str, Any] = {
        "mode": args.mode,
        "base": args.base,
        "search": args.search,
        "seed": args.seed,
        "evaluations": args.evaluations,
        "attention_factors": tuple(factors),
        "initial_points": min(3, args.evaluations),
    }
    for option, field in (
        ("lengths", "lengths"),
        ("mappings", "mappings"),
        ("head", "heads"),
        ("tail", "tails"),
    ):
        if getattr(args, option):
            overrides[field] = tuple(parse_sizes("--" + option, getattr(args, option), w))
    try:
        spec = default_spec(w, **overrides)
    except ValueError as error:
        raise ValueError(f"bad sweep options: {error}") from None
    name = profile_name(info, args.base)
    if len(spec.lengths) < 3 and not args.no_fit:
        check_fit_possible(list(map(str, spec.lengths)))
    if name != expected:
        check_targets(out, name)
    return spec, name


def _open_storage(
    console: Any, args: argparse.Namespace, out: Path, name: str, expected: str, before_open: Any
) -> Any:
    from ._calibrate_run import open_run_storage

    url = args.storage or sqlite_url(out / f"{name}.db")
    if name != expected:
        check_storage(url, args.update_shipped, default=not args.storage)
    return open_run_storage(console, args, url, out, name, before_open)


def _shipped_study(
    console: Any, args: argparse.Namespace, out: Path, name: str, model: Any, books: Any, spec: Any
) -> None:
    """A shipped study of this very sweep, copied to ``OUT`` to start from (the default storage only)."""
    from ..calibration._runs import study_signature

    if args.storage or args.study:
        return
    copied = start_from_shipped(out, name, study_signature(model, books, spec))
    if copied is not None:
        console.print(f"storage: starting from the shipped study {copied} (copied; it stays as it is)")


def _calibrate(
    console: Any,
    args: argparse.Namespace,
    argv: list[str],
    model: Any,
    tokenizer: Any,
    storage: Any,
    spec: Any,
    books: Any,
) -> Any:
    """The sweep run (or resumed) and fitted, under the progress bar."""
    from ..calibration._calibrate import calibrate_model

    return run_with_progress(
        console,
        calibrate_model,
        model,
        tokenizer,
        storage=storage,
        spec=spec,
        books=books,
        study_name=args.study,
        c_mode=args.c_mode,
        refine=not args.no_refine,
        fit=not args.no_fit,
        allow_transfer=args.allow_transfer,
        resamples=args.bootstrap,
        batch_tokens=args.batch_tokens,
        chunk_size=args.chunk_size,
        command=shlex.join(["lampe-calibrate", *_without_passwords(argv)]),
        seed=args.seed,
    )


def _write(console: Any, run: Any, out: Path, name: str, started: float) -> None:
    """``OUT/<name>.json`` and ``.png`` written together, and the report."""
    from ..calibration._plots import render_profile
    from ..calibration._profiles import profile_bytes, user_profiles_dir, write_together

    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    figure = render_profile(run.profile)  # first: a figure that fails to render replaces nothing
    write_together([(json_path, profile_bytes(run.profile)), (png_path, figure)])  # both or neither
    report(console, run)
    console.print(f"wrote {json_path} and {png_path} in {time.perf_counter() - started:.0f} s")
    if out == user_profiles_dir().resolve():
        console.print(f"load_profile({name!r}) and --profile {name} now find it (ahead of a shipped one)")


def _expected_name(model: str, base: str) -> str:
    """The profile name ``profile_name`` will give the model, from ``--model`` alone (an alias,
    else the last part of the path or hub id); checked again once the model is loaded."""
    from ..methods import STOCK
    from ..models._registry import MODELS

    name = model if model in MODELS else Path(model.rstrip("/")).name.removesuffix(".gguf") or model
    return name if base == STOCK else f"{name}-{base}"
