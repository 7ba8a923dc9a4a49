"""A plain O(L²) reference of LaMPE, written from the paper's formula and independent of the engine.

For every (query i, key j) pair it rotates q_i by PE(i - j) and leaves k_j unrotated (RoPE's
score depends only on the difference of the two rotations), so it never uses the per-region
position pairs, the key cache or the LSE merge that the engine relies on.

Hybrid models are read from what transformers hands each layer's attention function: a layer
called with a ``sliding_window`` keeps its stock positions inside that window (it never sees a
distance past it, so no scheme remaps it), with its own rotary table (Gemma 3's per-layer-type
``{type}_inv_freq``); the ``softcap`` it receives caps every logit (Gemma 2).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from transformers import AttentionInterface

from lampe_calib.methods._dca import DualChunkConfig
from lampe_calib.methods._selfextend import SelfExtendConfig
from lampe_calib.methods._string import StringConfig


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


def relative(length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    i = torch.arange(length, dtype=torch.float64)[:, None].expand(length, length)
    j = torch.arange(length, dtype=torch.float64)[None, :].expand(length, length)
    return i, j, (i - j).clamp(min=0)


def selfextend_pe(length: int, group: int, neighbor: int) -> torch.Tensor:
    """SelfExtend's relative positions written from the paper: d inside the neighbour window,
    ⌊i/G⌋ − ⌊j/G⌋ + w_n − w_n/G beyond it."""
    i, j, d = relative(length)
    grouped = torch.floor(i / group) - torch.floor(j / group) + neighbor - neighbor / group
    return torch.where(d < neighbor, d, grouped)


def dca_pe(length: int, chunk: int, local: int) -> torch.Tensor:
    """DCA's relative positions written from the paper: by chunk distance 0, 1, >= 2."""
    i, j, d = relative(length)
    c = chunk + local
    gap = torch.floor(i / chunk) - torch.floor(j / chunk)
    i_in, j_in = i % chunk, j % chunk
    successive = torch.clamp(chunk + i_in, max=c - 1) - j_in
    inter = (c - 1) - j_in
    return torch.where(gap == 0, d, torch.where(gap == 1, successive, inter))


def string_pe(length: int, shifted: int, local: int) -> torch.Tensor:
    """STRING's relative positions written from the paper: d below the shifted offset S, else
    d − S + w."""
    _, _, d = relative(length)
    return torch.where(d < shifted, d, d - shifted + local)


def rerope_pe(length: int, window: int) -> torch.Tensor:
    """ReRoPE's relative positions written from its definition: min(d, w)."""
    _, _, d = relative(length)
    return torch.where(d < window, d, torch.full_like(d, float(window)))


def dense_rule(scheme, length: int) -> torch.Tensor:
    """The relative positions of ``scheme``'s own rule, from the reference functions above."""
    if isinstance(scheme, SelfExtendConfig):
        return selfextend_pe(length, scheme.group, scheme.neighbor_window)
    if isinstance(scheme, DualChunkConfig):
        return dca_pe(length, scheme.chunk_size, scheme.local_window)
    if isinstance(scheme, StringConfig):
        return string_pe(length, scheme.shifted_offset, scheme.local_window)
    return rerope_pe(length, scheme.window)


def _rotate_by(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    # x (..., D), angles (..., D/2) -> RoPE rotation (rotate-half layout).
    cos = torch.cat([angles.cos(), angles.cos()], -1)
    sin = torch.cat([angles.sin(), angles.sin()], -1)
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


class _NoRotation(nn.Module):
    """Stands in for the rotary module: cos = 1, sin = 0, so q and k reach attention unrotated."""

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: str | None = None):
        shape = (*position_ids.shape, self.head_dim)
        return torch.ones(shape, dtype=x.dtype), torch.zeros(shape, dtype=x.dtype)


def _table(rotary: nn.Module, layer_type: str | None) -> tuple[torch.Tensor, float]:
    """A layer's inverse frequencies (float64) and attention scaling, read off the rotary module."""
    inv_freq = getattr(rotary, f"{layer_type}_inv_freq", None)
    if inv_freq is None:
        return rotary.inv_freq.to(torch.float64), float(getattr(rotary, "attention_scaling", 1.0))
    return inv_freq.to(torch.float64), float(getattr(rotary, f"{layer_type}_attention_scaling", 1.0))


@contextlib.contextmanager
def dense_lampe(
    model: nn.Module, pe: torch.Tensor, attention_factor: float = 1.0, global_rotary: nn.Module | None = None
):
    """Run `model` (batch 1, no padding, no cache) with relative positions `pe` (S × S) on the
    layers that see the whole input, on the table of `global_rotary` (default the model's own);
    sliding-window layers keep d, their window and the model's own table."""
    base = model.model
    rotary = base.rotary_emb

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        B, H, S, D = query.shape
        window, softcap = kwargs.get("sliding_window"), kwargs.get("softcap")
        table = rotary if window is not None or global_rotary is None else global_rotary
        inv_freq, scaled = _table(table, getattr(module, "layer_type", None))
        groups = H // key.shape[1]
        k = key.repeat_interleave(groups, dim=1).double()
        v = value.repeat_interleave(groups, dim=1).double()
        d = (torch.arange(S)[:, None] - torch.arange(S)[None, :]).double()
        positions = pe[:S, :S] if window is None else d.clamp(min=0)
        factor = (attention_factor if window is None else 1.0) * scaled
        angles = positions[:, :, None] * inv_freq  # (S, S, D/2)
        q = _rotate_by(query.double()[:, :, :, None, :], angles)  # (B, H, S, S, D)
        scores = (q * k[:, :, None, :, :]).sum(-1) * scaling * factor**2
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        keep = d >= 0 if window is None else (d >= 0) & (d < window)
        scores = scores.masked_fill(~keep, -math.inf)
        out = torch.softmax(scores, -1) @ v
        return out.to(query.dtype).transpose(1, 2).contiguous(), None

    AttentionInterface.register("dense_reference", attention)
    original = model.config._attn_implementation
    no_rotation = _NoRotation()
    no_rotation.head_dim = 2 * _table(rotary, "full_attention")[0].numel()
    base.rotary_emb = no_rotation
    model.set_attn_implementation("dense_reference")
    try:
        yield
    finally:
        model.set_attn_implementation(original)
        base.rotary_emb = rotary
