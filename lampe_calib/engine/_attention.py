"""The attention engine: per query, attentions over disjoint key sets, each with its own
rotation, merged exactly (docs/design.md §1).

Layout everywhere: ``(B, H, S, D)`` for queries, ``(B, Hkv, T, D)`` for keys and values, with
``H = Hkv · G`` (grouped-query attention: query head h reads KV head h // G). Per-region
rotations are stacked in front: queries ``(R, B, H, S, D)``, keys ``(V, B, Hkv, T, D)``.

Two paths, one result:

- ``fused_attention``: a plan (``_plan.PositionPlan``) with distance pieces
  (``pieces()``: LaMPE, SelfExtend, STRING, ReRoPE; ``_pieces``) or chunks (``chunks()``: DCA;
  ``_chunked``), on fused kernels that return their LSE, merged through it: the causal
  triangle about once. It runs prefills (left padding one row at a time) and cached steps of
  up to ``DECODE_ROWS`` queries (any number on a window kernel, which needs no mask); it
  returns None for anything else.
- ``dense_region_attention``: any plan, any positions, padding, a KV cache, soft-capped
  logits (Gemma 2). Works in blocks
  of queries, so it holds a ``(block × T)`` score tile, never ``S × T``. It computes every
  region's logits for a block and keeps, for each pair, the logit of the pair's region: one
  softmax, no merge needed. The reference the fused path is tested against.
"""

from __future__ import annotations

import torch

from ._chunked import chunk_attention
from ._kernels import Kernels
from ._pieces import piece_attention
from ._plan import PositionPlan

__all__ = ["DECODE_ROWS", "DENSE_BLOCK", "dense_region_attention", "fused_attention"]

# Query rows per tile in the dense path: a (B, H, block, T) fp32 tile per region.
DENSE_BLOCK = 128
# Cached steps with at most this many new queries run fused: each piece builds an
# (S × window) mask, small for decoding; longer continuations take the dense path.
DECODE_ROWS = 64


