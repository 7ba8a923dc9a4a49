"""ReRoPE (Su 2023, "Rectified Rotary Position Embeddings", github.com/bojone/rerope, blog
kexue.fm/archives/9708) as a position scheme.

Relative positions inside a window w keep their spacing and every farther one is clipped to w,
like a ReLU turned over: PE(d) = min(d, w). So no input length shows RoPE a position above w:

    Exact    d <  w    P_q = i    P_k = j
    Clipped  d >= w    P_q = w    P_k = 0      (P_q − P_k = w for every such pair)

Two disjoint key sets per query, each with its own rotation, merged through their LSE. They are
distance bands, [0, w − 1] at stock positions and [w, ∞) clipped to w (``ReRopePlan.pieces``), so
the engine runs them on its fused path.

Window: w = W/4, the setting of the author's published results (README: ReRoPE-w1024 on
Llama-2-13B, W = 4096, loss falling from 4K to 16K). The patch file's default is 512 (W/8) and
the LaMPE release runs ReRoPE with a fixed 4096 on Llama-3-8B (W/2); all three keep w well inside
W, which is what the rule needs. For L <= W the method is the stock model.

Differences from the official patch (``rerope_patch.py``, read for this module): it also
multiplies each query by max(1, log(i + 1)/log W) (log-n attention scaling past the window), a
per-query temperature that a ``PositionScheme`` cannot express; we implement the rule min(d, w)
alone, as the LaMPE release's ReRoPE comparison does. The LaMPE release's ReRoPE counts the
key at d = w twice (exact at w and clipped at w + 1); ours does not.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..engine._hook import LampeSession, apply_position_scheme
from ._base import BandPlan, SchemeConfig, bound
from ._knobs import Knob

__all__ = ["ReRopeConfig", "ReRopePlan", "rerope_attention", "rerope_knobs", "rerope_position"]


def rerope_position(d: torch.Tensor, window: int) -> torch.Tensor:
    """PE(d) = min(d, w): the relative position ReRoPE shows RoPE for a true one ``d``.

    Example: ``rerope_position(torch.arange(7), window=4)`` -> ``[0, 1, 2, 3, 4, 4, 4]``.
    """
    return torch.as_tensor(d, dtype=torch.float64).clamp(max=window)


@dataclass(frozen=True)
class ReRopePlan(BandPlan):
    """ReRoPE positions of one batch: d < w exact, the rest clipped to w (queries at w, keys at
    0). ``length`` is each row's input length ``(B,)`` float64.
    """

    length: torch.Tensor  # (B,)
    window: int  # w

    @property
    def boundary(self) -> int:
        """w: exact below it, clipped from it on (the official mask: exact where |i − j| < window)."""
        return self.window

    def far_queries(self, pos: torch.Tensor) -> torch.Tensor:
        """Every clipped query at w. Example (w=4): i = 9 -> 4."""
        return torch.full_like(pos, float(self.window))

    def far_keys(self, pos: torch.Tensor) -> torch.Tensor:
        """Every clipped key at 0. Example: j = 5 -> 0."""
        return torch.zeros_like(pos)


@dataclass(frozen=True)
class ReRopeConfig(SchemeConfig):
    """ReRoPE's window, as a position scheme for ``apply_position_scheme``.

    Args:
        window: w, relative positions ``d < w`` keep their spacing, the rest are shown as w.
        attention_factor: multiplies cos and sin; ReRoPE changes no logit scale (1.0).

    Example: ``ReRopeConfig.recommended(pretraining_window=4096)`` -> ``ReRopeConfig(window=1024)``.
    """

    window: int = bound(1)
    attention_factor: float = 1.0

    PLAN: ClassVar[type] = ReRopePlan

    @classmethod
    def recommended(cls, pretraining_window: int) -> ReRopeConfig:
        """w = W/4 for a model of pretraining window W (the author's published setting, see the
        module docstring); it does not depend on the input length. (``window``, the field, is
        ReRoPE's own w.)"""
        return cls(window=max(1, pretraining_window // 4))


def rerope_attention(model: nn.Module, config: ReRopeConfig) -> AbstractContextManager[LampeSession]:
    """Run ``model`` under ReRoPE inside the ``with`` block (prefill and ``generate()``);
    restored exactly on exit. Yields the attention session (``apply_position_scheme``).

    Example::

        with rerope_attention(model, ReRopeConfig.recommended(pretraining_window=256)):
            logits = model(input_ids).logits
    """
    return apply_position_scheme(model, config)


def rerope_knobs(window: int, length: int) -> tuple[Knob, ...]:
    """ReRoPE's one knob at W: its window w in [1, W − 1] (log scale), default
    ``ReRopeConfig.recommended`` (W/4).

    Example: ``rerope_knobs(256, 1024)`` -> w in [1, 255], default 64.
    """
    default = ReRopeConfig.recommended(window).window
    return (
        Knob(
            "window",
            1,
            max(default, window - 1),
            default,
            True,
            True,
            "w: relative positions from w on are shown as w",
        ),
    )
