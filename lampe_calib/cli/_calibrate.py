"""``lampe-calibrate``: sweep PPL over (L, m), fit m(L), write ``OUT/<name>.json`` and ``.png``.

The UI layer: argument parsing, rich progress with an ETA over trials, the closing table.
Everything else is ``calibrate_model``. User errors raise ValueError/KeyError/... which
``cli.run_cli`` prints as one line with exit code 2; nothing is written before the model,
the data and every option have been checked.
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._args import ArgumentParser, parse_floats, parse_sizes
from ._calibrate_fit import report_excess, start_from_previous_fit

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="lampe-calibrate",
        description="Calibrate LaMPE's mapping length m(L) for a RoPE model: sweep PPL on PG-19 books over "
        "input lengths L and mapping lengths m (an Optuna study, resumable), fit the sigmoid "
        "m(L) = c/(1+exp(-(aL+b))), write OUT/<name>.json (profile) and OUT/<name>.png.",
    )
    p.add_argument(
        "--model", required=True, help="alias (reference, smollm2-135m, llama3-8b, ...), hub id or path"
    )
    p.add_argument(
        "--data",
        default="pg19",
        help="pg19 (hub if reachable, else the shipped sample), pg19:SPLIT, "
        "a JSONL file or a directory of JSONL/parquet with a 'text' field, or code:[train:|test:]DIR "
        "(Python sources as documents) (default: pg19)",
    )
    p.add_argument(
        "--lengths",
        nargs="+",
        metavar="L",
        help="input lengths, e.g. 512,1024 or 2W,4W (default: W/2, W, 2W, 4W, 8W)",
    )
    p.add_argument(
        "--mappings",
        nargs="+",
        metavar="M",
        help="mapping lengths of the grid (gp: its range), "
        "e.g. 64,128,192 or 0.5W (default: 8 from head+tail+1 to 1.25W)",
    )
    p.add_argument("--head", nargs="+", metavar="S1", help="head size s1, one or several (default: W/8)")
    p.add_argument("--tail", nargs="+", metavar="S2", help="tail size s2, one or several (default: W/16)")
    p.add_argument(
        "--attention-factor",
        nargs="+",
        metavar="F",
        default=["1"],
        help="RoPE cos/sin multiplier(s) to try (default: 1)",
    )
    p.add_argument(
        "--mode", choices=("exact", "floor"), default="exact", help="position mode (default: exact)"
    )
    p.add_argument(
        "--base",
        choices=("stock", "yarn", "ntk"),
        default="stock",
        help="rotary to calibrate on: the model's own, or a YaRN/NTK base of factor 2 (m up to 2·W is "
        "in range; the profile is <name>-<base>.json, for lampe-eval's lampe-yarn / lampe-ntk)",
    )
    p.add_argument(
        "--method",
        default="lampe",
        help="the method to calibrate: lampe (m(L), the default) or one with knobs (selfextend, dca, "
        "string, rerope, yarn, ntk): its main knob is swept per length, and the profile "
        "OUT/<name>-<method>.json records the best value per length for lampe-eval --profile",
    )
    p.add_argument(
        "--points",
        type=int,
        help="--method other than lampe: knob values per length, the default among them (default: 8, "
        "as many as LaMPE's default m grid: the same budget)",
    )
    p.add_argument(
        "--values",
        nargs="+",
        metavar="V",
        help="--method other than lampe: the knob values to try (those in each length's range)",
    )
    p.add_argument("--samples", type=int, help="books (default: all, up to 8)")
    p.add_argument(
        "--seed", type=int, default=0, help="book selection, samplers and bootstrap seed (default: 0)"
    )
    p.add_argument(
        "--search",
        choices=("grid", "gp"),
        default="grid",
        help="grid: every (L, m); gp: Optuna's GPSampler per length (default: grid)",
    )
    p.add_argument("--evaluations", type=int, default=6, help="gp: trials per length (default: 6)")
    p.add_argument(
        "--c-mode",
        choices=("fixed", "free"),
        default="fixed",
        help="the reported fit: c = 0.75W (paper) or free (default: fixed; both are stored)",
    )
    p.add_argument("--no-refine", action="store_true", help="m* = best swept m (no parabola refinement)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples over books (default: 200)")
    p.add_argument(
        "--storage",
        help="Optuna storage URL (default: sqlite:///OUT/<name>.db); several lampe-calibrate processes "
        "on one URL (postgresql://user@host/db, or SQLite on one machine) share the sweep",
    )
    p.add_argument("--study", help="study name in the storage (default: <name>)")
    p.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        metavar="SECONDS",
        help="a worker records a heartbeat this often; a trial without one for twice as long is "
        "taken as dead and re-run by another worker (default: 60)",
    )
    p.add_argument(
        "--out",
        help="output directory (default: your profiles directory, $LAMPE_CALIB_HOME/profiles or "
        "~/.local/share/lampe-calib/profiles, where load_profile(NAME) finds the result by name)",
    )
    p.add_argument(
        "--update-shipped",
        action="store_true",
        help="maintainers: regenerate a profile shipped inside the package (lampe_calib/profiles, "
        "the default --out with this flag); without it the tools never write inside the package",
    )
    p.add_argument(
        "--no-fit",
        action="store_true",
        help="measure the V-curves only, with no m(L) fit (needed for fewer than 3 --lengths)",
    )
    p.add_argument(
        "--allow-transfer",
        action="store_true",
        help="resume a study run on a model whose position facts (family, window, RoPE, head size) differ",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="default: float32 on CPU, bfloat16 on CUDA",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=16384,
        help="tokens per forward pass: L-token books go batch-tokens // L at a time; lower it "
        "for large models or long L (default: 16384)",
    )
    p.add_argument("--chunk-size", type=int, default=1024, help="positions per LM-head chunk (default: 1024)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every trial")
    return p


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    for name in ("samples", "evaluations", "batch_tokens", "chunk_size", "threads", "points"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    for option in ("lengths", "mappings", "head", "tail"):
        if getattr(args, option):
            parse_sizes("--" + option, getattr(args, option))  # syntax, before loading anything
    factors = parse_floats("--attention-factor", args.attention_factor)
    _positive("--heartbeat", args.heartbeat)
    if args.study is not None and (not args.study.strip() or ":" in args.study):
        raise ValueError(
            f"--study must be a non-empty name without ':' (the sweep's own separator), got {args.study!r}"
        )
    if not args.no_fit and args.lengths and args.method == "lampe":  # (a knob sweep fits no m(L))
        _check_fit_possible([part.strip().lower() for v in args.lengths for part in v.split(",")])
    from . import _outputs

    out = _outputs.resolve_out(args.out, args.update_shipped)
    if args.method != "lampe":
        if args.storage:  # a bad, read-only or damaged storage fails before the model loads
            _outputs.check_storage(args.storage, args.update_shipped, default=False)
        from ._calibrate_method import main_method

        return main_method(args, argv, out, args.storage)
    if args.points is not None or args.values:
        raise ValueError("--points and --values set another method's knob: LaMPE's grid is --mappings")
    expected = _expected_name(args.model, args.base)
    _outputs.check_targets(out, expected)
    # A bad, read-only or damaged storage fails before the model loads (the default one too,
    # when it exists: the name after loading is the same for an alias or a path).
    storage_url = args.storage or _outputs.sqlite_url(out / f"{expected}.db")
    _outputs.check_storage(storage_url, args.update_shipped, default=not args.storage)

    from ..calibration._calibrate import calibrate_model, default_spec, profile_name
    from ..calibration.sweep._store import open_storage
    from ..evaluation import load_books

    console, model, tokenizer, info, started = start_run(args)
    w = info.window
    overrides: dict[str, Any] = {
        "mode": args.mode,
        "base": args.base,
        "search": args.search,
        "seed": args.seed,
        "evaluations": args.evaluations,
        "attention_factors": tuple(factors),
    }
    for option, field in (
        ("lengths", "lengths"),
        ("mappings", "mappings"),
        ("head", "heads"),
        ("tail", "tails"),
    ):
        if getattr(args, option):
            overrides[field] = tuple(parse_sizes("--" + option, getattr(args, option), w))
    overrides["initial_points"] = min(3, args.evaluations)
    try:
        spec = default_spec(w, **overrides)
    except ValueError as error:
        raise ValueError(f"bad sweep options: {error}") from None
    name = profile_name(info, args.base)
    if len(spec.lengths) < 3 and not args.no_fit:
        _check_fit_possible(list(map(str, spec.lengths)))
    if name != expected:
        _outputs.check_targets(out, name)
    spec = start_from_previous_fit(console, spec, out / f"{name}.json")
    console.print(
        f"[bold]{name}[/]: {info.family}, W = {w}, RoPE θ = {info.rope_theta:g} ({info.rope_type}); "
        f"{args.device}, {str(next(model.parameters()).dtype).removeprefix('torch.')}"
    )
    with console.status("reading and tokenizing books"):
        books = load_books(
            args.data, tokenizer, max_length=spec.lengths[-1], samples=args.samples, seed=args.seed
        )
        for length in spec.lengths:
            books.at_length(length)  # none left at some L -> the error comes before anything is written
    console.print(f"data: {books.source.describe()}, {len(books.rows)} books")
    console.print(
        f"sweep: L = {', '.join(map(str, spec.lengths))}; m = {', '.join(map(str, spec.mappings))}; "
        f"s1 = {','.join(map(str, spec.heads))}, s2 = {','.join(map(str, spec.tails))}; {spec.search} search"
    )
    url = args.storage or _outputs.sqlite_url(out / f"{name}.db")
    if name != expected:
        _outputs.check_storage(url, args.update_shipped, default=not args.storage)
    # An explicit storage is opened (created, for SQLite) before OUT, so that a storage that
    # cannot be opened leaves nothing behind.
    storage = open_storage(url, heartbeat_interval=args.heartbeat) if args.storage else None
    out.mkdir(parents=True, exist_ok=True)
    if not args.storage and not args.study:  # a shipped study of this very sweep: start from it
        from ..calibration._calibrate import study_signature

        copied = _outputs.start_from_shipped(out, name, study_signature(model, books, spec))
        if copied is not None:
            console.print(f"storage: starting from the shipped study {copied} (copied; it stays as it is)")
    storage = storage or open_storage(url, heartbeat_interval=args.heartbeat)
    console.print(f"storage: {_hide_password(url)} (study {args.study or name!r})")

    run = _run_with_progress(
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
    from ..calibration._plots import render_profile
    from ..calibration._profiles import profile_bytes, user_profiles_dir, write_together

    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    figure = render_profile(run.profile)  # first: a figure that fails to render replaces nothing
    write_together([(json_path, profile_bytes(run.profile)), (png_path, figure)])  # both or neither
    _report(console, run)
    console.print(f"wrote {json_path} and {png_path} in {time.perf_counter() - started:.0f} s")
    if out == user_profiles_dir().resolve():
        console.print(f"load_profile({name!r}) and --profile {name} now find it (ahead of a shipped one)")
    return 0


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


def _check_fit_possible(lengths: list[str]) -> None:
    """m(L) has up to three parameters: a fit needs three lengths at least."""
    if len(set(lengths)) < 3:
        raise ValueError(
            f"--lengths {','.join(dict.fromkeys(lengths))}: fitting m(L) needs at least 3 lengths "
            "(e.g. --lengths 2W,4W,8W); add --no-fit to measure these curves without a fit"
        )


def _expected_name(model: str, base: str) -> str:
    """The profile name ``profile_name`` will give the model, from ``--model`` alone (an alias,
    else the last part of the path or hub id); checked again once the model is loaded."""
    from ..models._registry import MODELS

    name = model if model in MODELS else Path(model.rstrip("/")).name.removesuffix(".gguf") or model
    return name if base == "stock" else f"{name}-{base}"


def _without_passwords(argv: list[str]) -> list[str]:
    """The command line as recorded in a profile: a ``--storage`` password becomes ``***``.

    Example: ``["--storage", "postgresql://u:pw@db/x"]`` -> ``["--storage", "postgresql://u:***@db/x"]``.
    """
    out, storage = [], False
    for item in argv:
        if storage or item.startswith("--storage="):
            prefix = "--storage=" if item.startswith("--storage=") else ""
            item = prefix + _hide_password(item.removeprefix(prefix))
        storage = item == "--storage"
        out.append(item)
    return out


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _run_with_progress(console: Any, calibrate_model: Any, *args: Any, **kwargs: Any) -> Any:
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
            # ETA in tokens evaluated, not trials: a trial at 8W costs 16 trials at W/2.
            progress.update(
                task,
                total=max(p.cost_total, 1.0),
                completed=p.cost_done,
                trials=f"trials {p.done}/{p.total}",
                description=f"{last}{ppl}",
            )

        run = calibrate_model(*args, progress=update, **kwargs)
        progress.update(task, description="sweep done", completed=progress.tasks[0].total or 1)
    return run


def _ratio(value: float) -> str:
    """Example: ``_ratio(1.0)`` -> ``"×1.00"``, ``_ratio(123.4)`` -> ``"×123"``."""
    return f"×{value:.2f}" if value < 10 else f"×{value:.0f}"


def _report(console: Any, run: Any) -> None:
    from rich.table import Table

    cal = run.calibration
    table = Table(title=f"m*(L) (s1 = {cal.head}, s2 = {cal.tail}, factor {cal.attention_factor:g})")
    for column in ("L", "m*", "PPL at m*", "vanilla PPL", "gain"):
        table.add_column(column, justify="right")
    for o in cal.optima:
        # At the edge of the swept range the V's other arm was not seen: m* is only a bound.
        edge = {"upper": f"≥ {o.mapping:.0f} (extend --mappings up)", "lower": f"≤ {o.mapping:.0f}"}
        star = (edge.get(o.bound) or f"{o.mapping:.0f}") if o.remapped else "no remap"
        vanilla = "—" if o.vanilla_ppl is None else f"{o.vanilla_ppl:.4g}"
        gain = (
            "—"
            if o.vanilla_ppl is None or not math.isfinite(o.vanilla_ppl)
            else _ratio(o.vanilla_ppl / o.ppl)
        )
        table.add_row(str(o.length), star, f"{o.ppl:.4g}", vanilla, gain)
    console.print(table)
    # "Same budget" across methods: evaluated points per length (the unmapped model included).
    points = {len(c["mappings"]) + (c.get("unmapped_ppl") is not None) for c in run.profile.curves}
    if points:
        shown = "-".join(str(n) for n in sorted({min(points), max(points)}))
        console.print(f"budget: {shown} evaluated points per length (m values, the unmapped model included)")
    if cal.status != "fitted":
        console.print(f"[bold red]no fit[/]: {cal.message}; the profile records this and cannot be applied")
        return
    if cal.message:
        console.print(f"[yellow]note[/]: {cal.message}")
    for mode, fit in cal.fits.items():
        ci = cal.ci.get(mode)
        interval = (
            ""
            if not ci
            else "; {:.0%} CI a [{:.3g}, {:.3g}], b [{:.3g}, {:.3g}], c [{:.4g}, {:.4g}]".format(
                cal.level, *ci["a"], *ci["b"], *ci["c"]
            )
        )
        chosen = " (profile)" if mode == cal.c_mode and cal.objective == "argmin" else ""
        r2 = "n/a" if fit.r2 is None else f"{round(fit.r2, 3) + 0.0:.3f}"  # no "-0.000"
        console.print(
            f"fit, {mode} c{chosen}: a = {fit.a:.4g}, b = {fit.b:.4g}, c = {fit.c:.4g}, R² = {r2}{interval}"
        )
    report_excess(console, cal)
