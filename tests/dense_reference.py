"""A plain O(L²) reference of LaMPE, written from the paper's formula and independent of the engine.

For every (query i, key j) pair it rotates q_i by PE(i - j) and leaves k_j unrotated (RoPE's
score depends only on the difference of the two rotations), so it never uses the per-region
position pairs, the key cache or the LSE merge that the engine relies on.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from transformers import AttentionInterface


def pe_matrix(length: int, mapping: float, head: int, tail: int, mode: str = "exact") -> torch.Tensor:
    """PE(i - j) for every pair of an input of `length` tokens, float64 (0 above the diagonal)."""
    i = torch.arange(length, dtype=torch.float64)[:, None]
    j = torch.arange(length, dtype=torch.float64)[None, :]
    d = (i - j).clamp(min=0)
    if length <= mapping:
        return d
    if mode == "exact":
        alpha = (mapping - head - tail) / (length - head - tail)
        middle = alpha * (d - head) + head
        return torch.where(d <= head, d, torch.where(d >= length - tail, d + mapping - length, middle))
    # floor: the official release's integer grouping, recomputed here from its description.
    m = int(mapping)
    r = torch.tensor(m, dtype=torch.float32) / torch.tensor(length - 1, dtype=torch.float32)
    g = torch.floor(r * torch.arange(length, dtype=torch.float32)).to(torch.float64)
    t = max(k for k in range(tail, length) if all(g[x] == g[tail] for x in range(tail, k + 1)))
    bias1 = head - 1 - g[head]
    bias2 = (length - 1 - t) - g[length - 1 - t] - bias1
    middle = g[i.long().squeeze(1)][:, None] + bias1 - g[j.long().squeeze(0)][None, :]
    return torch.where(d <= head, d, torch.where(d >= length - t, d - bias2, middle))


def _rotate_by(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    # x (..., D), angles (..., D/2) -> RoPE rotation (rotate-half layout).
    cos = torch.cat([angles.cos(), angles.cos()], -1)
    sin = torch.cat([angles.sin(), angles.sin()], -1)
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


class _NoRotation(nn.Module):
    """Stands in for the rotary module: cos = 1, sin = 0, so q and k reach attention unrotated."""

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor):
        shape = (*position_ids.shape, self.head_dim)
        return torch.ones(shape, dtype=x.dtype), torch.zeros(shape, dtype=x.dtype)


@contextlib.contextmanager
def dense_lampe(model: nn.Module, pe: torch.Tensor, attention_factor: float = 1.0):
    """Run `model` (batch 1, no padding, no cache) with relative positions `pe` (S × S)."""
    base = model.model
    rotary = base.rotary_emb
    inv_freq = rotary.inv_freq.to(torch.float64)
    factor = attention_factor * float(getattr(rotary, "attention_scaling", 1.0))

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        B, H, S, D = query.shape
        groups = H // key.shape[1]
        k = key.repeat_interleave(groups, dim=1).double()
        v = value.repeat_interleave(groups, dim=1).double()
        angles = pe[:S, :S, None] * inv_freq  # (S, S, D/2)
        q = _rotate_by(query.double()[:, :, :, None, :], angles)  # (B, H, S, S, D)
        scores = (q * k[:, :, None, :, :]).sum(-1) * scaling * factor**2
        causal = torch.ones(S, S, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, -math.inf)
        out = torch.softmax(scores, -1) @ v
        return out.to(query.dtype).transpose(1, 2).contiguous(), None

    AttentionInterface.register("dense_reference", attention)
    original = model.config._attn_implementation
    no_rotation = _NoRotation()
    no_rotation.head_dim = 2 * inv_freq.numel()
    base.rotary_emb = no_rotation
    model.set_attn_implementation("dense_reference")
    try:
        yield
    finally:
        model.set_attn_implementation(original)
        base.rotary_emb = rotary
