"""How RULER-style prompts are assembled (``_ruler``): the shipped text they are cut from, and a
task line, a haystack of units with inserts at given depths, and a question, within a budget."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import count, cycle
from pathlib import Path
from typing import Any

from ._passkey import FILLER, _encode

__all__ = ["RulerSources", "assemble", "book_units", "filler_units", "random_name", "random_number"]


@dataclass(frozen=True)
class RulerSources:
    """The text the haystacks are cut from.

    Args:
        books: book texts (the niah_multikey haystack).
        words: distinct lowercase words (keys and the cwe vocabulary), sorted.
    """

    books: tuple[str, ...]
    words: tuple[str, ...]

    @classmethod
    def shipped(cls) -> RulerSources:
        """The PG-19 sample shipped in the package: its 10 books, and the words of 4 to 10
        letters that occur at least 5 times in them (a few thousand)."""
        path = Path(str(resources.files("lampe_calib").joinpath("assets", "pg19_sample", "validation.jsonl")))
        books = tuple(json.loads(line)["text"] for line in path.open(encoding="utf-8") if line.strip())
        return cls.from_texts(books)

    @classmethod
    def from_texts(cls, books: Sequence[str], min_count: int = 5) -> RulerSources:
        """Sources from any texts: the words of 4 to 10 letters seen ``min_count`` times or more.

        Example: ``RulerSources.from_texts(["the river and the garden"] * 5).words``
        -> ``("garden", "river")`` ("the" and "and" are too short).
        """
        counts: dict[str, int] = {}
        for text in books:
            for word in re.findall(r"\b[a-z]{4,10}\b", text):
                counts[word] = counts.get(word, 0) + 1
        return cls(tuple(books), tuple(sorted(w for w, n in counts.items() if n >= min_count)))


def assemble(
    tokenizer: Any,
    budget: int,
    task: str,
    units: Iterator[list[int]],
    inserts: Sequence[tuple[float, str]],
    question: str,
) -> list[int]:
    """Task line, as many haystack ``units`` as fit in ``budget`` tokens, ``inserts`` placed
    after ``round(depth · k)`` of the k units (in the given order where they tie), question.

    Example: with 25-token units, 60 fixed tokens and ``budget=1000``, k = 37 units, and an
    insert at depth 0.5 goes after 18 of them.
    """
    prefix = list(tokenizer("", add_special_tokens=True)["input_ids"])
    head, tail = _encode(tokenizer, task), _encode(tokenizer, question)
    pieces = [(depth, _encode(tokenizer, text)) for depth, text in inserts]
    used = len(prefix) + len(head) + len(tail) + sum(len(p) for _, p in pieces)
    chosen: list[list[int]] = []
    for unit in units:
        if used + len(unit) > budget:
            break
        chosen.append(unit)
        used += len(unit)
    if not chosen:
        raise ValueError(f"length {budget} is too short for this task (it needs more than {used} tokens)")
    after: dict[int, list[list[int]]] = {}
    for depth, piece in pieces:
        after.setdefault(round(depth * len(chosen)), []).append(piece)
    ids = prefix + head
    for index in range(len(chosen) + 1):
        for piece in after.get(index, ()):
            ids += piece
        if index < len(chosen):
            ids += chosen[index]
    ids += tail
    assert len(ids) == used <= budget
    return ids


def filler_units(tokenizer: Any) -> Iterator[list[int]]:
    unit = _encode(tokenizer, FILLER)
    return (unit for _ in count())


def book_units(tokenizer: Any, rng: random.Random, books: Sequence[str]) -> Iterator[list[int]]:
    """Consecutive sentences of a random book from a random sentence on (wrapping around)."""
    text = " ".join(rng.choice(books).split())
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    start = rng.randrange(len(sentences))
    order = sentences[start:] + sentences[:start]
    # A sentence longer than 400 characters is cut, so one unit stays a small part of a prompt.
    return (_encode(tokenizer, " " + s[:400]) for s in cycle(order))


def random_number(rng: random.Random, digits: int) -> str:
    return str(rng.randrange(10 ** (digits - 1), 10**digits))


def random_name(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
