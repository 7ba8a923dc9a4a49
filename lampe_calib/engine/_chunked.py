"""Dual Chunk Attention's three regions as fused attentions (prefill and decode).

DCA's regions follow the chunk index, not the distance (``_dca``): with chunks of s tokens,
a query in chunk c sees

    intra       its own chunk, causally    keys cs .. i           one causal call per chunk
    successive  the whole previous chunk   keys (c−1)s .. cs − 1  a full rectangle
    inter       every earlier chunk        keys 0 .. (c−1)s − 1   a full rectangle

so in a prefill all intra blocks go in one causal call with the chunks in the batch dim, all
successive blocks in one unmasked call (query chunk c against key chunk c − 1, both as views),
and each chunk's inter block in one unmasked call: the causal triangle once, no mask, no copy
of the keys. A decode step's rows (all in one chunk) take the same three key ranges.

Every call is causal between equal lengths or unmasked, so on a window kernel (CUDA) each runs
as one call there (``Kernels.attention``), grouped KV heads read in place.
"""

from __future__ import annotations

import math

import torch

from ._kernels import Kernels, plain_kernels
from ._merge import merge_into
from ._pieces import merge_rows, window_attention, window_piece

__all__ = ["INTER", "INTRA", "SUCCESSIVE", "chunk_attention"]

# Query rotations, in the order of ``DualChunkPlan.query_positions``.
INTRA, SUCCESSIVE, INTER = 0, 1, 2


def _by_chunks(x: torch.Tensor, start: int, count: int, size: int) -> torch.Tensor:
    """``(H, T, D)`` rows ``start .. start + count·size`` -> ``(count, H, size, D)`` (a view)."""
    return x[:, start : start + count * size].unflatten(1, (count, size)).transpose(0, 1)


def _unchunk(o: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, H, s, D)``, ``(n, H, s)`` chunks in the batch dim -> ``(1, H, n·s, D)``, ``(1, H, n·s)``."""
    n, H, s, D = o.shape
    return o.transpose(0, 1).reshape(1, H, n * s, D), lse.transpose(0, 1).reshape(1, H, n * s)


def _prefill(queries, keys, values, s, scale, out, lse, kernels):
    _, B, H, S, D = queries.shape
    k, v = keys[0], values
    full, rest = divmod(S, s)
    every = slice(0, B)

    def add(batch: slice, row: int, o: torch.Tensor, part_lse: torch.Tensor) -> None:
        # Merged at once, so no more than one part's output is alive: o (b, H, n, D).
        n = o.shape[2]
        merge_into(out[batch, :, row : row + n], lse[batch, :, row : row + n], o, part_lse)

    for b in range(B):
        one = slice(b, b + 1)
        if full:
            q_c, k_c, v_c = (_by_chunks(x, 0, full, s) for x in (queries[INTRA, b], k[b], v[b]))
            add(one, 0, *_unchunk(*kernels.attention(q_c, k_c, v_c, scale, causal=True)))
        if full >= 2:
            q_c = _by_chunks(queries[SUCCESSIVE, b], s, full - 1, s)  # chunk c against chunk c - 1
            k_c, v_c = (_by_chunks(x, 0, full - 1, s) for x in (k[b], v[b]))
            add(one, s, *_unchunk(*kernels.attention(q_c, k_c, v_c, scale)))
    if rest:
        c0 = full * s
        rows = slice(c0, S)
        intra = kernels.attention(
            queries[INTRA, :, :, rows], k[:, :, rows], v[:, :, rows], scale, causal=True
        )
        add(every, c0, *intra)
        if full:
            prev = slice(c0 - s, c0)
            successive = kernels.attention(
                queries[SUCCESSIVE, :, :, rows], k[:, :, prev], v[:, :, prev], scale
            )
            add(every, c0, *successive)
    for c in range(2, math.ceil(S / s)):
        rows, before = slice(c * s, min(S, (c + 1) * s)), slice(0, (c - 1) * s)
        inter = kernels.attention(queries[INTER, :, :, rows], k[:, :, before], v[:, :, before], scale)
        add(every, c * s, *inter)


def chunk_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    chunk: int,
    scale: float,
    kernels: Kernels | None = None,
) -> torch.Tensor | None:
    """DCA attention of the last S positions of T keys (``past = T − S``).

    Args:
        queries: ``(3, B, H, S, D)`` rotated for INTRA, SUCCESSIVE, INTER.
        keys: ``(1, B, Hkv, T, D)`` rotated at j mod s; values ``(B, Hkv, T, D)``.
        chunk: s.
        kernels: the session's kernels (default: ``plain_kernels``, the backend of the queries).

    Returns:
        ``(B, H, S, D)``, or None for a step whose queries span two chunks after a cache
        (the dense path runs it).
    """
    _, B, H, S, D = queries.shape
    T = keys.shape[3]
    past = T - S
    if kernels is None:
        kernels = plain_kernels(queries)
    out = queries.new_zeros(B, H, S, D)
    lse = queries.new_full((B, H, S), float("-inf"), dtype=torch.float32)
    if past == 0:
        _prefill(queries, keys, values, chunk, scale, out, lse, kernels)
        return out
    c = past // chunk
    if (T - 1) // chunk != c:
        return None
    k, v, c0 = keys[0], values, c * chunk
    if kernels.window is not None:
        intra = window_piece(queries[INTRA], k[:, :, c0:], v[:, :, c0:], 0, None, scale, kernels.window)
        assert intra is not None and intra[0] == 0  # every query sees itself
        merge_rows(out, lse, *intra, first=True)
    else:
        intra = window_attention(
            queries[INTRA], k[:, :, c0:], v[:, :, c0:], past - c0, 0, None, scale, kernels.backend
        )
        assert intra is not None  # every query sees itself
        merge_into(out, lse, *intra)
    for region, keep in ((SUCCESSIVE, slice(c0 - chunk, c0)), (INTER, slice(0, c0 - chunk))):
        if keep.stop > max(0, keep.start):
            merge_into(out, lse, *kernels.attention(queries[region], k[:, :, keep], v[:, :, keep], scale))
    return out
