"""``lampe-eval``: every context-extension method through one evaluator (docs/design.md §4).

    lampe-eval ppl --model M [--profile P] [--methods vanilla,pi,...] [--lengths 1W,2W,4W]
                   [--data FILE|DIR] [--samples N] [--seed S] [--json OUT] [--reference METHOD]
                   [--device cpu|cuda] [--dtype float32]
    lampe-eval passkey --model M [--profile P] [--methods ...] [--lengths ...] [--samples N] [--depths ...]
    lampe-eval ruler --model M [--profile P] [--methods ...] [--lengths ...] [--tasks niah_single,vt,...]
                     [--samples N] [--new-tokens N]

Only ``--model`` is needed: the methods default to ``DEFAULT_METHODS`` (and ``lampe`` when the
model has a profile), the lengths to 1W and 2W, the data to the shipped PG-19 sample. A header
on stderr says what runs; progress goes to stderr (bars on a terminal, lines elsewhere), the
tables to stdout (one row per method, one column per length; ``ppl`` adds each method's PPL
ratio to the reference method with its paired bootstrap interval). ``--json`` is checked before
the model loads and written cell by cell (``_results``); the same command resumes it. Bad input
raises ``ValueError`` or ``KeyError`` naming the flag, which ``cli.run_cli`` turns into one line
and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..methods._registry import METHODS
from ._args import ArgumentParser as _Parser
from ._args import parse_depths, parse_names, parse_sizes

__all__ = ["main", "parse_lengths", "parse_methods", "parse_tasks", "with_ratios", "write_json_atomic"]

# Methods that read a calibrated profile; "lampe" cannot run without one.
PROFILE_METHODS = ("lampe-fixed", "lampe", "lampe-yarn", "lampe-ntk")
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
        sub.add_argument(
            "--dtype", help="float32, bfloat16 or float16 (default: float32 on CPU, bf16 on CUDA)"
        )
        if name == "ppl":
            sub.add_argument(
                "--data",
                help="JSONL file, directory of JSONL/parquet, pg19[:SPLIT] or code:[train:|test:]DIR "
                "(default: the PG-19 sample shipped in the package)",
            )
            sub.add_argument("--samples", type=int, help="books (default: all, up to 8)")
            sub.add_argument(
                "--reference",
                help="the method PPL ratios are taken to (default: vanilla if run, else the first method)",
            )
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


def _load_profile(args: argparse.Namespace, methods: Sequence[str], alias: str | None, window: int) -> Any:
    """The profile named by ``--profile``, or the one shipped for the model's alias; None when
    no selected method reads one (a profile given with ``--profile`` is always read: it may
    calibrate a method other than LaMPE, which ``method_context`` applies)."""
    if args.profile is None and not any(name in PROFILE_METHODS for name in methods):
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
    title: str | None, methods: Sequence[str], lengths: Sequence[int], cells: dict, best: Callable | None
) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("method")
    for length in lengths:
        table.add_column(f"L={length}", justify="right")
    # The best value of each column in bold, unless the whole column ties.
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


# A cell of the run: its key (``_results.cell_key``), its progress label and size, and the
# function that evaluates it, called with the progress callback, returning its row.
Cell = tuple[tuple, str, int, Callable[[Callable[[int, int], None]], dict]]


def _ppl_cells(args, model, tokenizer, window, methods, lengths, profile) -> list[Cell]:
    from ..evaluation import load_books
    from ..evaluation._perplexity import evaluate_perplexity
    from ..methods._registry import method_context

    try:
        books = load_books(
            args.data, tokenizer, max_length=max(lengths), samples=args.samples, seed=args.seed
        )
        selected = {length: books.at_length(length) for length in lengths}
    except ValueError as error:
        from ..evaluation._sources import CacheNotWritable

        message = str(error.args[0] if error.args else error)
        if message.startswith("--") or isinstance(error, CacheNotWritable):
            raise
        given = f" (--samples {args.samples})" if args.samples is not None else ""
        raise ValueError(f"--data {args.data.location!r}{given}: {message}") from error

    def cell(method: str, length: int) -> Cell:
        tokens = selected[length].tokens

        def run(progress: Callable[[int, int], None]) -> dict:
            result = evaluate_perplexity(
                model,
                tokens,
                context=lambda: method_context(method, model, window, length, profile),
                chunk_size=1024,
                progress=progress,
            )
            return {
                "method": method,
                "length": length,
                "ppl": result.ppl,
                "tokens": result.total_tokens,
                "books": len(tokens),
                "book_nll": list(result.nll),
                "book_tokens": list(result.tokens),
                "block_nll": [list(b) for b in result.block_nll],
                "block_tokens": [list(b) for b in result.block_tokens],
            }

        return (None, method, length), f"{method} L={length}", len(tokens), run

    # The reference first at each length, so every later cell's ratio can be shown at once.
    order = sorted(methods, key=lambda m: m != args.reference)
    return [cell(method, length) for length in lengths for method in order]


def with_ratios(rows: list[dict], reference: str, seed: int) -> list[dict]:
    """``rows`` with each perplexity row's ratio to the ``reference`` method's row of its length
    and the paired bootstrap 95 % interval (``_bootstrap``); rows without a reference row, or
    without per-block data, are left without."""
    from ..evaluation._bootstrap import paired_ratio, paired_ratio_interval

    references = {r["length"]: r for r in rows if r["method"] == reference and "block_nll" in r}
    out = []
    for row in rows:
        row = {k: v for k, v in row.items() if k not in ("ratio", "ci")}
        base = references.get(row["length"])
        if base is not None and "block_nll" in row:
            paired = (row["block_nll"], base["block_nll"], row["block_tokens"])
            if row["block_tokens"] != base["block_tokens"]:
                raise ValueError(
                    f"--json: the {row['method']} and {reference} rows at L={row['length']} "
                    "were measured on different books"
                )
            row["ratio"] = paired_ratio(*paired)
            row["ci"] = list(paired_ratio_interval(*paired, seed=seed))
        out.append(row)
    return out


def _passkey_cells(args, model, tokenizer, window, methods, lengths, profile) -> list[Cell]:
    from ..evaluation._passkey import evaluate_passkey, passkey_prompts
    from ..methods._registry import method_context

    depths = parse_depths(args.depths)
    prompts = {}
    for length in lengths:
        try:
            prompts[length] = passkey_prompts(
                tokenizer, length - args.new_tokens, depths, args.samples, args.seed
            )
        except ValueError as error:
            raise ValueError(f"--lengths {length}: {error}") from error

    def cell(method: str, length: int) -> Cell:
        def run(progress: Callable[[int, int], None]) -> dict:
            result = evaluate_passkey(
                model,
                tokenizer,
                prompts[length],
                length,
                lambda: method_context(method, model, window, length, profile),
                max_new_tokens=args.new_tokens,
                progress=progress,
            )
            return {
                "method": method,
                "length": length,
                "accuracy": result.accuracy,
                "correct": result.correct,
                "trials": len(result.trials),
            }

        return (None, method, length), f"{method} L={length}", len(prompts[length]), run

    return [cell(method, length) for length in lengths for method in methods]


def _ruler_cells(args, model, tokenizer, window, methods, lengths, profile) -> list[Cell]:
    from ..evaluation._ruler import DEFAULT_NEW_TOKENS, RulerSources, evaluate_ruler, ruler_samples
    from ..methods._registry import method_context

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

    def cell(task: str, method: str, length: int) -> Cell:
        samples = prompts[task, length]

        def run(progress: Callable[[int, int], None]) -> dict:
            context = lambda: method_context(method, model, window, length, profile)  # noqa: E731
            result = evaluate_ruler(
                model, tokenizer, samples, length, context, new_tokens[task], progress=progress
            )
            return {
                "task": task,
                "method": method,
                "length": length,
                "accuracy": result.accuracy,
                "samples": len(samples),
            }

        return (task, method, length), f"{task} {method} L={length}", len(samples), run

    return [cell(t, m, n) for t in tasks for n in lengths for m in methods]


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


def _settings(args: argparse.Namespace, dtype: str) -> dict[str, Any]:
    """What every cell's value depends on, for ``--json`` resume (``_results``)."""
    settings = {"command": args.command, "model": args.model, "samples": args.samples, "seed": args.seed}
    settings["dtype"] = dtype
    if args.command == "ppl":
        settings["data"] = args.data.describe()
    elif args.command == "passkey":
        settings |= {"depths": list(parse_depths(args.depths)), "new_tokens": args.new_tokens}
    else:
        settings["new_tokens"] = args.new_tokens
    return settings


