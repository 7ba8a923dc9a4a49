"""Sliding-window layers: the stock model inside a window of w tokens, as one distance piece
(and, with no window, the plain stock model: the global layers under a rescaled rotary alone).

A sliding layer (Mistral, Phi-3, the local layers of Gemma 2 and 3) attends to keys at
distances ``d < w`` with stock positions. It never sees a distance past its window, so no
position scheme remaps it: its plan is one piece ``[0, w − 1]`` with the stock rotations, run by
the engine's band path (``_pieces``), which never builds an ``S × T`` mask. The dense path reads
the same plan through ``regions``: region 0 inside the window, 1 (no region) past it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ._plan import Piece, PositionPlan, band_regions

__all__ = ["WindowPlan", "WindowScheme", "stock_if_identity"]


@dataclass(frozen=True)
class WindowPlan:
    """One batch of a sliding layer: keys at ``d < window`` with stock positions (every key
    when ``window`` is None).

    Example: ``WindowPlan(torch.tensor([40.0]), 16).pieces()`` -> ``(Piece(0, 15, 0, 0),)``.
    """

    length: torch.Tensor  # (B,) each row's input length l
    window: int | None

    @property
    def identity(self) -> bool:
        """True when no row is longer than the window: the plain causal stock model."""
        return self.window is None or bool((self.length <= self.window).all())

    @property
    def region_key_version(self) -> tuple[int, ...]:
        return (0,)

    def row(self, index: int) -> WindowPlan:
        return dataclasses.replace(self, length=self.length[index : index + 1])

    def query_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> ``(1, B, S)`` float32: the stock positions."""
        return positions[None].to(torch.float32)

    def key_positions(self, positions: torch.Tensor) -> torch.Tensor:
        return positions[None].to(torch.float32)

    def regions(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """``(B, S, T)``: 0 for ``d < window``, 1 (outside every region) beyond it."""
        return band_regions(query_positions, key_positions, self.window or float("inf"))

    def pieces(self) -> tuple[Piece, ...]:
        return (Piece(0, None if self.window is None else self.window - 1, 0, 0),)

    def chunks(self) -> int | None:
        return None


@dataclass(frozen=True)
class WindowScheme:
    """The position scheme of a sliding layer of ``window`` tokens (stock, temperature 1); with
    ``window`` None, of a layer that sees the whole input with stock positions."""

    window: int | None
    attention_factor: float = 1.0

    def plan(self, lengths: torch.Tensor) -> WindowPlan:
        return WindowPlan(lengths.to(torch.float64).cpu(), self.window)


def stock_if_identity(plan: PositionPlan) -> PositionPlan:
    """``plan``, or the stock model's plan for its rows when it is ``identity`` (no pair
    remapped): one region, one rotation, the stock positions. The one place the engine takes
    the stock path for a scheme that has nothing to do.

    Example: a LaMPE plan of rows with l <= m -> ``WindowPlan(length, None)``.
    """
    return WindowPlan(plan.length, None) if plan.identity else plan
