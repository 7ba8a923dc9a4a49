"""The LaMPE attention engine: per query, attentions over disjoint key sets, each with its own
rotation, merged exactly (DESIGN §1).

Layout everywhere: ``(B, H, S, D)`` for queries, ``(B, Hkv, T, D)`` for keys and values, with
``H = Hkv · G`` (grouped-query attention: query head h reads KV head h // G). Per-region
rotations are stacked in front: queries ``(R, B, H, S, D)``, keys ``(V, B, Hkv, T, D)``.

Two paths, one result:

- ``dense_region_attention``: any plan, any positions, padding, a KV cache (decoding). Works in
  blocks of queries, so it holds a ``(block × T)`` score tile, never ``S × T``. It computes every
  region's logits for a block and keeps, for each pair, the logit of the pair's region: one
  softmax, no merge needed.
- ``lampe_prefill``: the common prefill (no cache, no padding, one plan for the batch). The
  middle region is a plain causal attention between shifted slices (query i sees keys
  j <= i - s1 - 1), which runs on a fused kernel that returns its LSE; the head band runs in
  small blocks; both merge through their LSE; the at most s2 rows that reach the tail corner
  run on the dense path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._kernels import causal_attention_with_lse
from ._merge import merge_attention
from ._positions import HEAD, MIDDLE, LampePlan

__all__ = ["band_attention", "dense_region_attention", "expand_kv", "lampe_prefill"]

# Query rows per tile in the dense path: a (B, H, block, T) fp32 tile per region.
DENSE_BLOCK = 128
# Query rows per tile of the head band: tiles of (block, block + s1) logits.
BAND_BLOCK = 32
# Query rows per pass of the head band (bounds its temporaries; any multiple of BAND_BLOCK).
# On a GPU, launches cost more than memory, so passes are longer.
BAND_ROWS = {"cpu": 1024, "cuda": 16384}


def expand_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``(B, Hkv, T, D)`` -> ``(B, Hkv·G, T, D)``: each KV head repeated for its G query heads."""
    if groups == 1:
        return x
    B, Hkv, T, D = x.shape
    return x[:, :, None].expand(B, Hkv, groups, T, D).reshape(B, Hkv * groups, T, D)


