"""SelfExtend (Jin et al. 2024, "LLM Maybe LongLM", arXiv 2401.01325) as a position scheme.

Bi-level attention: a query sees its neighbours (relative position d < w_n) at their stock
positions and every other key at grouped positions (paper §3, Eq. 3 and Algorithm 1):

    Neighbour  d <  w_n    P_q = i                          P_k = j
    Grouped    d >= w_n    P_q = ⌊i/G⌋ + w_n − w_n/G         P_k = ⌊j/G⌋

so a grouped pair sees ⌊i/G⌋ − ⌊j/G⌋ + w_n − w_n/G, which starts near w_n at the window's edge
and grows G times slower than d. Both levels are regions of one attention (disjoint key sets
per query), so the engine's general blocked path runs it exactly, with no new attention code.

The shift w_n − w_n/G is real-valued, as in the official code (``self_extend_patch/Llama.py``:
``query_position // group_size_1 + group_size_2 - group_size_2 / group_size_1``); RoPE takes
fractional positions, and with G dividing w_n it is the integer of the paper.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..engine._hook import apply_position_scheme
from ._base import BandPlan, SchemeConfig, bound
from ._knobs import Knob

__all__ = ["SelfExtendConfig", "SelfExtendPlan", "self_extend", "self_extend_group", "selfextend_knobs"]


def self_extend_group(window: int, length: int, neighbor_window: int) -> int:
    """The smallest group size G whose extended window covers ``length`` tokens.

    SelfExtend reaches ``(W − w_n)·G + w_n`` tokens with the model's trained positions (its README,
    §4 "How to choose the group_size and neighbor_window": "try the smallest group size first").

    Example: ``self_extend_group(4096, 15800, 1024)`` -> 5 (5·(4096 − 1024) + 1024 = 16384 >= 15800);
    ``self_extend_group(256, 256, 64)`` -> 1 (no extension needed).
    """
    if not 0 <= neighbor_window < window:
        raise ValueError(f"neighbor_window must be in [0, window={window}), got {neighbor_window!r}")
    return max(1, math.ceil((length - neighbor_window) / (window - neighbor_window)))


@dataclass(frozen=True)
class SelfExtendPlan(BandPlan):
    """SelfExtend positions of one batch: neighbours (d < w_n) at stock positions, the rest
    grouped. ``length`` is each row's input length ``(B,)`` float64 (the positions do not depend
    on it); ``group == 1`` shows every pair its stock positions (``identity``), as does a batch
    no longer than w_n.
    """

    length: torch.Tensor  # (B,)
    group: int
    neighbor_window: int

    @property
    def boundary(self) -> int:
        """w_n: neighbours below it, grouped from it on (the official mask: grouped where
        j <= i − w_n)."""
        return self.neighbor_window

    @property
    def identity(self) -> bool:
        """True when G = 1 (grouped positions equal the stock ones) or no pair reaches w_n."""
        return self.group == 1 or super().identity

    @property
    def shift(self) -> float:
        """w_n − w_n/G, the grouped query offset that puts the window's edge near w_n."""
        return self.neighbor_window - self.neighbor_window / self.group

    def far_queries(self, pos: torch.Tensor) -> torch.Tensor:
        """Grouped query positions ⌊i/G⌋ + w_n − w_n/G.

        Example (G=4, w_n=8): i = 13 -> ⌊13/4⌋ + 8 − 2 = 9.
        """
        return torch.floor(pos / self.group) + self.shift

    def far_keys(self, pos: torch.Tensor) -> torch.Tensor:
        """Grouped key positions ⌊j/G⌋. Example (G=4): j = 5 -> 1."""
        return torch.floor(pos / self.group)


@dataclass(frozen=True)
class SelfExtendConfig(SchemeConfig):
    """SelfExtend's two parameters, as a position scheme for ``apply_position_scheme``.

    Args:
        group: G, the group size of the grouped level (1 = the stock model).
        neighbor_window: w_n, relative positions ``d < w_n`` keep their stock spacing.

    Example: ``SelfExtendConfig.recommended(window=4096, length=16384)`` ->
    ``SelfExtendConfig(group=5, neighbor_window=1024)``.
    """

    group: int = bound(1)
    neighbor_window: int = bound(0)
    # SelfExtend changes no logit scale (the official code's optional log scaling is off by default).
    attention_factor: float = 1.0

    PLAN: ClassVar[type] = SelfExtendPlan

    @classmethod
    def recommended(cls, window: int, length: int) -> SelfExtendConfig:
        """The paper's settings for a model of window W and inputs of ``length`` tokens.

        w_n = W/4 (the README's examples and the paper's Llama-2 runs use w_n = 1024 for
        W = 4096) and the smallest G that covers ``length`` (``self_extend_group``).
        """
        neighbor = window // 4
        return cls(group=self_extend_group(window, length, neighbor), neighbor_window=neighbor)

    def extended_window(self, window: int) -> int:
        """Longest input whose grouped positions stay inside a window of W: (W − w_n)·G + w_n."""
        return (window - self.neighbor_window) * self.group + self.neighbor_window


@contextmanager
def self_extend(model: nn.Module, config: SelfExtendConfig) -> Iterator[Any]:
    """Run ``model`` under SelfExtend inside the ``with`` block (prefill and ``generate()``);
    restored exactly on exit. Yields the attention session.

    Example::

        with self_extend(model, SelfExtendConfig.recommended(window=256, length=1024)):
            logits = model(input_ids).logits
    """
    with apply_position_scheme(model, config) as session:
        yield session


def selfextend_knobs(window: int, length: int) -> tuple[Knob, ...]:
    """SelfExtend's knobs at (W, L): the group size G (main) and the neighbour window w_n, with
    ``SelfExtendConfig.recommended`` as defaults.

    Example: ``selfextend_knobs(256, 1024)[0]`` -> G in [1, 40], default 5 (the README's advice:
    try the smallest G first; the range reaches 8 times it).
    """
    recommended = SelfExtendConfig.recommended(window, length)
    group, neighbor = recommended.group, recommended.neighbor_window
    return (
        Knob("group", 1, max(8, 8 * group), group, True, True, "G: grouped positions grow G times slower"),
        Knob(
            "neighbor_window",
            min(neighbor, max(1, window // 16)),
            max(neighbor, window // 2),
            neighbor,
            True,
            True,
            "w_n: relative positions below it keep their stock spacing",
        ),
    )
