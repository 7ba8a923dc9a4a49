"""``lampe-eval ppl``: perplexity of books, with each method's PPL ratio to a reference method
and its paired bootstrap 95 % interval (``evaluation._bootstrap``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any

from ._task import Cell, ContextFor, EvalTask, Prepared, rich_table

__all__ = ["PerplexityTask", "with_ratios"]


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


def _select_books(args: argparse.Namespace, tokenizer: Any, lengths: Sequence[int]) -> dict[int, Any]:
    """The books of every length (``load_books``), a failure named by ``--data``."""
    from ..evaluation import load_books
    from ..evaluation._sources import CacheNotWritable

    try:
        books = load_books(
            args.data, tokenizer, max_length=max(lengths), samples=args.samples, seed=args.seed
        )
        return {length: books.at_length(length) for length in lengths}
    except ValueError as error:
        message = str(error.args[0] if error.args else error)
        if message.startswith("--") or isinstance(error, CacheNotWritable):
            raise
        given = f" (--samples {args.samples})" if args.samples is not None else ""
        raise ValueError(f"--data {args.data.location!r}{given}: {message}") from error


def _perplexity_row(method: str, length: int, tokens: list, result: Any) -> dict:
    """The JSON row of a cell: PPL, tokens, books, and the NLL per book and per block."""
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


class PerplexityTask(EvalTask):
    name = "ppl"
    help = "perplexity of books"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--data",
            help="JSONL file, directory of JSONL/parquet, pg19[:SPLIT] or code:[train:|test:]DIR "
            "(default: the PG-19 sample shipped in the package)",
        )
        parser.add_argument("--samples", type=int, help="books (default: all, up to 8)")
        parser.add_argument(
            "--reference",
            help="the method PPL ratios are taken to (default: vanilla if run, else the first method)",
        )

    def check(self, args: argparse.Namespace, methods: Sequence[str] | None) -> None:
        from ..evaluation import resolve_data
        from ..evaluation._sources import check_datasets_cache, shipped_sample

        args.data = shipped_sample() if args.data is None else resolve_data(args.data)
        if args.data.kind != "hub":
            check_datasets_cache()  # local files are read through it: a read-only HOME fails here
        if methods is not None and args.reference is not None and args.reference not in methods:
            raise ValueError(f"--reference {args.reference!r} is not one of --methods ({', '.join(methods)})")

    def settings(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"data": args.data.describe()}

    def finish(self, args: argparse.Namespace) -> Callable[[list[dict]], list[dict]]:
        return lambda rows: with_ratios(rows, args.reference, args.seed)

    def begin(self, args: argparse.Namespace, methods: Sequence[str]) -> dict[str, Any]:
        args.reference = args.reference or ("vanilla" if "vanilla" in methods else methods[0])
        if args.reference not in methods:
            raise ValueError(
                f"--reference {args.reference!r} is not one of the methods ({', '.join(methods)})"
            )
        return {"reference": args.reference}

    def methods_note(self, args: argparse.Namespace) -> str:
        return f" (PPL ratios to {args.reference})"

    def prepare(self, args, model, tokenizer, methods, lengths, context_for: ContextFor) -> Prepared:
        selected = _select_books(args, tokenizer, lengths)

        def cell(method: str, length: int) -> Cell:
            tokens = selected[length].tokens

            def run(progress: Callable[[int, int], None]) -> dict:
                from ..evaluation import _perplexity  # looked up at run time (tests count the calls)

                context = context_for(method, length)
                result = _perplexity.evaluate_perplexity(
                    model, tokens, context=context, chunk_size=1024, progress=progress
                )
                return _perplexity_row(method, length, tokens, result)

            return Cell((None, method, length), f"{method} L={length}", len(tokens), run)

        # The reference first at each length, so every later cell's ratio can be shown at once.
        order = sorted(methods, key=lambda m: m != args.reference)
        cells = [cell(method, length) for length in lengths for method in order]
        books = cells[0].size
        return Prepared(f"{args.data.describe()}: {books} book{'s' if books != 1 else ''}", cells)

    def print_tables(self, out, args, title, methods, lengths, rows) -> None:
        shown, ratios = {}, {}
        for r in rows:
            shown[r["method"], r["length"]] = (
                r["ppl"],
                f"{r['ppl']:.2f}" if math.isfinite(r["ppl"]) else "inf",
            )
            low, high = r["ci"]
            ratios[r["method"], r["length"]] = (None, f"{r['ratio']:.4f} [{low:.4f}, {high:.4f}]")
        out.print(f"{title}: perplexity")  # a line of its own: a table title would wrap to the table's width
        out.print(rich_table(methods, lengths, shown, min))
        out.print(
            f"PPL ratio to {args.reference} (95 % paired bootstrap interval, books and 1K-token blocks)"
        )
        out.print(rich_table(methods, lengths, ratios, None))
