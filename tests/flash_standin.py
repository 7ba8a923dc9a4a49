"""A pure-torch stand-in for ``flash_attn.flash_attn_func`` with flash-attn's documented
semantics, so the engine's windowed calls can be checked on a machine without CUDA.

From flash-attn's ``flash_attn_func`` docstring: q ``(B, Sq, H, D)``, k and v ``(B, Sk, Hkv, D)``
with H a multiple of Hkv; "If causal=True, the causal mask is aligned to the bottom right corner
of the attention matrix"; with ``window_size=(left, right)`` "query at position i will only attend
to keys between [i + seqlen_k - seqlen_q - window_size[0], i + seqlen_k - seqlen_q + window_size[1]]
inclusive" (-1: no bound; causal sets right to 0); ``return_attn_probs=True`` also returns
``softmax_lse`` ``(B, H, Sq)``, the natural-log logsumexp of each row of QK^T · scale. A row that
sees no key comes back as out 0 and lse +inf (the kernel's ``INFINITY`` for an empty row).
"""

from __future__ import annotations

import sys
import types

import torch


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    return_attn_probs: bool = False,
):
    assert dropout_p == 0.0
    B, Sq, H, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    assert H % Hkv == 0 and q.stride(-1) == 1 and k.stride(-1) == 1 and v.stride(-1) == 1
    scale = D**-0.5 if softmax_scale is None else softmax_scale
    left, right = window_size
    if causal:
        right = 0
    i = torch.arange(Sq)[:, None] + Sk - Sq  # the key each query row is aligned with
    j = torch.arange(Sk)[None, :]
    keep = torch.ones(Sq, Sk, dtype=torch.bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    G = H // Hkv
    qf = q.float().transpose(1, 2)  # (B, H, Sq, D)
    kf = k.float().transpose(1, 2).repeat_interleave(G, 1)  # (B, H, Sk, D)
    vf = v.float().transpose(1, 2).repeat_interleave(G, 1)
    scores = (qf @ kf.transpose(-1, -2) * scale).masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(scores, -1)  # (B, H, Sq); -inf for an empty row
    probs = torch.exp(scores - torch.where(torch.isfinite(lse), lse, 0)[..., None])
    out = (probs @ vf).transpose(1, 2).to(q.dtype)  # (B, Sq, H, D); 0 for an empty row
    lse = lse.masked_fill(torch.isneginf(lse), float("inf"))
    return (out, lse, None) if return_attn_probs else out


def install(monkeypatch) -> None:
    """Make ``import flash_attn`` find the stand-in for the rest of a test."""
    module = types.ModuleType("flash_attn")
    module.flash_attn_func = flash_attn_func
    monkeypatch.setitem(sys.modules, "flash_attn", module)
