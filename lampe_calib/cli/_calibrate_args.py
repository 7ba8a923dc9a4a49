"""``lampe-calibrate``'s options (``build_parser``) and the checks made on them before anything
is loaded (``check_options``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..methods._names import LAMPE
from ._args import ArgumentParser, parse_floats, parse_sizes

__all__ = ["build_parser", "check_fit_possible", "check_options"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="lampe-calibrate",
        description="Calibrate LaMPE's mapping length m(L) for a RoPE model: sweep PPL on PG-19 books over "
        "input lengths L and mapping lengths m (an Optuna study, resumable), fit the sigmoid "
        "m(L) = c/(1+exp(-(aL+b))), write OUT/<name>.json (profile) and OUT/<name>.png.",
    )
    for add in (
        _model_and_data,
        _sweep_options,
        _method_options,
        _search_and_fit,
        _storage_and_outputs,
        _runtime_options,
    ):
        add(p)
    return p


def _model_and_data(p: argparse.ArgumentParser) -> None:
    """Options: the model and the books."""
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


def _sweep_options(p: argparse.ArgumentParser) -> None:
    """Options: LaMPE's (L, m) grid, its head, tail, factor, mode and rotary."""
    from ..methods import BASES, MODES, STOCK

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
    p.add_argument("--mode", choices=MODES, default=MODES[0], help=f"position mode (default: {MODES[0]})")
    p.add_argument(
        "--base",
        choices=BASES,
        default=STOCK,
        help="rotary to calibrate on: the model's own, or a YaRN/NTK base of factor 2 (m up to 2·W is "
        "in range; the profile is <name>-<base>.json, for lampe-eval's lampe-yarn / lampe-ntk)",
    )


def _method_options(p: argparse.ArgumentParser) -> None:
    """Options: another method's knob (``--method``)."""
    p.add_argument(
        "--method",
        default=LAMPE,
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


def _search_and_fit(p: argparse.ArgumentParser) -> None:
    """Options: the books' count and seed, the search, the fit."""
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


def _storage_and_outputs(p: argparse.ArgumentParser) -> None:
    """Options: where the sweep and the profile go."""
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


def _runtime_options(p: argparse.ArgumentParser) -> None:
    """Options: the device, precision, memory and threads of a run, the log."""
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


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def check_options(args: argparse.Namespace) -> list[float]:
    """Refuse bad option values before anything is loaded (sizes are checked for their syntax:
    W is known once the model is). Returns ``--attention-factor``'s values."""
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
    if not args.no_fit and args.lengths and args.method == LAMPE:  # (a knob sweep fits no m(L))
        check_fit_possible([part.strip().lower() for v in args.lengths for part in v.split(",")])
    return factors


def check_fit_possible(lengths: Sequence[str]) -> None:
    """m(L) has up to three parameters: a fit needs three lengths at least."""
    if len(set(lengths)) < 3:
        raise ValueError(
            f"--lengths {','.join(dict.fromkeys(lengths))}: fitting m(L) needs at least 3 lengths "
            "(e.g. --lengths 2W,4W,8W); add --no-fit to measure these curves without a fit"
        )
