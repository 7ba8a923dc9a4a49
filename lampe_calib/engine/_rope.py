"""Rotary position embedding at arbitrary (fractional) positions, read off a model instance.

LaMPE rotates queries and keys at positions that are not integers (the middle region's
α·j), so the engine cannot reuse the model's cos/sin cache: it recomputes the rotation from the
rotary module's own ``inv_freq`` and ``attention_scaling``, which covers every RoPE variant that
transformers expresses as a static frequency table (default, linear, llama3, yarn, ntk).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Rope", "rotate_many"]


@dataclass(frozen=True)
class Rope:
    """A static RoPE table.

    Args:
        inv_freq: ``(D/2,)`` float32 inverse frequencies.
        scale: multiplies cos and sin: the rope type's ``attention_scaling`` times the
            scheme's ``attention_factor`` (logits scale by its square).
    """

    inv_freq: torch.Tensor
    scale: float = 1.0

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., S)`` float positions -> cos, sin of shape ``(..., S, D/2)`` in ``dtype``.

        Angles are formed in float32 exactly like transformers' rotary modules, so integer
        positions give the stock model's rotation. Only one half is kept: RoPE's table repeats
        it for the second half of the head dim.
        """
        freqs = positions.to(torch.float32)[..., None] * self.inv_freq.to(positions.device)  # (..., S, D/2)
        return (freqs.cos() * self.scale).to(dtype), (freqs.sin() * self.scale).to(dtype)


def rotate_many(x: torch.Tensor, tables: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Rotate ``x`` ``(B, H, S, D)`` by each half table ``(cos, sin)`` ``(B, S, D/2)``: ``(N, B, H, S, D)``.

    With x = (x1, x2) on the two halves: (x1·cos - x2·sin, x2·cos + x1·sin), which is
    transformers' ``x * cos + rotate_half(x) * sin`` on the duplicated table. One output buffer serves every
    table (the engine rotates each query three times and each key twice per layer).
    """
    x1, x2 = x.chunk(2, dim=-1)
    if torch.is_grad_enabled() and x.requires_grad:  # out= buffers do not take gradients
        rotated = []
        for cos, sin in tables:
            c, s = cos[:, None], sin[:, None]
            rotated.append(torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1))
        return torch.stack(rotated)
    out = x.new_empty(len(tables), *x.shape)
    for n, (cos, sin) in enumerate(tables):
        c, s = cos[:, None], sin[:, None]  # broadcast over heads: (B, 1, S, D/2)
        o1, o2 = out[n].chunk(2, dim=-1)
        torch.mul(x1, c, out=o1)
        o1.addcmul_(x2, s, value=-1)
        torch.mul(x2, c, out=o2)
        o2.addcmul_(x1, s)
    return out
