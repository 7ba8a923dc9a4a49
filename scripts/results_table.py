"""Markdown tables from ``lampe-eval --json`` files: one row per method, one column per length.

    python scripts/results_table.py results/smollm2-135m/ppl_*.json
    python scripts/results_table.py results/smollm2-135m/passkey_*.json

Perplexity files give PPL (the best of each column in bold); passkey files give accuracy as
correct/trials, RULER files the mean score in % with the number of prompts. Files of one kind
may be mixed (several lengths, several runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


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
                shown.append(f"**{value}**" if record["ppl"] == best[n] else value)
            elif "correct" in record:  # passkey: whole prompts found
                shown.append(f"{record['correct']}/{record['trials']}")
            else:  # RULER: the mean score over the prompts
                shown.append(f"{100 * record['accuracy']:.0f} % ({record['samples']})")
        lines.append(f"| {name} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/results_table.py RESULTS.json [...]")
    print(table(sys.argv[1:]))
