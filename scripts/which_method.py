"""Which method for my model? One table per length from ``lampe-eval ppl --json`` files: every
method at its defaults, every tuned method beside them, each PPL's ratio to a reference method
and each tuned method's ratio to its own defaults, all with paired 95 % bootstrap intervals.

    python scripts/which_method.py default.json tuned-selfextend.json tuned-dca.json ...

The first file holds the methods at their defaults (and the reference method); each further file
holds one or more methods run with a tuned profile (``lampe-eval ppl --profile P``). All files must
cover the same books (same ``--data``, ``--samples`` and ``--seed``), so that every comparison is
paired. Under each table, the best row is named "best" only when its interval against every
other row lies below 1; otherwise the rows it cannot be told apart from are listed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from lampe_calib.calibration._profiles import load_profile
from lampe_calib.evaluation._bootstrap import paired_ratio, paired_ratio_interval
from lampe_calib.methods import LAMPE


@dataclass(frozen=True)
class Cell:
    """One (method, length) cell with the per-block NLL the paired bootstrap resamples."""

    label: str
    method: str
    tuned: bool
    ppl: float
    nll: list
    tokens: list


def _tuned_value(profile_name: str | None, method: str, length: int) -> str:
    """What a tuned profile applies at ``length``: ``"group = 11"``, ``"m = 151"`` for LaMPE's
    m(L), with ", the default" where tuning kept the default; "" if unknown. ``profile_name`` is
    what the results file records: a path, or a profile's name (``load_profile`` resolves both)."""
    if not profile_name:
        return ""
    try:
        profile = load_profile(profile_name)
    except (OSError, KeyError, ValueError):
        return ""
    if method == LAMPE and profile.method == LAMPE and profile.status == "fitted":
        return f"m = {profile.mapping_length(length):.0f}"
    if profile.method != method or not profile.knob:
        return ""
    knob = profile.knob
    entry = next((e for e in knob.get("lengths", []) if e["length"] == length), {})
    value = entry.get("best", knob.get("single"))
    if value is None:
        return ""
    return f"{knob['name']} = {value:g}" + (", the default" if value == entry.get("default") else "")


def load_cells(paths: list[str]) -> dict[int, list[Cell]]:
    """Cells per length: the first file's rows at their defaults, the others' rows as tuned."""
    by_length: dict[int, list[Cell]] = {}
    for index, path in enumerate(paths):
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{path}: not a lampe-eval results file ({error})") from None
        profile = data.get("settings", {}).get("profile")
        for row in data["results"]:
            if "block_nll" not in row:
                continue
            tuned = index > 0
            value = _tuned_value(profile, row["method"], row["length"]) if tuned else ""
            label = f"{row['method']}, tuned" + (f" ({value})" if value else "") if tuned else row["method"]
            cell = Cell(label, row["method"], tuned, row["ppl"], row["block_nll"], row["block_tokens"])
            by_length.setdefault(int(row["length"]), []).append(cell)
    return by_length


def _ratio(cell: Cell, base: Cell, seed: int) -> tuple[float, float, float]:
    if cell.tokens != base.tokens:
        raise ValueError(f"{cell.label} and {base.label} cover other books or blocks; they cannot be paired")
    low, high = paired_ratio_interval(cell.nll, base.nll, cell.tokens, seed=seed)
    return paired_ratio(cell.nll, base.nll, cell.tokens), low, high


def _fmt(ratio: tuple[float, float, float]) -> str:
    return f"{ratio[0]:.3f} [{ratio[1]:.3f}, {ratio[2]:.3f}]"


def verdict(cells: list[Cell], seed: int) -> str:
    """The best row, called best only where every paired interval against it excludes 1."""
    best = min(cells, key=lambda cell: cell.ppl)
    tied = [other.label for other in cells if other is not best and _ratio(best, other, seed)[2] >= 1.0]
    if not tied:
        return f"best: `{best.label}` (its interval against every other row lies below 1)"
    return f"lowest PPL: `{best.label}`, not separable from " + ", ".join(f"`{label}`" for label in tied)


def table(length: int, cells: list[Cell], reference: str, seed: int) -> list[str]:
    """Markdown lines for one length: PPL, ratio to the reference, tuned / default."""
    defaults = {cell.method: cell for cell in cells if not cell.tuned}
    if reference not in defaults:
        raise ValueError(f"L = {length}: the first file has no {reference!r} cell to take ratios to")
    lines = [
        f"**L = {length}**",
        "",
        f"| method | PPL | / {reference} [95 % CI] | tuned / default [95 % CI] |",
        "|---|---|---|---|",
    ]
    for cell in sorted(cells, key=lambda c: c.ppl):
        default = defaults.get(cell.method) if cell.tuned else None
        own = _fmt(_ratio(cell, default, seed)) if default else ""
        to_reference = "1" if cell is defaults[reference] else _fmt(_ratio(cell, defaults[reference], seed))
        lines.append(f"| `{cell.label}` | {cell.ppl:.2f} | {to_reference} | {own} |")
    return [*lines, "", verdict(cells, seed), ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="lampe-eval ppl --json files: defaults, then tuned runs")
    parser.add_argument("--reference", default="vanilla", help="the method ratios are taken to")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = parser.parse_args(argv)
    try:
        by_length = load_cells(args.files)
        if not by_length:
            raise ValueError("no cell with per-block data in these files")
        for length in sorted(by_length):
            print("\n".join(table(length, by_length[length], args.reference, args.seed)))
    except (OSError, ValueError, KeyError) as error:
        print(f"which_method.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
