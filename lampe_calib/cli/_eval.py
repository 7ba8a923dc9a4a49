"""``lampe-eval``: every context-extension method through one evaluator (docs/design.md §4).

    lampe-eval ppl --model M [--profile P] [--methods vanilla,pi,...] [--lengths 1W,2W,4W]
                   [--data FILE|DIR] [--samples N] [--seed S] [--json OUT] [--reference METHOD]
                   [--device cpu|cuda] [--dtype float32]
    lampe-eval passkey --model M [--profile P] [--methods ...] [--lengths ...] [--samples N] [--depths ...]
    lampe-eval ruler --model M [--profile P] [--methods ...] [--lengths ...] [--tasks niah_single,vt,...]
                     [--samples N] [--new-tokens N]

Each subcommand is an evaluation task (``_task.EvalTask``: its flags, checks, settings, cells and
tables), dispatched from ``TASKS``; this module runs any of them the same way.

Only ``--model`` is needed: the methods default to ``DEFAULT_METHODS`` (and ``lampe`` when the
model has a profile), the lengths to 1W and 2W, the data to the shipped PG-19 sample. A header
on stderr says what runs; progress goes to stderr (bars on a terminal, lines elsewhere), the
tables to stdout (one row per method, one column per length; ``ppl`` adds each method's PPL
ratio to the reference method with its paired bootstrap interval; ``passkey`` and ``ruler``
each rate with its Wilson interval). ``--json`` is checked before the model loads and written
cell by cell (``_results``); the same command resumes it. Bad input raises ``ValueError`` or
``KeyError`` naming the flag, which ``cli.run_cli`` turns into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from ..methods._method import LAMPE, ProfileUse
from ..methods._registry import METHOD_ENTRIES, METHODS, profile_method_names
from ._args import ArgumentParser as _Parser
from ._args import parse_names, parse_sizes
from ._task import EvalTask
from ._task_passkey import PasskeyTask
from ._task_ppl import PerplexityTask, with_ratios
from ._task_ruler import RulerTasks, parse_tasks

__all__ = [
    "TASKS",
    "main",
    "parse_lengths",
    "parse_methods",
    "parse_tasks",
    "with_ratios",
    "write_json_atomic",
]

# The subcommands, each an evaluation task (``_task.EvalTask``); a new task is one entry here.
TASKS: dict[str, EvalTask] = {task.name: task for task in (PerplexityTask(), PasskeyTask(), RulerTasks())}

# Methods that read a calibrated profile, and those that cannot run without one (LaMPE's m(L)).
PROFILE_METHODS = profile_method_names()
NEEDS_PROFILE = tuple(entry.name for entry in METHOD_ENTRIES if entry.profile is ProfileUse.REQUIRED)
# Without --methods: the stock model, a RoPE rescaling, a position-grouping method, and LaMPE
# when the model has a profile; a few minutes on the reference model at 1W and 2W.
DEFAULT_METHODS = ("vanilla", "yarn", "selfextend")


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


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (``_profiles.write_atomic``)."""
    from ..calibration._profiles import write_atomic

    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _common_arguments(sub: _Parser) -> None:
    """The flags every task takes."""
    sub.add_argument(
        "--model",
        default="reference",
        help="alias, hub id, local directory or .gguf file (default: the shipped reference model)",
    )
    sub.add_argument(
        "--profile", help="calibrated profile: a shipped name or a JSON path (default: the model's own)"
    )
    sub.add_argument(
        "--allow-transfer",
        action="store_true",
        help="apply a profile fitted on a model whose position facts (family, window, RoPE, "
        "head size) differ from this one's (refused without it)",
    )
    sub.add_argument(
        "--methods",
        help=f"comma-separated: {','.join(METHODS)} "
        f"(default: {','.join(DEFAULT_METHODS)}, and lampe when the model has a profile)",
    )
    sub.add_argument(
        "--lengths", default="1W,2W", help="comma-separated tokens, e.g. 256,2W,4W,8K (default 1W,2W)"
    )
    sub.add_argument(
        "--json",
        help="write the results to this JSON file, each cell as it finishes; "
        "the same command again resumes it",
    )
    sub.add_argument("--seed", type=int, default=0, help="book selection / passkey keys (default 0)")
    sub.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    sub.add_argument("--dtype", help="float32, bfloat16 or float16 (default: float32 on CPU, bf16 on CUDA)")


