"""Causal attention that also returns the log-sum-exp, on whatever kernel the device offers.

The engine needs each region's LSE to merge regions exactly (see ``_merge``). The public
``scaled_dot_product_attention`` does not return it, so this module picks, in order:

- ``flash-attn``: ``flash_attn_func(..., return_attn_probs=True)`` on CUDA when installed;
- ``aten``: the fused kernels behind ``scaled_dot_product_attention`` that return the LSE
  (``_scaled_dot_product_flash_attention_for_cpu`` on CPU; on CUDA
  ``_scaled_dot_product_flash_attention`` for fp16/bf16 and ``_scaled_dot_product_efficient_attention``
  otherwise); they are private ops, so ``pick_backend`` checks they exist and the pure-torch
  backend stays the fallback;
- ``torch``: a plain blocked implementation (never builds an S × T tensor), always available.

All backends compute the same thing and are tested against each other. Registry contract:
``fn(q, k, v, scale) -> (out, lse)`` with q ``(B, H, S, D)``, k and v ``(B, H, S, D)`` (same S,
same number of heads), top-left causal mask (query s sees keys 0..s); out ``(B, H, S, D)`` in
q's dtype, lse ``(B, H, S)`` float32.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

__all__ = ["BACKENDS", "causal_attention_with_lse", "pick_backend"]

Backend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]

# Rows of queries per block in the pure-torch backend: bounds the (block × S) score tile.
_TORCH_BLOCK = 256


def _torch_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    B, H, S, D = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(B, H, S, dtype=torch.float32, device=q.device)
    for start in range(0, S, _TORCH_BLOCK):
        stop = min(S, start + _TORCH_BLOCK)
        scores = (q[:, :, start:stop] @ k[:, :, :stop].transpose(-1, -2)).float() * scale  # (B, H, b, stop)
        rows = torch.arange(start, stop, device=q.device)[:, None]
        cols = torch.arange(stop, device=q.device)[None, :]
        scores = scores.masked_fill(cols > rows, float("-inf"))
        block_lse = torch.logsumexp(scores, dim=-1)  # (B, H, b)
        probs = torch.exp(scores - block_lse[..., None])
        out[:, :, start:stop] = (probs.to(v.dtype) @ v[:, :, :stop]).to(q.dtype)
        lse[:, :, start:stop] = block_lse
    return out, lse


def _aten_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)
        return out, lse.float()
    if q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
        # PyTorch's own FlashAttention-2 kernel (half precision only).
        out, lse, *_ = torch.ops.aten._scaled_dot_product_flash_attention(
            q, k, v, 0.0, True, False, scale=scale
        )
        return out, lse.float()
    out, lse, *_ = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, None, True, 0.0, True, scale=scale
    )
    return out, lse[..., : q.shape[2]].float()  # the memory-efficient kernel pads the LSE's last dim


def _flash_attn_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    from flash_attn import flash_attn_func

    # flash-attn's layout is (B, S, H, D); its LSE comes back as (B, H, S).
    out, lse, _ = flash_attn_func(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        softmax_scale=scale,
        causal=True,
        return_attn_probs=True,
    )
    return out.transpose(1, 2), lse.float()


BACKENDS: dict[str, Backend] = {
    "flash-attn": _flash_attn_backend,
    "aten": _aten_backend,
    "torch": _torch_backend,
}


def pick_backend(q: torch.Tensor) -> str:
    """The fastest backend available for ``q``'s device and dtype."""
    if (
        q.device.type == "cuda"
        and q.dtype in (torch.float16, torch.bfloat16)
        and importlib.util.find_spec("flash_attn") is not None
    ):
        return "flash-attn"
    if q.device.type == "cpu" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return "aten"
    if q.device.type == "cuda" and hasattr(torch.ops.aten, "_scaled_dot_product_efficient_attention"):
        return "aten"
    return "torch"


def causal_attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left causal attention with its LSE.

    Args:
        q: ``(B, H, S, D)``; k, v: ``(B, H, S, D)`` (expand grouped KV heads before calling).
        scale: logit scale (usually D ** -0.5).
        backend: a key of ``BACKENDS``; default ``pick_backend(q)``.

    Returns:
        out ``(B, H, S, D)`` in q's dtype, lse ``(B, H, S)`` float32 (natural log).
    """
    if q.shape[2] == 0:
        return torch.zeros_like(q), q.new_zeros(q.shape[:3], dtype=torch.float32)
    return BACKENDS[backend or pick_backend(q)](q, k, v, scale)
