"""``lampe-eval``: every context-extension method through one evaluator (DESIGN §4).

    lampe-eval ppl --model M [--profile P] --methods vanilla,pi,... --lengths 1W,2W,4W --data FILE|DIR
                   [--samples N] [--seed S] [--json OUT] [--device cpu|cuda] [--dtype float32]
    lampe-eval passkey --model M [--profile P] --methods ... --lengths ... [--samples N] [--depths ...]
    lampe-eval ruler --model M [--profile P] --methods ... --lengths ... [--tasks niah_single,vt,...]
                     [--samples N] [--new-tokens N]

A table goes to stdout (one row per method, one column per length), progress to stderr;
``--json`` is written atomically once everything has run. Bad input raises ``ValueError`` or
``KeyError`` naming the flag, which ``cli.run_cli`` turns into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..methods._registry import METHODS
from ._args import ArgumentParser as _Parser
from ._args import parse_depths, parse_names, parse_sizes

__all__ = ["main", "parse_lengths", "parse_methods", "parse_tasks", "write_json_atomic"]

# Methods that read a calibrated profile; "lampe" cannot run without one.
PROFILE_METHODS = ("lampe-fixed", "lampe", "lampe-yarn", "lampe-ntk")


def parse_lengths(text: str, window: int) -> tuple[int, ...]:
    """``--lengths``: comma-separated token counts (``parse_sizes``), each once, each >= 2.

    Example: ``parse_lengths("256, 2W,4w,8K", window=256)`` -> ``(256, 512, 1024, 8192)``.
    """
    lengths = tuple(dict.fromkeys(parse_sizes("--lengths", [text], window)))
    short = [n for n in lengths if n < 2]
    if short:
        raise ValueError(f"--lengths: {short[0]} tokens is too short (at least 2)")
    return lengths


def parse_methods(text: str) -> tuple[str, ...]:
    """``--methods``: comma-separated names from the registry, in the given order.

    Example: ``parse_methods("vanilla, yarn,lampe")`` -> ``("vanilla", "yarn", "lampe")``.
    """
    return parse_names(text, "--methods", "method", METHODS)


def parse_tasks(text: str) -> tuple[str, ...]:
    """``--tasks``: comma-separated RULER task names (``_ruler.TASKS``), in the given order.

    Example: ``parse_tasks("vt, niah_single")`` -> ``("vt", "niah_single")``.
    """
    from ..evaluation._ruler import TASKS

    return parse_names(text, "--tasks", "task", TASKS)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (``_profiles.write_atomic``)."""
    from ..calibration._profiles import write_atomic

    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _parser() -> _Parser:
    parser = _Parser(prog="lampe-eval", description="Compare context-extension methods on one model.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands_help = (
        ("ppl", "perplexity of books"),
        ("passkey", "passkey retrieval accuracy"),
        ("ruler", "RULER-style synthetic tasks (needles, variable tracking, common words)"),
    )
    for name, help_text in commands_help:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--model", required=True, help="alias, hub id, local directory or .gguf file")
        sub.add_argument("--profile", help="calibrated profile: a shipped name or a JSON path")
        sub.add_argument(
            "--allow-transfer",
            action="store_true",
            help="apply a profile fitted on a model whose position facts (family, window, RoPE, "
            "head size) differ from this one's (refused without it)",
        )
        sub.add_argument("--methods", required=True, help=f"comma-separated: {','.join(METHODS)}")
        sub.add_argument("--lengths", required=True, help="comma-separated tokens, e.g. 256,2W,4W,8K")
        sub.add_argument("--json", help="also write the results to this JSON file")
        sub.add_argument("--seed", type=int, default=0, help="book selection / passkey keys (default 0)")
        sub.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
        sub.add_argument(
            "--dtype", help="float32, bfloat16 or float16 (default: float32 on CPU, bf16 on CUDA)"
        )
        if name == "ppl":
            sub.add_argument(
                "--data",
                required=True,
                help="JSONL file, directory of JSONL/parquet, pg19[:SPLIT] or code:[train:|test:]DIR",
            )
            sub.add_argument("--samples", type=int, help="books (default: all, up to 8)")
        elif name == "passkey":
            sub.add_argument("--samples", type=int, default=2, help="keys per depth (default 2)")
            sub.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="key depths in [0, 1]")
            sub.add_argument("--new-tokens", type=int, default=10, help="tokens generated per prompt")
        else:
            sub.add_argument(
                "--tasks", default="niah_single,niah_multikey,vt,cwe", help="comma-separated RULER tasks"
            )
            sub.add_argument("--samples", type=int, default=4, help="prompts per task and length (default 4)")
            sub.add_argument(
                "--new-tokens",
                type=int,
                help="tokens generated per prompt (default per task: niah 16, vt 32, cwe 40)",
            )
    return parser


