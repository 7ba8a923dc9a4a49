"""Dual Chunk Attention (An et al. 2024, "Training-Free Long-Context Scaling of Large Language
Models", arXiv 2402.17463) as a position scheme.

The input is cut into chunks of s tokens; keys take their position inside their chunk, and the
query's position depends on where the key lies (paper §3, with c = s + w the largest position
and w the local window):

    Intra        same chunk            P_q = i mod s                    P_k = j mod s
    Successive   the previous chunk    P_q = min(s + i mod s, c − 1)    P_k = j mod s
    Inter        any earlier chunk     P_q = c − 1                      P_k = j mod s

Intra keeps the true distance i − j; successive keeps it for the first w queries of a chunk
(so the closest tokens across a chunk boundary stay exact) and caps it at c − 1; inter only
says "far". The three regions are disjoint key sets per query: the engine's general blocked
path runs them as one exact attention.

The official code (``chunkllama_attn_replace.py``) caps at c rather than c − 1 (its
``qc_t.clamp(max=chunk_size)`` and inter position ``qc_t[chunk_len - 1]``); we follow the paper.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..engine._hook import apply_position_scheme
from ._base import RowPlan, SchemeConfig, bound
from ._knobs import Knob

__all__ = ["DualChunkConfig", "DualChunkPlan", "dca_knobs", "dual_chunk_attention"]

INTRA, SUCCESSIVE, INTER = 0, 1, 2


@dataclass(frozen=True)
class DualChunkPlan(RowPlan):
    """DCA positions of one batch. ``length`` is each row's input length ``(B,)`` float64; a
    batch whose rows all fit in one chunk (l <= s) has only intra pairs at their stock positions
    (``identity``).
    """

    length: torch.Tensor  # (B,)
    chunk_size: int  # s
    local_window: int  # w

    @property
    def max_position(self) -> int:
        """c − 1 = s + w − 1, the largest query position (and relative position) DCA uses."""
        return self.chunk_size + self.local_window - 1

    @property
    def identity(self) -> bool:
        """True when every row fits in one chunk: only intra pairs, at their stock positions."""
        return bool((self.length <= self.chunk_size).all())

    @property
    def region_key_version(self) -> tuple[int, ...]:
        """All three regions attend to the one key rotation, j mod s."""
        return (0, 0, 0)

    def query_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` token positions -> ``(3, B, S)`` float32: intra, successive, inter.

        Example (s=6, w=2, c−1=7): i = 9 -> intra 3, successive min(9, 7) = 7, inter 7;
        i = 7 -> intra 1, successive 7, inter 7.
        """
        pos = positions.to(torch.float64)
        intra = torch.remainder(pos, self.chunk_size)
        successive = (intra + self.chunk_size).clamp(max=self.max_position)
        inter = torch.full_like(pos, float(self.max_position))
        return torch.stack([intra, successive, inter]).to(torch.float32)

    def key_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(1, B, T)`` float32: j mod s.

        Example (s=6): j = 9 -> 3.
        """
        pos = positions.to(torch.float64)
        return torch.remainder(pos, self.chunk_size)[None].to(torch.float32)

    def regions(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """``(B, S)``, ``(B, T)`` token positions -> ``(B, S, T)`` long: INTRA, SUCCESSIVE or
        INTER by the distance between the query's and the key's chunk (0, 1, >= 2)."""
        q_chunk = torch.div(query_positions, self.chunk_size, rounding_mode="floor")  # (B, S)
        k_chunk = torch.div(key_positions, self.chunk_size, rounding_mode="floor")  # (B, T)
        gap = (q_chunk[:, :, None] - k_chunk[:, None, :]).long()  # (B, S, T)
        # Keys after the query (gap < 0) are masked by causality; any region id will do.
        return gap.clamp(min=INTRA, max=INTER)

    def pieces(self) -> None:
        """No distance pieces: DCA's regions depend on the chunks of i and j, not on i − j."""
        return None

    def chunks(self) -> int:
        """The chunk size s (``_chunked`` runs the three regions fused)."""
        return self.chunk_size


@dataclass(frozen=True)
class DualChunkConfig(SchemeConfig):
    """DCA's parameters, as a position scheme for ``apply_position_scheme``.

    Args:
        chunk_size: s, tokens per chunk (positions inside a chunk are exact).
        local_window: w, queries at the start of a chunk that keep exact distances to the
            previous chunk; c = s + w must not exceed the model's window.

    Example: ``DualChunkConfig.recommended(4096)`` -> ``DualChunkConfig(chunk_size=2816,
    local_window=256)`` (c = 3072 = 3/4 of the window).
    """

    chunk_size: int = bound(1)
    local_window: int = bound(0, not_above="chunk_size")
    # DCA changes no logit scale.
    attention_factor: float = 1.0

    PLAN: ClassVar[type] = DualChunkPlan

    @classmethod
    def recommended(cls, window: int) -> DualChunkConfig:
        """The official settings for a model of window W (``replace_with_chunkllama``):
        c = ⌊3W/4⌋, w = ⌊W/16⌋, s = c − w. They do not depend on the input length."""
        local = window // 16
        return cls(chunk_size=3 * window // 4 - local, local_window=local)


@contextmanager
def dual_chunk_attention(model: nn.Module, config: DualChunkConfig) -> Iterator[Any]:
    """Run ``model`` under Dual Chunk Attention inside the ``with`` block (prefill and
    ``generate()``); restored exactly on exit. Yields the attention session.

    Example::

        with dual_chunk_attention(model, DualChunkConfig.recommended(window=256)):
            logits = model(input_ids).logits
    """
    with apply_position_scheme(model, config) as session:
        yield session


def dca_knobs(window: int, length: int) -> tuple[Knob, ...]:
    """DCA's knobs at W (they do not depend on L): the chunk size s (main), up to W − w so that
    c = s + w stays inside the window, and the local window w; ``DualChunkConfig.recommended``
    gives the defaults.

    Example: ``dca_knobs(256, 1024)[0]`` -> s in [32, 240], default 176.
    """
    recommended = DualChunkConfig.recommended(window)
    chunk, local = recommended.chunk_size, recommended.local_window
    return (
        Knob(
            "chunk_size",
            min(chunk, max(1, window // 8)),
            max(chunk, window - local),
            chunk,
            True,
            False,
            "s: tokens per chunk",
        ),
        Knob(
            "local_window",
            0,
            max(local, window // 4),
            local,
            True,
            False,
            "w: queries at a chunk's start that keep exact distances to the previous chunk",
        ),
    )