def dense_region_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: LampePlan,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    key_valid: torch.Tensor | None,
    scale: float,
    block: int = DENSE_BLOCK,
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

    Returns:
        out ``(B, H, S, D)`` (0 for a query with no visible key), lse ``(B, H, S)`` float32.
    """
    R, B, H, S, D = queries.shape
    Hkv, T = keys.shape[2], keys.shape[3]
    G = H // Hkv
    out = queries.new_zeros(B, H, S, D)
    lse = queries.new_full((B, H, S), float("-inf"), dtype=torch.float32)
    for start in range(0, S, block):
        stop = min(S, start + block)
        n = stop - start
        qpos = query_positions[:, start:stop]  # (B, n)
        region = plan.regions(qpos, key_positions)  # (B, n, T)
        visible = key_positions[:, None, :] <= qpos[:, :, None]  # (B, n, T) causal by position
        if key_valid is not None:
            visible = visible & key_valid[:, None, :]
        scores = queries.new_full((B, Hkv, G, n, T), float("-inf"), dtype=torch.float32)
        for r in range(R):
            pairs = visible & (region == r)  # (B, n, T)
            if not bool(pairs.any()):
                continue
            q = queries[r, :, :, start:stop].reshape(B, Hkv, G * n, D)
            k = keys[plan.region_key_version[r]]  # (B, Hkv, T, D)
            s = (q @ k.transpose(-1, -2)).float().view(B, Hkv, G, n, T) * scale
            scores = torch.where(pairs[:, None, None], s, scores)
        block_lse = torch.logsumexp(scores, dim=-1)  # (B, Hkv, G, n)
        safe = torch.where(torch.isfinite(block_lse), block_lse, torch.zeros_like(block_lse))
        probs = torch.exp(scores - safe[..., None])  # exactly 0 where masked
        o = probs.view(B, Hkv, G * n, T).to(values.dtype) @ values  # (B, Hkv, G·n, D)
        out[:, :, start:stop] = o.view(B, H, n, D).to(out.dtype)
        lse[:, :, start:stop] = block_lse.reshape(B, H, n)
    return out, lse


def band_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    width: int,
    scale: float,
    block: int = BAND_BLOCK,
    rows_per_pass: int | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of query i over keys ``max(0, i - width) .. i`` (the head band), with its LSE.

    Args:
        q: ``(B, H, S, D)``; k, v: ``(B, Hkv, S, D)`` (same positions as the queries).
        out: optional ``(B, H, S, D)`` buffer to write the output into.

    Returns:
        out ``(B, H, S, D)``, lse ``(B, H, S)`` float32.

    Queries are cut in tiles of ``block`` rows; tile t sees the ``block + width`` keys ending
    at its last row, gathered with ``unfold``. Tiles run ``rows_per_pass`` rows at a time
    (default per device, ``BAND_ROWS``), so the working set stays a small multiple of
    ``rows_per_pass × (block + width)``.
    """
    B, H, S, D = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    span = block + width
    out = q.new_empty(B, H, S, D) if out is None else out
    lse = q.new_empty(B, H, S, dtype=torch.float32)
    a = torch.arange(block, device=q.device)[:, None]
    c = torch.arange(span, device=q.device)[None, :]
    rows_per_pass = rows_per_pass or BAND_ROWS.get(q.device.type, 1024)
    rows_per_pass = max(block, rows_per_pass // block * block)
    for start in range(0, S, rows_per_pass):
        stop = min(S, start + rows_per_pass)
        n_tiles = math.ceil((stop - start) / block)
        pad_q = n_tiles * block - (stop - start)
        qt = F.pad(q[:, :, start:stop], (0, 0, 0, pad_q)).view(B, Hkv, G, n_tiles, block, D)
        # Keys from `width` before the first row (zeros before key 0) to the padded last row.
        lo = start - width
        kp = F.pad(k[:, :, max(0, lo) : stop], (0, 0, max(0, -lo), pad_q))  # (B, Hkv, span-ish, D)
        vp = F.pad(v[:, :, max(0, lo) : stop], (0, 0, max(0, -lo), pad_q))
        kt = kp.unfold(2, span, block).transpose(-1, -2)  # (B, Hkv, n_tiles, span, D)
        vt = vp.unfold(2, span, block).transpose(-1, -2)
        scores = torch.einsum("bhgtqd,bhtkd->bhgtqk", qt * scale, kt).float()  # (B, Hkv, G, n, block, span)
        # Row a of a tile sits at key column a + width; it sees columns a .. a + width and never
        # a key before the sequence start (global index < 0).
        tile_start = start + torch.arange(n_tiles, device=q.device)[:, None, None] * block
        in_band = (c <= a + width) & (c >= a) & (tile_start + c - width >= 0)  # (n, block, span)
        scores.masked_fill_(~in_band, float("-inf"))
        pass_lse = torch.logsumexp(scores, dim=-1)  # (B, Hkv, G, n, block)
        probs = scores.sub_(pass_lse[..., None]).exp_().to(v.dtype)
        o = torch.einsum("bhgtqk,bhtkd->bhgtqd", probs, vt)
        out[:, :, start:stop] = o.reshape(B, H, n_tiles * block, D)[:, :, : stop - start]
        lse[:, :, start:stop] = pass_lse.reshape(B, H, n_tiles * block)[:, :, : stop - start]
    return out, lse


def lampe_prefill(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: LampePlan,
    scale: float,
    backend: str | None = None,
) -> torch.Tensor:
    """Prefill fast path: no cache, no padding, positions ``0..S-1``, one (l, m) for all rows.

    Args:
        queries: ``(3, B, H, S, D)`` rotated for HEAD, MIDDLE, TAIL.
        keys: ``(2, B, Hkv, S, D)`` rotated at stock and middle positions.
        values: ``(B, Hkv, S, D)``.
        plan: a plan whose rows all share l and m.
        backend: kernel for the middle region (``_kernels.BACKENDS``), default the fastest.

    Returns:
        ``(B, H, S, D)``, equal to ``dense_region_attention`` on the same inputs.
    """
    _, B, H, S, D = queries.shape
    G = H // keys.shape[2]
    if not bool(plan.compressed[0]):
        # l <= m: every pair is in the head's stock rotation; one causal attention.
        k, v = expand_kv(keys[0], G), expand_kv(values, G)
        return causal_attention_with_lse(queries[HEAD], k, v, scale, backend)[0]
    s1 = plan.head
    # Query rows below l - s2 never reach the tail corner (their largest d is i < l - s2).
    regular = min(S, math.ceil(float(plan.tail_start[0])))
    out = queries.new_empty(B, H, S, D)
    _, band_lse = band_attention(
        queries[HEAD, :, :, :regular],
        keys[0, :, :, :regular],
        values[:, :, :regular],
        s1,
        scale,
        out=out[:, :, :regular],
    )
    first_mid = s1 + 1  # the first query with a middle key (d = s1 + 1)
    if regular > first_mid:
        # Middle: query i sees keys j <= i - s1 - 1, i.e. a top-left causal attention between
        # queries first_mid.. and keys 0.. (row r = i - s1 - 1 sees keys 0..r).
        n = regular - first_mid
        mid_out, mid_lse = causal_attention_with_lse(
            queries[MIDDLE, :, :, first_mid:regular],
            expand_kv(keys[1, :, :, :n], G),
            expand_kv(values[:, :, :n], G),
            scale,
            backend,
        )
        # Rows first_mid.. hold the band's output: merge the middle into them in place.
        merge_attention(
            [out[:, :, first_mid:regular], mid_out], [band_lse[:, :, first_mid:], mid_lse], inplace=True
        )
    if regular < S:
        positions = torch.arange(S, device=queries.device).expand(B, S)
        tail_out, _ = dense_region_attention(
            queries[:, :, :, regular:], keys, values, plan, positions[:, regular:], positions, None, scale
        )
        out[:, :, regular:] = tail_out
    return out
