"""STRING (An et al. 2024, "Why Does the Effective Context Length of LLMs Fall Short?",
arXiv 2410.18745) as a position scheme.

Pretraining sees large relative positions rarely, so STRING drops the largest ones and shows
the well-trained small ones in their place: relative positions d >= S (the shifted offset) are
shifted down by S − w, where w is a small local window that keeps the nearest tokens of the
shifted region apart from the query (the paper's STRING section; its README, "FAQs"):

    Exact    d <  S    PE(d) = d            P_q = i             P_k = j
    Shifted  d >= S    PE(d) = d − S + w    P_q = i − S + w     P_k = j

Both regions attend to the one stock key rotation, as two disjoint key sets per query merged
through their LSE (the official code's pattern). They are distance bands, [0, S − 1] at stock
positions and [S, ∞) shifted (``StringPlan.pieces``), so the engine runs them on its fused path.

Choosing S. The paper applies STRING inside the trained window (input L = W) with S ≈ L/3
(its README suggests 0.25–0.4·L) and w = 128. This toolkit uses it to extend past W, where the
largest shown positions are S − 1 (exact band) and L − 1 − S + w (shifted region). Both fit in
[0, W) exactly when L − W + w <= S <= W, which is possible up to L = 2W − w. So
``string_shifted_offset`` takes the S nearest the paper's L/3 that keeps every shown position
inside the window, S = max(⌊L/3⌋, L − W + w); past 2W − w no S can, and it takes the S that
shows the smallest largest position, S = ⌈(L + w)/2⌉ (largest shown ≈ (L + w)/2 − 1: the fewest
untrained positions, in the paper's own spirit of using only well-trained ones). For L <= W the
method is the stock model (S = W: no input that fits is shifted).

Differences from the official code (``string_for_llama.py``, read for this module):
- its prefill gives the exact band a flash-attention window of S, which includes d = S, while
  the shifted attention also covers d = S, so that key is counted twice; its decoding path keeps
  them disjoint (d < S exact). We use d < S everywhere, so prefill and decoding agree.
- it always multiplies cos and sin by 0.1·ln 2 + 1 (YaRN's temperature for s = 2, meant to undo
  the smoothing of the attention map that the shift causes); here that is ``attention_factor``,
  which ``recommended`` sets to the official value and the dataclass leaves neutral (1.0).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..engine._hook import LampeSession, apply_position_scheme
from ._base import BandPlan, SchemeConfig, bound
from ._knobs import Knob

__all__ = [
    "STRING_ATTENTION_FACTOR",
    "StringConfig",
    "StringPlan",
    "string_local_window",
    "string_position",
    "string_shifted_offset",
    "string_attention",
    "string_knobs",
]

# The official code's fixed temperature: cos and sin times 0.1·ln 2 + 1 (logits × ≈1.143).
STRING_ATTENTION_FACTOR = 0.1 * math.log(2) + 1
# The paper's local window (its README suggests 128, or 256 and 512 when results disappoint).
STRING_LOCAL_WINDOW = 128


def string_position(d: torch.Tensor, shifted_offset: int, local_window: int) -> torch.Tensor:
    """PE(d): the relative position STRING shows RoPE for a true relative position ``d``.

    Example: ``string_position(torch.arange(10), shifted_offset=6, local_window=2)``
    -> ``[0, 1, 2, 3, 4, 5, 2, 3, 4, 5]``.
    """
    d = torch.as_tensor(d, dtype=torch.float64)
    return torch.where(d < shifted_offset, d, d - shifted_offset + local_window)


def string_local_window(window: int) -> int:
    """w: the paper's 128, but at most W/16 (128 is 1/16 of a 2K window), so a short-window model
    keeps a local window that is small against W instead of one comparable to it.

    Example: ``string_local_window(8192)`` -> 128; ``string_local_window(256)`` -> 16.
    """
    return max(1, min(STRING_LOCAL_WINDOW, window // 16))


def string_shifted_offset(window: int, length: int, local_window: int) -> int:
    """S for inputs of ``length`` tokens on a model of window W (see the module docstring).

    L <= W: S = W (nothing is shifted: the stock model). W < L <= 2W − w: the S nearest L/3
    that keeps every shown position below W, max(⌊L/3⌋, L − W + w). L > 2W − w: ⌈(L + w)/2⌉,
    the S with the smallest largest shown position (S − 1 = L − 1 − S + w, rounded).

    Example (W = 8192, w = 128): L = 9000 -> 3000 (L/3 already fits); L = 12288 -> 4224
    (largest shown 12287 − 4224 + 128 = 8191 = W − 1); L = 16384 -> 8256 (largest shown 8255).
    """
    if length <= window:
        return window
    return max(length // 3, min(length - window + local_window, (length + local_window + 1) // 2))


@dataclass(frozen=True)
class StringPlan(BandPlan):
    """STRING positions of one batch: d < S exact, the rest shifted by S − w; both regions
    attend to the stock keys. ``length`` is each row's input length ``(B,)`` float64.
    """

    length: torch.Tensor  # (B,)
    shifted_offset: int  # S
    local_window: int  # w

    FAR_KEYS_STOCK: ClassVar[bool] = True

    @property
    def boundary(self) -> int:
        """S: exact below it, shifted from it on."""
        return self.shifted_offset

    def far_queries(self, pos: torch.Tensor) -> torch.Tensor:
        """Shifted query positions i − S + w. Example (S=6, w=2): i = 9 -> 5."""
        return pos - self.shifted_offset + self.local_window


@dataclass(frozen=True)
class StringConfig(SchemeConfig):
    """STRING's parameters, as a position scheme for ``apply_position_scheme``.

    Args:
        shifted_offset: S, relative positions ``d >= S`` are shown as ``d − S + w``.
        local_window: w, the smallest shown position of the shifted region; ``w <= S`` (the
            shift moves positions down, never up).
        attention_factor: multiplies cos and sin (logits by its square); the official code
            uses ``STRING_ATTENTION_FACTOR``.

    Example: ``StringConfig.recommended(window=8192, length=12288)`` ->
    ``StringConfig(shifted_offset=4224, local_window=128, attention_factor=1.0693…)``.
    """

    shifted_offset: int = bound(1)
    local_window: int = bound(0, not_above="shifted_offset")
    attention_factor: float = 1.0

    PLAN: ClassVar[type] = StringPlan

    @classmethod
    def recommended(cls, window: int, length: int) -> StringConfig:
        """The paper's settings for window W and inputs of ``length`` tokens: w from
        ``string_local_window``, S from ``string_shifted_offset``, the official temperature."""
        local = string_local_window(window)
        return cls(
            shifted_offset=string_shifted_offset(window, length, local),
            local_window=local,
            attention_factor=STRING_ATTENTION_FACTOR,
        )


def string_attention(model: nn.Module, config: StringConfig) -> AbstractContextManager[LampeSession]:
    """Run ``model`` under STRING inside the ``with`` block (prefill and ``generate()``);
    restored exactly on exit. Yields the attention session (``apply_position_scheme``).

    Example::

        with string_attention(model, StringConfig.recommended(window=256, length=384)):
            logits = model(input_ids).logits
    """
    return apply_position_scheme(model, config)


def string_knobs(window: int, length: int) -> tuple[Knob, ...]:
    """STRING's knobs at (W, L): the shifted offset S (main), from w to L − 1, and the local
    window w; ``StringConfig.recommended`` gives the defaults (S = W, the stock model, for
    L <= W).

    Example: ``string_knobs(256, 512)[0]`` -> S in [16, 511], default 264.
    """
    recommended = StringConfig.recommended(window, length)
    offset, local = recommended.shifted_offset, recommended.local_window
    return (
        Knob(
            "shifted_offset",
            local,
            max(offset, length - 1),
            offset,
            True,
            False,
            "S: relative positions from S on are shown as d − S + w",
        ),
        Knob(
            "local_window",
            min(local, 1),
            max(local, window // 4),
            local,
            True,
            False,
            "w: the smallest shown position of the shifted region",
        ),
    )
