"""The PPL ratio of one ``lampe-eval ppl --json`` file's cells to another's, with the paired 95 %
bootstrap interval (books, and 1K-token blocks within books): for two runs of one method that
``lampe-eval`` cannot hold in one file, e.g. its default settings against a tuned profile.

    python scripts/paired_ratio.py default.json tuned.json --method selfextend

Each length the two files share for that method is one line; the cells must cover the same
books (the same block token counts), else the comparison is refused.
"""

from __future__ import annotations

import argparse
import json
import sys

from lampe_calib.evaluation._bootstrap import paired_ratio, paired_ratio_interval


def _cells(path: str, method: str) -> dict[int, dict]:
    rows = json.load(open(path, encoding="utf-8"))["results"]
    return {r["length"]: r for r in rows if r["method"] == method and "block_nll" in r}


def compare(reference: str, other: str, method: str, seed: int = 0) -> list[tuple[int, float, float, float]]:
    """``(length, ratio, low, high)`` of ``other``'s PPL to ``reference``'s, per shared length."""
    base, cells = _cells(reference, method), _cells(other, method)
    out = []
    for length in sorted(set(base) & set(cells)):
        a, b = base[length], cells[length]
        if a["block_tokens"] != b["block_tokens"]:
            raise ValueError(f"L = {length}: the two files hold other books or blocks; they cannot be paired")
        low, high = paired_ratio_interval(b["block_nll"], a["block_nll"], b["block_tokens"], seed=seed)
        out.append((length, paired_ratio(b["block_nll"], a["block_nll"], b["block_tokens"]), low, high))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", help="lampe-eval ppl --json file: the denominator")
    parser.add_argument("other", help="lampe-eval ppl --json file: the numerator")
    parser.add_argument("--method", required=True, help="the method whose cells are compared")
    args = parser.parse_args(argv)
    try:
        rows = compare(args.reference, args.other, args.method)
    except (OSError, ValueError, KeyError) as error:
        print(f"paired_ratio.py: error: {error}", file=sys.stderr)
        return 2
    if not rows:
        print(
            f"paired_ratio.py: error: no length with per-block data for {args.method!r} in both files",
            file=sys.stderr,
        )
        return 2
    for length, ratio, low, high in rows:
        print(f"{args.method} L = {length}: {ratio:.4f} [{low:.4f}, {high:.4f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
