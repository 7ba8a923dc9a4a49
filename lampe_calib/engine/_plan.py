"""The plan protocol: what the engine needs from a position scheme's plan for one batch.

A scheme (any object with an ``attention_factor`` and ``plan(lengths)``: ``_session.PositionScheme``;
the methods layer defines LaMPE, SelfExtend, DCA, STRING and ReRoPE) gives each batch a plan. The
dense path (``_attention.dense_region_attention``) needs only the positions and regions; the
fused paths need the plan's layout: distance ``pieces()`` (``_pieces``) or ``chunks()`` (chunk
gaps, ``_chunked``). A plan need not special-case the stock model: the session runs an
``identity`` plan as the stock plan (``_window.stock_if_identity``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["Piece", "PositionPlan", "band_regions"]


@dataclass(frozen=True)
class Piece:
    """Pairs with ``lo <= d <= hi`` (``hi`` None: no upper bound), attended with query rotation
    ``query`` (an index into the engine's queries) and key rotation ``key``.

    Example: the band ``0 <= d <= 1023`` at the stock rotations is ``Piece(0, 1023, query=0, key=0)``.
    """

    lo: int
    hi: int | None
    query: int
    key: int


class PositionPlan(Protocol):
    """One batch's positions under a scheme.

    ``length`` is each row's planned input length l, ``(B,)``. ``identity`` says that no pair
    of the batch is remapped (the engine then runs the stock plan instead). Regions are indices
    into the query rotations; ``region_key_version[r]`` is the key rotation region r attends
    with. Query rotation 0 and key rotation 0 are the stock positions on every row that is not
    remapped (a row of a mixed batch may run alone as the stock model).
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


def band_regions(query_positions: torch.Tensor, key_positions: torch.Tensor, boundary: float) -> torch.Tensor:
    """Two regions split at one relative distance: 0 where ``d = i − j < boundary``, 1 elsewhere.

    The region map of every plan split at one distance (a band next to the diagonal and the
    rest, or a sliding window and nothing): ``(B, S)``, ``(B, T)`` token positions -> ``(B, S, T)`` long.

    Example: ``band_regions(torch.tensor([[5]]), torch.arange(6)[None], 3)``
    -> ``[[[1, 1, 1, 0, 0, 0]]]`` (d = 5, 4, 3 beyond the band; 2, 1, 0 inside).
    """
    d = query_positions[:, :, None] - key_positions[:, None, :]  # (B, S, T)
    return (d >= boundary).long()
