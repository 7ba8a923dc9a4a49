"""Distance pieces: a position scheme as attentions over bands of relative distance.

LaMPE, SelfExtend, ReRoPE and STRING all give a (query, key) pair its positions by its
relative distance d = i − j alone: the causal triangle splits into pieces ``lo <= d <= hi``,
each with one query rotation and one key rotation, and attention is the LSE merge of the
pieces (``_merge``). LaMPE is three pieces (docs/design.md §1)::

    head    [0, s1]                 stock q, stock k
    middle  [s1 + 1, l − s2 − 1]    middle q, middle k     (l − t − 1 in floor mode)
    tail    [l − s2, ∞)             tail q, stock k

One piece on a fused kernel, for queries 0..S-1 over keys 0..S-1 (``piece_parts``):

- rows ``lo <= i <= hi`` see keys ``0..i − lo``: one top-left causal call between queries
  ``lo..`` and keys ``0..`` (row r = i − lo sees keys 0..r);
- rows ``i > hi`` see the band ``i − hi .. i − lo``: cut in chunks of C rows, the chunk from
  row c0 sees keys ``c0 − hi .. c0 + C − 1 − lo`` and row a of it sees key offsets
  ``a .. a + hi − lo`` — the same mask for every chunk, so all chunks go in one call with the
  chunks in the batch dim (keys as an overlapping ``unfold`` view, no copy).

Work: the causal triangle once, plus C·(hi − lo) extra pairs per chunk; no path is
quadratic in the band width times the length.

A decode step (a few new queries after ``past`` cached keys) needs, per piece, only the keys
``i − hi .. i − lo`` of its rows: one call on that window (``window_attention``).

On a window kernel (CUDA: flash-attn or FlexAttention, ``_windows``) a piece is one call, for a
prefill and a decode step alike (``window_piece``): the queries at positions ``first ..`` (rows
before lo dropped: they have no key) against the keys ``0 .. T − lo − 1``, causal aligned
bottom-right (query i meets key i − lo on the diagonal) with a left window of hi − lo keys.
In a prefill that is ``q[lo:]`` against ``k[:S − lo]``, equal lengths.

What a scheme provides: its plan's ``pieces()`` (``_plan.PositionPlan``) returns a tuple of
``Piece`` (or None when its rows do not share one set of pieces). Pieces must be disjoint,
cover d >= 0, and be valid for positions 0..S-1.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ._kernels import Kernels, attention_with_lse
from ._merge import merge_into
from ._plan import Piece
from ._windows import WindowFn

__all__ = [
    "BAND_CHUNK",
    "band_chunks",
    "band_mask",
    "merge_rows",
    "piece_attention",
    "piece_parts",
    "window_attention",
    "window_piece",
]

# Query rows per band chunk. The CPU flash kernel's cost per pair is flat from 128 to 256 rows
# and grows past it (measured at SmolLM2's shape, 2 cores); smaller chunks waste fewer pairs
# (C · (hi − lo) per chunk beyond the band).
BAND_CHUNK = 128
# Bands at least this many chunks wide run as three calls per chunk (see ``band_chunks``): a
# mask as wide as LaMPE's middle (~10K keys) made the one masked call ~25% slower than the
# split; at s1 = 1024 the two were even (both measured at SmolLM2's shape, 2 cores).
SPLIT_WIDTH_CHUNKS = 16
# Query rows merged at a time on the window path: bounds merge_into's float32 copies of the
# output (8192 rows · 32 heads · 128 · 4 bytes = 128 MiB each).
MERGE_ROWS = 8192


def band_mask(rows: int, span: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive ``(rows, span)`` mask: row a sees columns ``a .. a + width``.

    Example: ``band_mask(2, 3, 1, ...)`` -> ``[[0, 0, -inf], [-inf, 0, 0]]``.
    """
    a = torch.arange(rows, device=device)[:, None]
    t = torch.arange(span, device=device)[None, :]
    keep = (t >= a) & (t <= a + width)
    return torch.zeros(rows, span, dtype=dtype, device=device).masked_fill_(~keep, float("-inf"))


