"""Perplexity of books under a model, with the loss computed in chunks of the hidden states.

docs/design.md §3.1: the LM head runs on ``chunk_size`` positions at a time, so no ``L × vocab`` logits
tensor is ever built (at L = 128K and a 128K vocabulary that tensor alone is 64 GB in fp32).
Per-book NLL sums and token counts are kept, so any aggregate can be rebuilt;
PPL = exp(total NLL / total tokens). Each book's NLL is also kept per block of ``BLOCK_SIZE``
predicted tokens, the unit a paired bootstrap resamples within a book (``_bootstrap``).

The same evaluator serves calibration and the evaluation harness: ``context`` is a factory of
the context manager to run the model under (``lambda: apply_lampe(model, config)``, a baseline's
own context, or None for the stock model).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_integer

__all__ = ["BLOCK_SIZE", "PerplexityResult", "evaluate_perplexity", "token_nll", "token_nll_blocks"]

logger = logging.getLogger(__name__)

# Predicted tokens per block of the per-block NLL (the last block of a book may be shorter).
BLOCK_SIZE = 1024


@dataclass(frozen=True)
class PerplexityResult:
    """Per-book negative log-likelihood sums (nats) and predicted-token counts.

    ``block_nll`` optionally splits each book's sum into blocks of ``BLOCK_SIZE`` predicted tokens
    (empty when not recorded): ``block_nll[i]`` sums to ``nll[i]``.

    Example: ``PerplexityResult(nll=(10.0, 20.0), tokens=(10, 10)).ppl`` -> ``exp(1.5)`` = 4.48…
    """

    nll: tuple[float, ...]
    tokens: tuple[int, ...]
    block_nll: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "nll", tuple(float(x) for x in self.nll))
        object.__setattr__(self, "tokens", tuple(int(x) for x in self.tokens))
        object.__setattr__(self, "block_nll", tuple(tuple(float(x) for x in b) for b in self.block_nll))
        if self.block_nll and [len(b) for b in self.block_nll] != [-(-n // BLOCK_SIZE) for n in self.tokens]:
            raise ValueError(f"block_nll must hold ceil(tokens / {BLOCK_SIZE}) blocks per book")
        if len(self.nll) != len(self.tokens):
            raise ValueError(
                f"nll and tokens must have one entry per book, got {len(self.nll)} and {len(self.tokens)}"
            )
        if not self.tokens:
            raise ValueError("a perplexity result needs at least one book, got none")
        if any(n <= 0 for n in self.tokens):
            raise ValueError(f"tokens must be > 0 for every book, got {self.tokens}")

    @property
    def total_nll(self) -> float:
        return math.fsum(self.nll)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)

    @property
    def mean_nll(self) -> float:
        """Total NLL per token, i.e. log PPL."""
        return self.total_nll / self.total_tokens

    @property
    def ppl(self) -> float:
        """exp(total NLL / total tokens); inf when the mean NLL overflows exp."""
        return math.exp(self.mean_nll) if self.mean_nll < 700 else math.inf

    @property
    def book_ppl(self) -> tuple[float, ...]:
        """Each book's own perplexity."""
        return tuple(math.exp(min(n / t, 700.0)) for n, t in zip(self.nll, self.tokens, strict=True))

    def subset(self, indices: Sequence[int]) -> PerplexityResult:
        """The result over books ``indices`` (repeats allowed, as in a bootstrap resample).

        Example: ``PerplexityResult((1.0, 2.0), (1, 1)).subset([1, 1]).nll`` -> ``(2.0, 2.0)``.
        """
        blocks = tuple(self.block_nll[i] for i in indices) if self.block_nll else ()
        return PerplexityResult(
            tuple(self.nll[i] for i in indices), tuple(self.tokens[i] for i in indices), blocks
        )

    @property
    def block_tokens(self) -> tuple[tuple[int, ...], ...]:
        """Predicted tokens of each block of each book (``BLOCK_SIZE``, the last one the rest).

        Example: ``PerplexityResult((1.0,), (2500,)).block_tokens`` -> ``((1024, 1024, 452),)``.
        """
        return tuple(
            tuple(min(BLOCK_SIZE, n - start) for start in range(0, n, BLOCK_SIZE)) for n in self.tokens
        )

    def to_dict(self) -> dict[str, Any]:
        return {"nll": list(self.nll), "tokens": list(self.tokens), "ppl": self.ppl}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PerplexityResult:
        return cls(nll=tuple(data["nll"]), tokens=tuple(data["tokens"]))


