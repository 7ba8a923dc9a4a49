"""Books for calibration and evaluation: the first L tokens of each (docs/design.md §3.1).

Books shorter than L are skipped and counted; none left is an error. Book selection is a
seeded permutation of the rows, so the same ``(data, samples, seed)`` picks the same books on
every machine. ``_sources`` says what a ``--data`` value may be.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._checks import check_integer
from ._sources import TITLE_FIELDS, DataSource, read_texts, resolve_data

__all__ = ["DEFAULT_SAMPLES", "Books", "BooksAtLength", "choose_books", "load_books", "tokenize_prefix"]

logger = logging.getLogger(__name__)


# Books per evaluation when the user names no number: enough to average over styles, few enough
# for long inputs on one machine.
DEFAULT_SAMPLES = 8


def choose_books(available: int, samples: int, seed: int) -> list[int]:
    """Row indices of ``samples`` books out of ``available``: a permutation seeded by ``seed``.

    Example: ``choose_books(10, 3, seed=0)`` -> the same 3 distinct indices on every call.
    """
    check_integer("samples", samples, 1)
    if samples > available:
        raise ValueError(f"samples={samples} but the data holds only {available} books")
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.permutation(available)[:samples]]


def tokenize_prefix(text: str, tokenizer: Any, max_tokens: int) -> torch.Tensor:
    """The first ``max_tokens`` tokens of ``text`` (fewer if it is shorter), ``(n,)`` int64.

    Only a prefix of the text is tokenized: a cut inside a word changes at most the last
    few tokens, so the prefix is grown until it yields 16 tokens more than needed.
    Special tokens are added as the tokenizer does by default (e.g. a BOS token).
    """
    chars = 8 * (max_tokens + 32)
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=True, verbose=False)["input_ids"]
        if chars >= len(text) or len(ids) >= max_tokens + 16:
            return torch.tensor(ids[:max_tokens], dtype=torch.long)
        chars *= 2


@dataclass(frozen=True, eq=False)
class BooksAtLength:
    """The books with at least ``length`` tokens, each cut to its first ``length`` tokens.

    ``tokens[i]`` is ``(length,)`` int64; ``rows[i]`` is its row in the data; ``skipped`` counts
    the selected books that were shorter than ``length``.
    """

    length: int
    tokens: tuple[torch.Tensor, ...]
    rows: tuple[int, ...]
    skipped: int


@dataclass(frozen=True, eq=False)
class Books:
    """Selected books, each tokenized up to the longest length needed.

    ``tokens[i]`` is ``(n_i,)`` int64 with ``n_i <= max_length`` (shorter for short books).
    """

    source: DataSource
    rows: tuple[int, ...]
    titles: tuple[str, ...]
    tokens: tuple[torch.Tensor, ...] = field(repr=False)
    max_length: int
    samples: int
    seed: int

    def at_length(self, length: int) -> BooksAtLength:
        """The books of at least ``length`` tokens, cut to ``length``.

        Raises:
            ValueError: ``length`` exceeds ``max_length``, or every book is shorter.
        """
        check_integer("length", length, 2, self.max_length)
        kept = [
            (row, t[:length]) for row, t in zip(self.rows, self.tokens, strict=True) if t.numel() >= length
        ]
        if not kept:
            raise ValueError(
                f"none of the {len(self.rows)} selected books has {length} tokens "
                f"(longest: {max(t.numel() for t in self.tokens)}); use shorter --lengths or other --data"
            )
        skipped = len(self.rows) - len(kept)
        if skipped:
            logger.info("length %d: %d of %d books are shorter and skipped", length, skipped, len(self.rows))
        return BooksAtLength(length, tuple(t for _, t in kept), tuple(r for r, _ in kept), skipped)


def load_books(
    data: str | os.PathLike[str] | DataSource,
    tokenizer: Any,
    *,
    max_length: int,
    samples: int | None,
    seed: int,
    online: bool | None = None,
) -> Books:
    """Select ``samples`` books of ``data`` (seeded) and tokenize their first ``max_length`` tokens.

    Args:
        data: a ``--data`` value (see the module docstring) or a resolved ``DataSource``.
        tokenizer: a transformers tokenizer (called as ``tokenizer(text)["input_ids"]``).
        max_length: the longest L that will be asked of ``Books.at_length``.
        samples: number of books to select; None: all of them, up to ``DEFAULT_SAMPLES``
            (an explicit number larger than the data is an error).
        seed: seed of the selection.
        online: passed to ``resolve_data`` for ``pg19``.

    Returns:
        ``Books``; ``books.at_length(L)`` gives the first L tokens of each book long enough.

    Example:
        >>> books = load_books("pg19", tokenizer, max_length=2048, samples=8, seed=0)
        >>> books.at_length(1024).tokens[0].shape
        torch.Size([1024])
    """
    check_integer("max_length", max_length, 2)
    source = data if isinstance(data, DataSource) else resolve_data(data, online=online)
    rows_data = read_texts(source)
    if samples is None:
        samples = min(DEFAULT_SAMPLES, len(rows_data))
    rows = choose_books(len(rows_data), samples, seed)
    title_field = next((name for name in TITLE_FIELDS if name in rows_data.column_names), None)
    selected = rows_data.select(rows)
    titles, tokens = [], []
    for row, record in zip(rows, selected, strict=True):
        text = record["text"] or ""
        titles.append(str(record[title_field]) if title_field else f"row {row}")
        tokens.append(tokenize_prefix(text, tokenizer, max_length))
    logger.info("selected %d books from %s", len(rows), source.describe())
    return Books(source, tuple(rows), tuple(titles), tuple(tokens), max_length, samples, seed)