def _check_output(path: str | None) -> None:
    if path is not None and Path(path).expanduser().is_dir():
        raise ValueError(f"--json {path!r}: is a directory; give a file name such as results.json")
    if path is not None and not Path(path).expanduser().parent.is_dir():
        raise ValueError(f"--json {path!r}: directory {str(Path(path).parent)!r} does not exist")


def _load_profile(args: argparse.Namespace, methods: Sequence[str], alias: str | None, window: int) -> Any:
    """The profile named by ``--profile``, or the one shipped for the model's alias; None when
    no selected method reads one."""
    if not any(name in PROFILE_METHODS for name in methods):
        return None
    from ..calibration._profiles import load_profile

    name = args.profile or alias
    if name is None:
        if "lampe" in methods:
            raise ValueError("--profile: method 'lampe' needs a calibrated profile for this model")
        return None
    try:
        profile = load_profile(name)
    except (KeyError, FileNotFoundError, ValueError) as error:
        if args.profile is None and "lampe" not in methods:
            return None
        message = error.args[0] if error.args else error
        raise ValueError(f"--profile {name!r}: {message}") from error
    return profile


def _preflight(model: Any, window: int, methods: Sequence[str], lengths: Sequence[int], profile: Any) -> None:
    """Enter and leave every (method, length) context once, so that a method that cannot run
    on this model fails before any evaluation, naming itself."""
    from ..methods._registry import method_context

    for method in methods:
        for length in lengths:
            try:
                with method_context(method, model, window, length, profile):
                    pass
            except ValueError as error:
                message = error.args[0] if error.args else error
                raise ValueError(f"--methods {method} at L={length}: {message}") from error


def _table(
    title: str | None, methods: Sequence[str], lengths: Sequence[int], cells: dict, best: Callable
) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("method")
    for length in lengths:
        table.add_column(f"L={length}", justify="right")
    # The best value of each column in bold, unless the whole column ties.
    columns = {length: [cells[m, length][0] for m in methods] for length in lengths}
    winners = {n: best(v) if len(set(v)) > 1 else None for n, v in columns.items()}
    for method in methods:
        row = []
        for length in lengths:
            value, text = cells[method, length]
            row.append(f"[bold]{text}[/bold]" if value == winners[length] else text)
        table.add_row(method, *row)
    return table


def _run_ppl(args, model, tokenizer, window, methods, lengths, profile, progress) -> list[dict]:
    from ..evaluation import load_books
    from ..evaluation._perplexity import evaluate_perplexity
    from ..methods._registry import method_context

    try:
        books = load_books(
            args.data, tokenizer, max_length=max(lengths), samples=args.samples, seed=args.seed
        )
    except ValueError as error:
        message = str(error.args[0] if error.args else error)
        if message.startswith("--"):
            raise
        given = f" (--samples {args.samples})" if args.samples is not None else ""
        raise ValueError(f"--data {args.data.location!r}{given}: {message}") from error
    results = []
    for length in lengths:
        selected = books.at_length(length)
        for method in methods:
            task = progress.add_task(f"{method} L={length}", total=len(selected.tokens))
            result = evaluate_perplexity(
                model,
                selected.tokens,
                context=lambda m=method, n=length: method_context(m, model, window, n, profile),
                chunk_size=1024,
                progress=lambda done, total, t=task: progress.update(t, completed=done),
            )
            results.append(
                {
                    "method": method,
                    "length": length,
                    "ppl": result.ppl,
                    "tokens": result.total_tokens,
                    "books": len(selected.tokens),
                }
            )
    return results


def _method_hooks(
    progress, label, total, model, window, method, length, profile
) -> tuple[Callable, Callable]:
    """The ``context`` factory and ``progress`` callback of one (method, length) generation run."""
    from ..methods._registry import method_context

    bar = progress.add_task(label, total=total)
    return (
        lambda: method_context(method, model, window, length, profile),
        lambda done, _total: progress.update(bar, completed=done),
    )


def _run_passkey(args, model, tokenizer, window, methods, lengths, profile, progress) -> list[dict]:
    from ..evaluation._passkey import evaluate_passkey, passkey_prompts

    depths = parse_depths(args.depths)
    results = []
    for length in lengths:
        try:
            prompts = passkey_prompts(tokenizer, length - args.new_tokens, depths, args.samples, args.seed)
        except ValueError as error:
            raise ValueError(f"--lengths {length}: {error}") from error
        for method in methods:
            label = f"{method} L={length}"
            context, done = _method_hooks(
                progress, label, len(prompts), model, window, method, length, profile
            )
            result = evaluate_passkey(
                model, tokenizer, prompts, length, context, max_new_tokens=args.new_tokens, progress=done
            )
            results.append(
                {
                    "method": method,
                    "length": length,
                    "accuracy": result.accuracy,
                    "correct": result.correct,
                    "trials": len(result.trials),
                }
            )
    return results