def _parser() -> _Parser:
    parser = _Parser(prog="lampe-eval", description="Compare context-extension methods on one model.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for task in TASKS.values():
        sub = commands.add_parser(task.name, help=task.help)
        _common_arguments(sub)
        task.add_arguments(sub)
    return parser


def _load_profile(args: argparse.Namespace, methods: Sequence[str], alias: str | None, window: int) -> Any:
    """The profile named by ``--profile``, or the one shipped for the model's alias; None when
    no selected method reads one (a profile given with ``--profile`` is always read: it may
    calibrate a method other than LaMPE, which ``method_context`` applies)."""
    if args.profile is None and not any(name in PROFILE_METHODS for name in methods):
        return None
    from ..calibration._profiles import load_profile

    name = args.profile or alias
    if name is None:
        if needing := [name for name in methods if name in NEEDS_PROFILE]:
            raise ValueError(f"--profile: method {needing[0]!r} needs a calibrated profile for this model")
        return None
    try:
        profile = load_profile(name)
    except (KeyError, FileNotFoundError, ValueError) as error:
        if args.profile is None and not any(name in NEEDS_PROFILE for name in methods):
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


def _check(args: argparse.Namespace, task: EvalTask) -> tuple[str, ...] | None:
    """Everything that can be checked without the model, so that a typo fails fast; returns the
    ``--methods`` (None when not given)."""
    methods = parse_methods(args.methods) if args.methods is not None else None
    parse_lengths(args.lengths, window=1024)  # syntax only; multiples of W are resolved later
    if args.samples is not None and args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    task.check(args, methods)
    return methods


def _open_results(args: argparse.Namespace, task: EvalTask, argv: Sequence[str] | None) -> tuple[Any, Any]:
    """The ``--json`` results file, checked (and read back) before the model loads, and the dtype."""
    from ..models._loading import resolve_device_dtype
    from ._results import ResultsFile

    _, dtype = resolve_device_dtype(args.device, args.dtype)
    command = shlex.join(["lampe-eval", *(sys.argv[1:] if argv is None else argv)])
    # What every cell's value depends on (``_results``): these, the task's own, and the profile.
    settings = {"command": args.command, "model": args.model, "samples": args.samples, "seed": args.seed}
    settings |= {"dtype": str(dtype).removeprefix("torch."), **task.settings(args)}
    header = {"model": args.model, "command": command}
    return ResultsFile(args.json, settings, header, task.finish(args)), dtype


def _settle_profile(
    args, model: Any, alias: str | None, window: int, methods, results
) -> tuple[Any, str | None]:
    """The profile the methods read, checked against the model and recorded in ``results``;
    returns it and the name the header shows."""
    profile = _load_profile(args, methods, alias, window)
    if profile is not None:  # fitted on this model's position facts, or an explicit transfer
        try:
            profile.check_model(model, allow_transfer=args.allow_transfer)
        except ValueError as error:
            raise ValueError(f"--profile {args.profile or alias!r}: {error}") from None
    shown = None if profile is None else (args.profile or getattr(profile, "alias", None) or alias)
    results.set_profile(shown)
    results.header["profile"] = results.settings["profile"]
    results.refresh()
    return profile, shown


def _default_methods(args, alias: str | None, window: int) -> tuple[str, ...]:
    """``DEFAULT_METHODS``, with ``lampe`` when a profile is found for the model."""
    found = _load_profile(args, ("lampe-fixed",), alias, window) is not None
    return DEFAULT_METHODS + ((LAMPE,) if found else ())


def _header(
    args, task: EvalTask, info, data: str, shown: str | None, methods, lengths, results, cells
) -> str:
    """What the run is about to do, before it starts: model, data, profile, methods, lengths."""
    lines = [
        f"lampe-eval {args.command}",
        f"  model    {args.model} (W={info.window}, {results.settings['dtype']} on {args.device})",
        f"  data     {data}",
        f"  profile  {shown if shown is not None else 'none (no method here reads one)'}",
        f"  methods  {', '.join(methods)}" + task.methods_note(args),
        f"  lengths  {', '.join(str(n) for n in lengths)}",
    ]
    if results.path is not None:
        done = sum(results.get(cell.key) is not None for cell in cells)
        lines.append(f"  json     {results.path} ({done} of {len(cells)} cells already there)")
    return "\n".join(lines)


def _run_cells(cells: Sequence[Any], results: Any) -> None:
    """Run the cells ``results`` does not hold yet, each written as it finishes, with progress."""
    from ._progress import console, progress_for

    with progress_for(console(stderr=True)) as progress:
        for key, label, total, run in cells:
            if results.get(key) is not None:
                continue
            bar = progress.add_task(label, total=total)
            results.add(run(lambda done, _total, t=bar: progress.update(t, completed=done)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lampe-eval``; returns the exit code (errors are raised for ``cli.run_cli``)."""
    args = _parser().parse_args(argv)
    task = TASKS[args.command]
    methods = _check(args, task)
    results, dtype = _open_results(args, task, argv)

    from ..methods._registry import method_context
    from ..models import load_model, model_info
    from ._progress import console

    model, tokenizer = load_model(args.model, device=args.device, dtype=dtype)
    info = model_info(model)
    alias = getattr(info, "alias", None)
    lengths = parse_lengths(args.lengths, info.window)
    if methods is None:
        methods = _default_methods(args, alias, info.window)
    results.header |= task.begin(args, methods)
    profile, shown = _settle_profile(args, model, alias, info.window, methods, results)
    _preflight(model, info.window, methods, lengths, profile)

    def context_for(method: str, length: int) -> Any:
        return lambda: method_context(method, model, info.window, length, profile)

    prepared = task.prepare(args, model, tokenizer, methods, lengths, context_for)
    header = _header(args, task, info, prepared.data, shown, methods, lengths, results, prepared.cells)
    print(header, file=sys.stderr, flush=True)
    _run_cells(prepared.cells, results)
    rows = [results.get(cell.key) for cell in prepared.cells]
    task.print_tables(console(), args, f"{args.model} (W={info.window})", methods, lengths, rows)
    return 0