def _default_methods(args, alias: str | None, window: int) -> tuple[str, ...]:
    """``DEFAULT_METHODS``, with ``lampe`` when a profile is found for the model."""
    found = _load_profile(args, ("lampe-fixed",), alias, window) is not None
    return DEFAULT_METHODS + (("lampe",) if found else ())


def _header(args, info, data: str, shown: str | None, methods, lengths, results, cells) -> str:
    """What the run is about to do, before it starts: model, data, profile, methods, lengths."""
    lines = [
        f"lampe-eval {args.command}",
        f"  model    {args.model} (W={info.window}, {results.settings['dtype']} on {args.device})",
        f"  data     {data}",
        f"  profile  {shown if shown is not None else 'none (no method here reads one)'}",
        f"  methods  {', '.join(methods)}"
        + (f" (PPL ratios to {args.reference})" if args.command == "ppl" else ""),
        f"  lengths  {', '.join(str(n) for n in lengths)}",
    ]
    if results.path is not None:
        done = sum(results.get(key) is not None for key, *_ in cells)
        lines.append(f"  json     {results.path} ({done} of {len(cells)} cells already there)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lampe-eval``; returns the exit code (errors are raised for ``cli.run_cli``)."""
    args = _parser().parse_args(argv)
    # Everything that can be checked without the model is checked first, so a typo fails fast.
    methods = parse_methods(args.methods) if args.methods is not None else None
    parse_lengths(args.lengths, window=1024)  # syntax only; multiples of W are resolved below
    if args.samples is not None and args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if args.command == "ppl":
        from ..evaluation import resolve_data
        from ..evaluation._sources import check_datasets_cache, shipped_sample

        args.data = shipped_sample() if args.data is None else resolve_data(args.data)
        if args.data.kind != "hub":
            check_datasets_cache()  # local files are read through it: a read-only HOME fails here
        if methods is not None and args.reference is not None and args.reference not in methods:
            raise ValueError(f"--reference {args.reference!r} is not one of --methods ({', '.join(methods)})")
    elif args.command == "passkey":
        parse_depths(args.depths)
    else:
        parse_tasks(args.tasks)
    if args.command != "ppl" and args.new_tokens is not None and args.new_tokens < 1:
        raise ValueError(f"--new-tokens must be >= 1, got {args.new_tokens}")

    from ..models import load_model, model_info
    from ..models._loading import resolve_device_dtype
    from ._progress import console, progress_for
    from ._results import ResultsFile

    _, dtype = resolve_device_dtype(args.device, args.dtype)
    command = shlex.join(["lampe-eval", *(sys.argv[1:] if argv is None else argv)])
    header = {"model": args.model, "command": command}
    finish = None
    if args.command == "ppl":
        finish = lambda rows: with_ratios(rows, args.reference, args.seed)  # noqa: E731
    dtype_name = str(dtype).removeprefix("torch.")
    results = ResultsFile(args.json, _settings(args, dtype_name), header, finish)  # checked before the load

    model, tokenizer = load_model(args.model, device=args.device, dtype=dtype)
    info = model_info(model)
    alias = getattr(info, "alias", None)
    lengths = parse_lengths(args.lengths, info.window)
    if methods is None:
        methods = _default_methods(args, alias, info.window)
    if args.command == "ppl":
        args.reference = args.reference or ("vanilla" if "vanilla" in methods else methods[0])
        if args.reference not in methods:
            raise ValueError(
                f"--reference {args.reference!r} is not one of the methods ({', '.join(methods)})"
            )
        results.header["reference"] = args.reference
    profile = _load_profile(args, methods, alias, info.window)
    if profile is not None:  # fitted on this model's position facts, or an explicit transfer
        try:
            profile.check_model(model, allow_transfer=args.allow_transfer)
        except ValueError as error:
            raise ValueError(f"--profile {args.profile or alias!r}: {error}") from None
    shown = None if profile is None else (args.profile or getattr(profile, "alias", None) or alias)
    results.set_profile(shown)
    results.header["profile"] = results.settings["profile"]
    results.refresh()
    _preflight(model, info.window, methods, lengths, profile)
    prepare = {"ppl": _ppl_cells, "passkey": _passkey_cells, "ruler": _ruler_cells}[args.command]
    cells = prepare(args, model, tokenizer, info.window, methods, lengths, profile)
    if args.command == "ppl":
        books = cells[0][2]
        data = f"{args.data.describe()}: {books} book{'s' if books != 1 else ''}"
    elif args.command == "passkey":
        data = f"passkey prompts: {cells[0][2]} per length ({args.samples} per depth, depths {args.depths})"
    else:
        data = f"RULER prompts: {args.samples} per task and length (tasks {args.tasks})"
    errors = console(stderr=True)
    print(_header(args, info, data, shown, methods, lengths, results, cells), file=sys.stderr, flush=True)

    with progress_for(errors) as progress:
        for key, label, total, run in cells:
            if results.get(key) is not None:
                continue
            task = progress.add_task(label, total=total)
            results.add(run(lambda done, _total, t=task: progress.update(t, completed=done)))

    out = console()
    rows = [results.get(key) for key, *_ in cells]
    title = f"{args.model} (W={info.window})"
    if args.command == "ruler":
        _print_ruler(out, f"{title}: RULER accuracy", methods, lengths, rows)
        return 0
    cells_shown = {}
    for r in rows:
        if args.command == "ppl":
            text = f"{r['ppl']:.2f}" if math.isfinite(r["ppl"]) else "inf"
            cells_shown[r["method"], r["length"]] = (r["ppl"], text)
        else:
            text = f"{100 * r['accuracy']:.0f}% ({r['correct']}/{r['trials']})"
            cells_shown[r["method"], r["length"]] = (r["accuracy"], text)
    kind = "perplexity" if args.command == "ppl" else "passkey accuracy"
    out.print(f"{title}: {kind}")  # a line of its own: a table title would wrap to the table's width
    out.print(_table(None, methods, lengths, cells_shown, min if args.command == "ppl" else max))
    if args.command == "ppl":
        ratios = {}
        for r in rows:
            low, high = r["ci"]
            ratios[r["method"], r["length"]] = (None, f"{r['ratio']:.4f} [{low:.4f}, {high:.4f}]")
        out.print(
            f"PPL ratio to {args.reference} (95 % paired bootstrap interval, books and 1K-token blocks)"
        )
        out.print(_table(None, methods, lengths, ratios, None))
    return 0