def _run_ruler(args, model, tokenizer, window, methods, lengths, profile, progress) -> list[dict]:
    from ..evaluation._ruler import DEFAULT_NEW_TOKENS, RulerSources, evaluate_ruler, ruler_samples

    sources = RulerSources.shipped()
    tasks = parse_tasks(args.tasks)
    new_tokens = {t: args.new_tokens if args.new_tokens is not None else DEFAULT_NEW_TOKENS[t] for t in tasks}
    prompts = {}  # every prompt first, so a length too short for a task fails before any generation
    for task in tasks:
        for length in lengths:
            try:
                prompts[task, length] = ruler_samples(
                    tokenizer, task, length - new_tokens[task], args.samples, args.seed, sources
                )
            except ValueError as error:
                raise ValueError(f"--lengths {length}: {task}: {error}") from error
    results = []
    for task in tasks:
        new = new_tokens[task]
        for length in lengths:
            samples = prompts[task, length]
            for method in methods:
                label = f"{task} {method} L={length}"
                context, done = _method_hooks(
                    progress, label, len(samples), model, window, method, length, profile
                )
                result = evaluate_ruler(model, tokenizer, samples, length, context, new, progress=done)
                results.append(
                    {
                        "task": task,
                        "method": method,
                        "length": length,
                        "accuracy": result.accuracy,
                        "samples": len(samples),
                    }
                )
    return results


def _print_ruler(console: Any, title: str, methods, lengths, results: list[dict]) -> None:
    """One table per task (mean score per method and length, in %)."""
    for task in dict.fromkeys(r["task"] for r in results):
        cells = {
            (r["method"], r["length"]): (r["accuracy"], f"{100 * r['accuracy']:.0f}%")
            for r in results
            if r["task"] == task
        }
        samples = next(r["samples"] for r in results if r["task"] == task)
        console.print(f"{title}, {task} ({samples} prompts per cell)")
        console.print(_table(None, methods, lengths, cells, max))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lampe-eval``; returns the exit code (errors are raised for ``cli.run_cli``)."""
    args = _parser().parse_args(argv)
    # Everything that can be checked without the model is checked first, so a typo fails fast.
    methods = parse_methods(args.methods)
    parse_lengths(args.lengths, window=1024)  # syntax only; multiples of W are resolved below
    if args.samples is not None and args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    _check_output(args.json)
    if args.command == "ppl":
        from ..evaluation import resolve_data

        args.data = resolve_data(args.data)
    elif args.command == "passkey":
        parse_depths(args.depths)
    else:
        parse_tasks(args.tasks)
    if args.command != "ppl" and args.new_tokens is not None and args.new_tokens < 1:
        raise ValueError(f"--new-tokens must be >= 1, got {args.new_tokens}")

    from rich.console import Console
    from rich.progress import Progress

    from ..models import load_model, model_info

    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    info = model_info(model)
    lengths = parse_lengths(args.lengths, info.window)
    profile = _load_profile(args, methods, getattr(info, "alias", None), info.window)
    if profile is not None:  # fitted on this model's position facts, or an explicit transfer
        try:
            profile.check_model(model, allow_transfer=args.allow_transfer)
        except ValueError as error:
            raise ValueError(f"--profile {args.profile or info.alias!r}: {error}") from None
    _preflight(model, info.window, methods, lengths, profile)
    run = {"ppl": _run_ppl, "passkey": _run_passkey, "ruler": _run_ruler}[args.command]
    with Progress(console=Console(stderr=True), transient=True) as progress:
        results = run(args, model, tokenizer, info.window, methods, lengths, profile, progress)

    console = Console()
    if args.command == "ruler":
        _print_ruler(console, f"{args.model} (W={info.window}): RULER accuracy", methods, lengths, results)
        if args.json is not None:
            _write_results(args, argv, profile, results)
        return 0
    cells = {}
    for r in results:
        if args.command == "ppl":
            cells[r["method"], r["length"]] = (
                r["ppl"],
                f"{r['ppl']:.2f}" if math.isfinite(r["ppl"]) else "inf",
            )
        else:
            cells[r["method"], r["length"]] = (
                r["accuracy"],
                f"{100 * r['accuracy']:.0f}% ({r['correct']}/{r['trials']})",
            )
    title = f"{args.model} (W={info.window}): " + (
        "perplexity" if args.command == "ppl" else "passkey accuracy"
    )
    console.print(title)  # a line of its own: a table title would wrap to the table's width
    console.print(_table(None, methods, lengths, cells, min if args.command == "ppl" else max))
    if args.json is not None:
        _write_results(args, argv, profile, results)
    return 0


def _write_results(args: argparse.Namespace, argv: Sequence[str] | None, profile: Any, results: list) -> None:
    """``--json``: the results with what produced them (the profile, the command)."""
    command = shlex.join(["lampe-eval", *(sys.argv[1:] if argv is None else argv)])
    shown = None if profile is None else (args.profile or getattr(profile, "alias", None))
    record = {"model": args.model, "profile": shown, "command": command, "results": results}
    write_json_atomic(Path(args.json).expanduser(), record)
