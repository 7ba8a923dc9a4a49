"""Markdown tables from ``lampe-eval --json`` files: one row per method, one column per length.

    python scripts/results_table.py results/smollm2-135m/ppl_*.json
    python scripts/results_table.py results/smollm2-135m/passkey_*.json

Perplexity files give PPL and, where the file has them, the PPL ratio to the run's reference
method with its paired bootstrap 95 % interval, as ``12.34 (0.987 [0.975, 0.999])``. The lowest
PPL of a column is in bold; with intervals, only when its interval lies wholly below every other
method's (non-overlapping intervals: a conservative reading of "best"). Passkey files give the
prompts found of those run with the rate's 95 % Wilson interval, as ``3/8 [14 %, 69 %]``
(``lampe_calib.evaluation._rates``; earlier files without per-prompt scores take it from their
counts); RULER cells whose prompts all score 0 or 1 (the needle tasks) the same, other RULER
cells the mean score in % with the number of prompts. Files of one kind may be mixed (several
lengths, several runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lampe_calib.evaluation._rates import binomial_counts, rate_interval


def _separated(rows: dict[str, dict[int, dict]], length: int, lowest: float) -> bool:
    """Whether the row of PPL ``lowest`` at ``length`` has an interval wholly below every other
    row's; True when the rows have no intervals (the lowest PPL is then simply the best)."""
    cells = [c[length] for c in rows.values() if length in c]
    if not all("ci" in r for r in cells):
        return True
    winner = next(r for r in cells if r["ppl"] == lowest)
    return all(winner["ci"][1] < r["ci"][0] for r in cells if r is not winner)


def _rate(record: dict) -> str:
    """A generation cell: found/prompts with the 95 % Wilson interval where every prompt scores
    0 or 1 (passkey, the needle tasks), else the mean score in % and the number of prompts."""
    counts = binomial_counts(record)
    if counts is None:
        return f"{100 * record['accuracy']:.0f} % ({record['samples']})"
    low, high = rate_interval(record)
    return f"{counts[0]}/{counts[1]} [{100 * low:.0f} %, {100 * high:.0f} %]"


def table(paths: list[str]) -> str:
    rows: dict[str, dict[int, dict]] = {}
    for path in paths:
        for record in json.loads(Path(path).read_text())["results"]:
            key = record["method"] if "task" not in record else f"{record['task']} / {record['method']}"
            rows.setdefault(key, {})[int(record["length"])] = record
    lengths = sorted({n for cells in rows.values() for n in cells})
    ppl = all("ppl" in r for cells in rows.values() for r in cells.values())
    score = "ppl" if ppl else "accuracy"
    best = {n: min(c[n][score] for c in rows.values() if n in c) for n in lengths}
    if ppl:
        best = {n: v if _separated(rows, n, v) else None for n, v in best.items()}
    header = "| method | " + " | ".join(f"L = {n:,}" for n in lengths) + " |"
    lines = [header, "|---" * (len(lengths) + 1) + "|"]
    for name, cells in rows.items():
        shown = []
        for n in lengths:
            record = cells.get(n)
            if record is None:
                shown.append("")
            elif ppl:
                value = f"{record['ppl']:.2f}"
                value = f"**{value}**" if record["ppl"] == best[n] else value
                if "ci" in record:
                    low, high = record["ci"]
                    value += f" ({record['ratio']:.3f} [{low:.3f}, {high:.3f}])"
                shown.append(value)
            else:
                shown.append(_rate(record))
        lines.append(f"| {name} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/results_table.py RESULTS.json [...]")
    print(table(sys.argv[1:]))