def token_nll(hidden: torch.Tensor, targets: torch.Tensor, head: nn.Module, chunk_size: int) -> torch.Tensor:
    """Summed NLL of ``targets`` per row, running ``head`` on ``chunk_size`` positions at a time.

    Args:
        hidden: ``(B, S, H)`` final hidden states (after the model's final norm).
        targets: ``(B, S)`` int64, the token each position predicts.
        head: the LM head, ``(…, H) -> (…, V)``.
        chunk_size: positions per chunk; peak logits memory is ``B · chunk_size · V`` fp32.

    Returns:
        ``(B,)`` float64 NLL sums (nats).
    """
    B, S, _ = hidden.shape
    total = torch.zeros(B, dtype=torch.float64, device=hidden.device)
    for start in range(0, S, chunk_size):
        logits = head(hidden[:, start : start + chunk_size]).float()  # (B, c, V)
        target = targets[:, start : start + chunk_size]  # (B, c)
        loss = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, c)
        total += loss.double().sum(-1)
    return total


def token_nll_blocks(
    hidden: torch.Tensor, targets: torch.Tensor, head: nn.Module, chunk_size: int, block_size: int
) -> torch.Tensor:
    """Summed NLL of ``targets`` per row and per block of ``block_size`` positions.

    Args:
        hidden, targets, head, chunk_size: as in ``token_nll``.
        block_size: positions per block; the last block holds the rest.

    Returns:
        ``(B, ceil(S / block_size))`` float64 NLL sums (nats); ``.sum(-1)`` is ``token_nll``.
    """
    B, S, _ = hidden.shape
    blocks = torch.zeros(B, -(-S // block_size), dtype=torch.float64, device=hidden.device)
    for start in range(0, S, chunk_size):
        logits = head(hidden[:, start : start + chunk_size]).float()  # (B, c, V)
        target = targets[:, start : start + chunk_size]  # (B, c)
        loss = F.cross_entropy(logits.transpose(1, 2), target, reduction="none").double()  # (B, c)
        block = torch.arange(start, start + loss.shape[1], device=hidden.device) // block_size  # (c,)
        blocks.index_add_(1, block, loss)
    return blocks


def _check_books(books: Sequence[torch.Tensor]) -> None:
    """At least one book, each a 1-D tensor of two or more token ids."""
    if not books:
        raise ValueError("books must hold at least one book, got none")
    for i, book in enumerate(books):
        if book.dim() != 1 or book.numel() < 2:
            raise ValueError(
                f"books[{i}] must be a 1-D tensor of >= 2 token ids, got shape {tuple(book.shape)}"
            )


def _batches(books: Sequence[torch.Tensor], batch_size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each forward pass: runs of consecutive books of equal length, at most
    ``batch_size`` long.

    Example: books of lengths (5, 5, 5, 7) with ``batch_size=2`` -> (0, 2), (2, 3), (3, 4).
    """
    start = 0
    while start < len(books):
        stop = start + 1
        while stop < len(books) and stop - start < batch_size and books[stop].numel() == books[start].numel():
            stop += 1
        yield start, stop
        start = stop


def evaluate_perplexity(
    model: nn.Module,
    books: Sequence[torch.Tensor],
    context: Callable[[], AbstractContextManager[Any]] | None = None,
    chunk_size: int = 1024,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> PerplexityResult:
    """Per-book NLL and token counts of ``model`` on ``books``.

    Args:
        model: a transformers causal LM (``get_decoder()`` gives the final hidden states,
            ``get_output_embeddings()`` the LM head; the supported families apply nothing else
            between them).
        books: token ids, each ``(L_i,)`` int64 with ``L_i >= 2``; book i contributes
            ``L_i - 1`` predicted tokens. Consecutive books of equal length share a forward
            pass, ``batch_size`` at a time.
        context: a zero-argument factory of the context manager to evaluate under (entered once
            around all books), e.g. ``lambda: apply_lampe(model, config)``; None: the stock model.
        chunk_size: positions per LM-head chunk (see ``token_nll``).
        batch_size: books per forward pass.
        progress: called as ``progress(done_books, total_books)`` after each forward pass.

    Returns:
        ``PerplexityResult`` with one entry per book, in order, and each book's NLL per block of
        ``BLOCK_SIZE`` predicted tokens.

    Example:
        >>> result = evaluate_perplexity(model, [ids[:1024] for ids in books])
        >>> result.ppl, result.book_ppl
    """
    _check_books(books)
    check_integer("chunk_size", chunk_size, 1)
    check_integer("batch_size", batch_size, 1)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    device = next(model.parameters()).device
    blocks: list[list[float]] = []
    started = time.perf_counter()
    with torch.inference_mode(), context() if context is not None else contextlib.nullcontext():
        for start, stop in _batches(books, batch_size):
            ids = torch.stack(list(books[start:stop])).to(device)  # (B, L)
            hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state  # (B, L, H)
            sums = token_nll_blocks(hidden[:, :-1], ids[:, 1:], head, chunk_size, BLOCK_SIZE)  # (B, n)
            blocks.extend(sums.tolist())
            if progress is not None:
                progress(stop, len(books))
    tokens = tuple(book.numel() - 1 for book in books)
    logger.debug("perplexity of %d books in %.2fs", len(books), time.perf_counter() - started)
    nll = tuple(math.fsum(b) for b in blocks)
    return PerplexityResult(nll, tokens, tuple(tuple(b) for b in blocks))
