"""How sure a perplexity comparison is: a method's PPL ratio to a reference method on the same
books, with a paired bootstrap interval.

Both methods predict the same tokens, so the comparison is paired: what varies between books
(one book is harder than another for every method) cancels in the per-block NLL difference.
The bootstrap resamples at both levels the data was drawn at (Davison & Hinkley 1997, §3.8):
books with replacement, then blocks with replacement within each drawn book. Resampling both
levels counts the within-book noise once more than a single draw holds, so the interval is, if
anything, a little wide when a few long books dominate; with many books it tends to the one-level
interval over books.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .._checks import check_integer

__all__ = ["paired_ratio", "paired_ratio_interval"]


def _arrays(
    nll: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], tokens: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat per-block NLL differences, token counts, and each book's first block index."""
    shapes = [[len(b) for b in x] for x in (nll, reference, tokens)]
    if not shapes[2] or shapes[0] != shapes[2] or shapes[1] != shapes[2]:
        raise ValueError(
            f"nll, reference and tokens must hold the same books and blocks, got block counts {shapes}"
        )
    if any(n == 0 for n in shapes[2]):
        raise ValueError("every book must hold at least one block")
    pairs = zip(nll, reference, strict=True)
    diff = np.array([a - b for x, y in pairs for a, b in zip(x, y, strict=True)], dtype=np.float64)
    count = np.array([n for book in tokens for n in book], dtype=np.float64)
    if (count <= 0).any():
        raise ValueError("token counts must be > 0")
    starts = np.cumsum([0, *shapes[2][:-1]])
    return diff, count, starts


def paired_ratio(
    nll: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], tokens: Sequence[Sequence[int]]
) -> float:
    """PPL of a method over PPL of the reference on the same tokens: exp(Σ(nll − ref) / Σ tokens).

    Args:
        nll, reference: per book, the NLL sum (nats) of each block, for the method and the reference.
        tokens: per book, the predicted tokens of each block (the same for both: they are paired).

    Example: ``paired_ratio([[10.0, 12.0]], [[10.0, 10.0]], [[10, 10]])`` -> ``exp(0.1)`` = 1.105…
    """
    diff, count, _ = _arrays(nll, reference, tokens)
    return math.exp(float(diff.sum() / count.sum()))


def paired_ratio_interval(
    nll: Sequence[Sequence[float]],
    reference: Sequence[Sequence[float]],
    tokens: Sequence[Sequence[int]],
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``paired_ratio`` from a two-level paired bootstrap.

    Each resample draws as many books as there are, with replacement, and within each drawn book
    as many of its blocks as it has, with replacement; the ratio of the resample is
    exp(Σ drawn differences / Σ drawn tokens).

    Args:
        nll, reference, tokens: as in ``paired_ratio``.
        level: the interval's coverage, in (0, 1).
        resamples: bootstrap resamples.
        seed: seed of the resampling (the same seed, the same interval).

    Returns:
        ``(low, high)``; ``(r, r)`` when every block's difference per token is the same ``log r``.

    Example:
        >>> paired_ratio_interval([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]], [[8, 8], [8, 8]])
        (1.0, 1.0)
        >>> low, high = paired_ratio_interval([[11.0, 9.0], [12.0, 10.5]], [[10.0, 10.0]] * 2, [[10, 10]] * 2)
        >>> low < paired_ratio([[11.0, 9.0], [12.0, 10.5]], [[10.0, 10.0]] * 2, [[10, 10]] * 2) < high
        True
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    check_integer("resamples", resamples, 1)
    diff, count, starts = _arrays(nll, reference, tokens)
    sizes = np.array([len(book) for book in tokens])
    rng = np.random.default_rng(seed)
    n_books = len(sizes)
    ratios = np.empty(resamples)
    for r in range(resamples):
        books = rng.integers(n_books, size=n_books)  # (n_books,)
        per_book = sizes[books]  # blocks drawn in each drawn book
        owner = np.repeat(books, per_book)  # (Σ blocks,) the drawn book of each drawn block
        picks = starts[owner] + (rng.random(owner.size) * sizes[owner]).astype(np.int64)
        ratios[r] = diff[picks].sum() / count[picks].sum()
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return math.exp(float(low)), math.exp(float(high))