def band_chunks(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, width: int, scale: float, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row a of q sees key offsets ``a .. a + width``: q ``(N, H, C, D)``, k and v
    ``(N, Hkv, C + width, D)`` -> out ``(N, H, C, D)``, lse ``(N, H, C)``.

    A band much wider than C splits into three key ranges that every row reaches: offsets
    ``0 .. C − 1`` (row a from a: a small mask), ``C .. width − 1`` (every row: no mask) and
    ``width .. width + C − 1`` (row a up to width + a: top-left causal).
    """
    C = q.shape[2]
    if width < SPLIT_WIDTH_CHUNKS * C:
        mask = band_mask(C, C + width, width, q.dtype, q.device)
        return attention_with_lse(q, k, v, scale, mask=mask, backend=backend)
    left = band_mask(C, C, C, q.dtype, q.device)
    out, lse = attention_with_lse(q, k[:, :, :C], v[:, :, :C], scale, mask=left, backend=backend)
    out = out.float()
    for keys, causal in ((slice(C, width), False), (slice(width, width + C), True)):
        part = attention_with_lse(q, k[:, :, keys], v[:, :, keys], scale, causal, backend=backend)
        merge_into(out, lse, *part)
    return out.to(q.dtype), lse


def piece_parts(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lo: int,
    hi: int | None,
    scale: float,
    chunk: int | None = None,
    backend: str | None = None,
) -> Iterator[tuple[slice, int, torch.Tensor, torch.Tensor]]:
    """One piece of a prefill (queries and keys at positions 0..S-1), in parts.

    Args:
        q: ``(B, H, S, D)`` rotated for the piece; k, v: ``(B, Hkv, S, D)``.
        chunk: band rows per chunk, default ``BAND_CHUNK``.
        backend: a ``BACKENDS`` key (default: ``pick_backend`` per call).

    Yields:
        ``(batch, row, out, lse)``: rows ``row .. row + n − 1`` of batch rows ``batch``, out
        ``(b, H, n, D)``, lse ``(b, H, n)`` float32; every yielded row sees at least one key.
    """
    B, H, S, D = q.shape
    chunk = chunk or BAND_CHUNK
    every = slice(0, B)
    stop = S if hi is None else min(S, hi + 1)
    if stop > lo:
        # Rows lo..stop-1 see keys 0..i-lo: top-left causal.
        out, lse = attention_with_lse(
            q[:, :, lo:stop], k[:, :, : stop - lo], v[:, :, : stop - lo], scale, True, backend=backend
        )
        yield every, lo, out, lse
    if hi is None or hi + 1 >= S:
        return
    width = hi - lo  # row a of a chunk sees key offsets a .. a + width
    first, rows = hi + 1, S - hi - 1
    full = rows // chunk
    if full:
        span = chunk + width
        keys_stop = first - hi + (full - 1) * chunk + span
        for b in range(B):
            # (H, full·C, D) -> (full, H, C, D); keys (Hkv, ·, D) -> overlapping (full, Hkv, span, D).
            qc = q[b, :, first : first + full * chunk].unflatten(1, (full, chunk)).transpose(0, 1)
            kc = k[b, :, first - hi : keys_stop].unfold(1, span, chunk).permute(1, 0, 3, 2)
            vc = v[b, :, first - hi : keys_stop].unfold(1, span, chunk).permute(1, 0, 3, 2)
            out, lse = band_chunks(qc, kc, vc, width, scale, backend)  # (full, H, C, D)
            out = out.transpose(0, 1).reshape(1, H, full * chunk, D)
            lse = lse.transpose(0, 1).reshape(1, H, full * chunk)
            yield slice(b, b + 1), first, out, lse
    rest = rows - full * chunk
    if rest:
        c0 = first + full * chunk
        keys = slice(c0 - hi, c0 + rest - lo)
        out, lse = band_chunks(q[:, :, c0:], k[:, :, keys], v[:, :, keys], width, scale, backend)
        yield every, c0, out, lse


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    first: int,
    lo: int,
    hi: int | None,
    scale: float,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Queries at positions ``first .. first + S − 1`` over the keys ``k`` (positions 0..T-1)
    with ``lo <= i − j <= hi``: the decode step of one piece.

    Args:
        q: ``(B, H, S, D)``; k, v: ``(B, Hkv, T, D)`` (any strides, e.g. a view of a cache).
        backend: a ``BACKENDS`` key (default: ``pick_backend`` per call).

    Returns:
        out ``(B, H, S, D)``, lse ``(B, H, S)`` float32 (0 and -inf for rows with no key), or
        None when no row sees a key of the piece.
    """
    B, H, S, D = q.shape
    T = k.shape[2]
    start = max(0, lo - first)  # rows before position lo have no key in the piece
    if start >= S:
        return None
    k0 = 0 if hi is None else max(0, first + start - hi)
    k1 = min(T, first + S - lo)  # exclusive
    mask = None
    if S - start > 1:
        i = torch.arange(first + start, first + S, device=q.device)[:, None]
        j = torch.arange(k0, k1, device=q.device)[None, :]
        d = i - j
        keep = (d >= lo) if hi is None else (d >= lo) & (d <= hi)
        mask = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill_(~keep, float("-inf"))
    part, part_lse = attention_with_lse(
        q[:, :, start:], k[:, :, k0:k1], v[:, :, k0:k1], scale, mask=mask, backend=backend
    )
    if start == 0:
        return part, part_lse
    out = q.new_zeros(B, H, S, D)
    lse = q.new_full((B, H, S), float("-inf"), dtype=torch.float32)
    out[:, :, start:], lse[:, :, start:] = part, part_lse
    return out, lse


def window_piece(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lo: int, hi: int | None, scale: float, window: WindowFn
) -> tuple[int, torch.Tensor, torch.Tensor] | None:
    """The piece ``lo <= i − j <= hi`` of the last S positions of T keys as one windowed call.

    Args:
        q: ``(B, H, S, D)`` at positions ``T − S .. T − 1``; k, v: ``(B, Hkv, T, D)`` at 0..T-1.
        window: a ``WindowFn`` (``_windows``).

    Returns:
        ``(start, out, lse)`` for query rows ``start ..`` (the rows before have no key in the
        piece), out ``(B, H, S − start, D)``, lse ``(B, H, S − start)``; None when no row has a key.

    Example: a prefill of S = 10 and the piece [3, 5] -> rows 3..9 against keys 0..6, each
    row r (position i = r + 3) seeing keys ``r − 2 .. r``, i.e. ``i − 5 .. i − 3``.
    """
    S, T = q.shape[2], k.shape[2]
    start = max(0, lo - (T - S))  # positions i < lo see no key
    if start >= S:
        return None
    keys = T - lo  # query i meets key i - lo on the bottom-right diagonal
    out, lse = window(q[:, :, start:], k[:, :, :keys], v[:, :, :keys], scale, True, _left(lo, hi))
    return start, out, lse


def merge_rows(
    out: torch.Tensor, lse: torch.Tensor, start: int, part: torch.Tensor, part_lse: torch.Tensor, first: bool
) -> None:
    """Merge a piece's rows ``start ..`` into the running ``out`` ``(B, H, S, D)`` and ``lse``
    ``(B, H, S)``: copied when it is the ``first`` piece written, else merged ``MERGE_ROWS``
    rows at a time (the float32 temporaries of ``merge_into`` stay small at 128K tokens)."""
    if first:
        out[:, :, start:] = part
        lse[:, :, start:] = part_lse.masked_fill(part_lse == float("inf"), float("-inf"))  # flash: empty
        return
    n = part.shape[2]
    for a in range(0, n, MERGE_ROWS):
        b = min(n, a + MERGE_ROWS)
        rows = slice(start + a, start + b)
        merge_into(out[:, :, rows], lse[:, :, rows], part[:, :, a:b], part_lse[:, :, a:b])


def _left(lo: int, hi: int | None) -> int | None:
    """The window's reach to the left of the diagonal: hi − lo keys, None when hi is open."""
    return None if hi is None else hi - lo


def piece_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    pieces: tuple[Piece, ...],
    scale: float,
    kernels: Kernels | None = None,
) -> torch.Tensor:
    """Attention of the last S positions of T keys as the LSE merge of distance pieces.

    Args:
        queries: ``(R, B, H, S, D)`` per query rotation; keys ``(V, B, Hkv, T, D)`` per key
            rotation; values ``(B, Hkv, T, D)``; positions are 0..T-1, the queries the last S
            (a prefill when T == S, else a step after ``T − S`` cached keys: keep S small, a
            step builds an ``(S × window)`` mask per piece).
        pieces: disjoint, covering d >= 0 (``PositionPlan.pieces``).
        kernels: the session's kernels (``choose_kernels``); None: ``pick_backend`` per call.

    Returns:
        ``(B, H, S, D)`` in the queries' dtype.
    """
    _, B, H, S, D = queries.shape
    past = keys.shape[3] - S
    out = queries.new_zeros(B, H, S, D)
    lse = queries.new_full((B, H, S), float("-inf"), dtype=torch.float32)
    seen = False  # a window piece has been written
    for piece in pieces:
        if piece.hi is not None and piece.hi < piece.lo:
            continue  # an empty piece (e.g. no middle when l - s2 = s1 + 1)
        q, k = queries[piece.query], keys[piece.key]
        if kernels is not None and kernels.window is not None:
            part = window_piece(q, k, values, piece.lo, piece.hi, scale, kernels.window)
            if part is not None:
                merge_rows(out, lse, *part, first=not seen)
                seen = True
            continue
        backend = None if kernels is None else kernels.backend
        if past == 0:
            for batch, row, part_out, part_lse in piece_parts(
                q, k, values, piece.lo, piece.hi, scale, backend=backend
            ):
                n = part_out.shape[2]
                merge_into(out[batch, :, row : row + n], lse[batch, :, row : row + n], part_out, part_lse)
            continue
        step = window_attention(q, k, values, past, piece.lo, piece.hi, scale, backend)
        if step is not None:
            merge_into(out, lse, *step)
    return out