def dense_region_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: PositionPlan,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    key_valid: torch.Tensor | None,
    scale: float,
    block: int = DENSE_BLOCK,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region attention for any plan, in query blocks.

    Args:
        queries: ``(R, B, H, S, D)`` rotated per region (R = regions of the plan).
        keys: ``(V, B, Hkv, T, D)`` rotated per key version.
        values: ``(B, Hkv, T, D)``.
        plan: region assignment (``plan.regions``) and region -> key version.
        query_positions: ``(B, S)`` token positions of the queries.
        key_positions: ``(B, T)`` token positions of the keys.
        key_valid: ``(B, T)`` bool, False for padding; None when every key is real.
        scale: logit scale.
        softcap: c for logits soft-capped as ``c·tanh(s/c)`` (Gemma 2), or None. Every pair's
            logit is capped before the one softmax, so the result is exact; the fused path,
            which merges kernels that take no cap, cannot run such a model.

    Returns:
        out ``(B, H, S, D)`` (0 for a query with no visible key), lse ``(B, H, S)`` float32.
    """
    B, H, S, D = queries.shape[1:]
    out = queries.new_zeros(B, H, S, D)
    lse = queries.new_full((B, H, S), float("-inf"), dtype=torch.float32)
    for start in range(0, S, block):
        rows = slice(start, min(S, start + block))
        qpos = query_positions[:, rows]  # (B, n)
        scores = _block_scores(
            queries[:, :, :, rows], keys, plan, qpos, key_positions, key_valid, scale, softcap
        )
        block_lse = torch.logsumexp(scores, dim=-1)  # (B, Hkv, G, n)
        safe = torch.where(torch.isfinite(block_lse), block_lse, torch.zeros_like(block_lse))
        probs = torch.exp(scores - safe[..., None])  # exactly 0 where masked
        n, T = scores.shape[3], scores.shape[4]
        o = probs.view(B, keys.shape[2], -1, T).to(values.dtype) @ values  # (B, Hkv, G·n, D)
        out[:, :, rows] = o.view(B, H, n, D).to(out.dtype)
        lse[:, :, rows] = block_lse.reshape(B, H, n)
    return out, lse


def _block_scores(
    queries: torch.Tensor,
    keys: torch.Tensor,
    plan: PositionPlan,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    key_valid: torch.Tensor | None,
    scale: float,
    softcap: float | None,
) -> torch.Tensor:
    """Logits of a block of n queries ``(R, B, H, n, D)`` over keys ``(V, B, Hkv, T, D)``: each
    visible pair (causal by position, real key) gets the logit of its region, the rest -inf;
    ``(B, Hkv, G, n, T)`` float32."""
    R, B, H, n, D = queries.shape
    Hkv, T = keys.shape[2], keys.shape[3]
    G = H // Hkv
    visible = key_positions[:, None, :] <= query_positions[:, :, None]  # (B, n, T) causal by position
    if key_valid is not None:
        visible = visible & key_valid[:, None, :]
    region = plan.regions(query_positions, key_positions)  # (B, n, T)
    scores = queries.new_full((B, Hkv, G, n, T), float("-inf"), dtype=torch.float32)
    for r in range(R):
        pairs = visible & (region == r)  # (B, n, T)
        if not bool(pairs.any()):
            continue
        q = queries[r].reshape(B, Hkv, G * n, D)
        k = keys[plan.region_key_version[r]]  # (B, Hkv, T, D)
        s = (q @ k.transpose(-1, -2)).float().view(B, Hkv, G, n, T) * scale
        if softcap is not None:
            s = torch.tanh(s / softcap) * softcap
        scores = torch.where(pairs[:, None, None], s, scores)
    return scores


def _fused_rows(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: PositionPlan,
    scale: float,
    kernels: Kernels | None,
) -> torch.Tensor | None:
    """``fused_attention`` for rows without padding (positions 0..T-1, queries the last S)."""
    S, T = queries.shape[3], keys.shape[3]
    windowed = kernels is not None and kernels.window is not None  # no (S × window) masks
    if T > S and S > DECODE_ROWS and not windowed:
        return None
    pieces = plan.pieces()
    if pieces is not None:
        return piece_attention(queries, keys, values, pieces, scale, kernels)
    chunk_size = plan.chunks()
    if chunk_size is not None:
        return chunk_attention(queries, keys, values, chunk_size, scale, kernels)
    return None


def fused_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: PositionPlan,
    key_valid: torch.Tensor | None,
    scale: float,
    kernels: Kernels | None = None,
) -> torch.Tensor | None:
    """Region attention on fused kernels, or None where only the dense path applies.

    Args:
        queries: ``(R, B, H, S, D)`` rotated per region; keys ``(V, B, Hkv, T, D)`` per key
            version; values ``(B, Hkv, T, D)``; the queries are the last S of the T tokens.
        plan: the batch's plan (``PositionScheme.plan``).
        key_valid: ``(B, T)`` bool, left padding only (each row's real tokens at the right
            end; the caller checks), or None.
        kernels: the session's kernels (``choose_kernels``); None: ``pick_backend`` per call.

    Returns:
        ``(B, H, S, D)`` (0 for padding queries), equal to ``dense_region_attention``; None for a
        plan without pieces or chunks, or a cached step of more than ``DECODE_ROWS`` queries
        without a window kernel.
    """
    if key_valid is None:
        return _fused_rows(queries, keys, values, plan, scale, kernels)
    _, B, H, S, D = queries.shape
    T = keys.shape[3]
    out = queries.new_zeros(B, H, S, D)
    for b in range(B):
        pad = T - int(key_valid[b].sum())
        start = max(0, pad - (T - S))  # the first query row that is a real token
        if start >= S:
            continue
        row = _fused_rows(
            queries[:, b : b + 1, :, start:],
            keys[:, b : b + 1, :, pad:],
            values[b : b + 1, :, pad:],
            plan.row(b),
            scale,
            kernels,
        )
        if row is None:
            return None
        out[b : b + 1, :, start:] = row
    return out
