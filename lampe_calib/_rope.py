"""Rotary position embedding at arbitrary (fractional) positions, read off a model instance.

LaMPE rotates queries and keys at positions that are not integers (the middle region's
α·j), so the engine cannot reuse the model's cos/sin cache: it recomputes the rotation from the
rotary module's own ``inv_freq`` and ``attention_scaling``, which covers every RoPE variant that
transformers expresses as a static frequency table (default, linear, llama3, yarn, ntk).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Rope", "rotate_half"]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim (the Llama/NeoX RoPE layout).

    Example: ``rotate_half(torch.tensor([1., 2., 3., 4.]))`` -> ``[-3., -4., 1., 2.]``.
    """
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


@dataclass(frozen=True)
class Rope:
    """A static RoPE table.

    Args:
        inv_freq: ``(D/2,)`` float32 inverse frequencies.
        scale: multiplies cos and sin: the rope type's ``attention_scaling`` times LaMPE's
            ``attention_factor`` (logits scale by its square).
    """

    inv_freq: torch.Tensor
    scale: float = 1.0

    @classmethod
    def from_rotary_module(cls, rotary: torch.nn.Module, attention_factor: float = 1.0) -> Rope:
        """The table of a transformers ``*RotaryEmbedding`` instance (``inv_freq``, ``attention_scaling``)."""
        inv_freq = rotary.inv_freq.detach().to(torch.float32)
        return cls(
            inv_freq=inv_freq, scale=float(getattr(rotary, "attention_scaling", 1.0)) * attention_factor
        )

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., S)`` float positions -> cos, sin of shape ``(..., S, D)`` in ``dtype``.

        Angles are formed in float32 exactly like transformers' rotary modules, so integer
        positions give the stock model's rotation.
        """
        inv_freq = self.inv_freq.to(positions.device)
        freqs = positions.to(torch.float32)[..., None] * inv_freq  # (..., S, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (..., S, D)
        return (emb.cos() * self.scale).to(dtype), (emb.sin() * self.scale).to(dtype)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``(B, H, S, D)`` at ``positions`` ``(B, S)`` (any float values)."""
        cos, sin = self.cos_sin(positions, x.dtype)
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, S, D)
        return x * cos + rotate_half(x) * sin
