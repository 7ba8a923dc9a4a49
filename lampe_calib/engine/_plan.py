"""The plan protocol: what the engine needs from a position scheme's plan for one batch.

A scheme (LaMPE, SelfExtend, DCA, STRING, ReRoPE) gives each batch a plan. The dense path
(``_attention.dense_region_attention``) needs only the positions and regions; the fused paths
need the plan's layout: distance ``pieces()`` (``_pieces``) or DCA's ``chunks()`` (``_chunked``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["Piece", "PositionPlan"]


@dataclass(frozen=True)
class Piece:
    """Pairs with ``lo <= d <= hi`` (``hi`` None: no upper bound), attended with query rotation
    ``query`` (an index into the engine's queries) and key rotation ``key``.

    Example: LaMPE's head with s1 = 1024 is ``Piece(0, 1024, query=0, key=0)``.
    """

    lo: int
    hi: int | None
    query: int
    key: int


class PositionPlan(Protocol):
    """One batch's positions under a scheme (``LampePlan`` is the model implementation).

    ``length`` is each row's planned input length l, ``(B,)``. An ``identity`` plan is the
    stock model (one region, stock positions). Regions are indices into the query rotations;
    ``region_key_version[r]`` is the key rotation region r attends with.
    """

    length: torch.Tensor

    @property
    def identity(self) -> bool: ...

    @property
    def region_key_version(self) -> tuple[int, ...]: ...

    def row(self, index: int) -> PositionPlan:
        """The plan of one batch row, as a batch of one."""
        ...

    def query_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` token positions -> ``(R, B, S)`` float32, one per region."""
        ...

    def key_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` token positions -> ``(V, B, T)`` float32, one per key rotation."""
        ...

    def regions(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """``(B, S)``, ``(B, T)`` token positions -> ``(B, S, T)`` long region of each pair."""
        ...

    def pieces(self) -> tuple[Piece, ...] | None:
        """Distance pieces, disjoint and covering d >= 0, when every row's regions are bands of
        relative distance d shared by the batch; None otherwise."""
        ...

    def chunks(self) -> int | None:
        """DCA's chunk size when the regions are chunk gaps; None otherwise."""
        ...
