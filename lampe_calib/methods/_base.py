"""What the position-scheme baselines' configs and plans share (SelfExtend, DCA, STRING, ReRoPE).

A config is a frozen dataclass whose fields are its plan's integer parameters, each declared with
``bound(low)`` (``bound(low, not_above="other")`` when it may not exceed another field), in the
plan's order, then ``attention_factor``. ``SchemeConfig`` validates them, builds the batch's plan
and serializes the config; ``RowPlan`` gives a plan whose only per-row field is ``length`` its
``row`` and (no chunks) ``chunks``.

``BandPlan`` is a plan split at one relative distance, the ``boundary``: pairs nearer than it
keep their stock positions, the rest are shown at the plan's own ``far_queries`` and
``far_keys`` positions (SelfExtend's grouped level, STRING's shift, ReRoPE's clip). A band plan
defines those two functions and its boundary; regions, rotations and pieces come from here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from .._checks import check_attention_factor, check_integer
from ..engine._plan import Piece, PositionPlan, band_regions

__all__ = ["FAR", "NEAR", "BandPlan", "RowPlan", "SchemeConfig", "bound"]

# A band plan's regions: pairs nearer than its boundary, and the rest.
NEAR, FAR = 0, 1


def bound(low: int, not_above: str | None = None) -> Any:
    """A config field for an integer plan parameter: at least ``low``, and at most the field
    ``not_above`` when given. Example: ``local_window: int = bound(0, not_above="chunk_size")``."""
    return dataclasses.field(metadata={"low": low, "not_above": not_above})


class SchemeConfig:
    """Validation, ``plan`` and ``to_dict`` for a baseline's config dataclass; a subclass sets
    ``PLAN``, the plan class built as ``PLAN(lengths, *bounded fields)``."""

    PLAN: ClassVar[type]
    attention_factor: float

    def _bounded(self) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(self) if "low" in f.metadata]  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        for f in self._bounded():
            check_integer(f.name, getattr(self, f.name), f.metadata["low"])
        for f in self._bounded():
            if (large := f.metadata["not_above"]) and getattr(self, f.name) > getattr(self, large):
                raise ValueError(
                    f"{f.name} must not exceed {large}={getattr(self, large)}, got {getattr(self, f.name)!r}"
                )
        check_attention_factor(self.attention_factor)

    def plan(self, lengths: torch.Tensor) -> PositionPlan:
        """The plan of a batch whose rows have ``lengths`` tokens, ``(B,)`` int64."""
        return self.PLAN(lengths.to(torch.float64).cpu(), *(getattr(self, f.name) for f in self._bounded()))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]  # a dataclass in every subclass


class RowPlan:
    """``row`` and ``chunks`` for a frozen dataclass plan whose only per-row field is ``length``."""

    length: torch.Tensor

    def row(self, index: int) -> Any:
        """The plan of one batch row, as a batch of one."""
        return dataclasses.replace(self, length=self.length[index : index + 1])  # type: ignore[type-var]

    def chunks(self) -> int | None:
        """Not chunked: the regions are distance bands."""
        return None


class BandPlan(RowPlan):
    """A plan of two regions split at one relative distance, ``boundary``: NEAR (d < boundary)
    at the stock positions, FAR (the rest) at ``far_queries``/``far_keys``; ``identity`` when no
    row is longer than the boundary (no pair reaches it).

    A subclass defines ``boundary`` and ``far_queries``, and ``far_keys`` unless its far region
    attends to the stock keys (``FAR_KEYS_STOCK``).
    """

    FAR_KEYS_STOCK: ClassVar[bool] = False

    @property
    def boundary(self) -> int:
        raise NotImplementedError

    def far_queries(self, pos: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` float64 token positions -> the far region's query positions."""
        raise NotImplementedError

    def far_keys(self, pos: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` float64 token positions -> the far region's key positions."""
        raise NotImplementedError

    @property
    def identity(self) -> bool:
        """True when no row reaches d = boundary: every pair keeps its stock positions."""
        return bool((self.length <= self.boundary).all())

    @property
    def region_key_version(self) -> tuple[int, ...]:
        """Key rotation per region: stock (0) for NEAR; for FAR its own (1), or stock."""
        return (0, 0) if self.FAR_KEYS_STOCK else (0, 1)

    def query_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` token positions -> ``(2, B, S)`` float32: stock, then far."""
        pos = positions.to(torch.float64)
        return torch.stack([pos, self.far_queries(pos)]).to(torch.float32)

    def key_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(V, B, T)`` float32: stock, then far (V = 1 with ``FAR_KEYS_STOCK``)."""
        pos = positions.to(torch.float64)
        if self.FAR_KEYS_STOCK:
            return pos[None].to(torch.float32)
        return torch.stack([pos, self.far_keys(pos)]).to(torch.float32)

    def regions(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """``(B, S)``, ``(B, T)`` token positions -> ``(B, S, T)`` long: NEAR (0) where
        d < boundary, FAR (1) elsewhere."""
        return band_regions(query_positions, key_positions, self.boundary)

    def pieces(self) -> tuple[Piece, ...]:
        """The distance bands for the engine's fused path: ``[0, boundary − 1]`` with NEAR's
        rotations, ``[boundary, ∞)`` with FAR's.

        Example (ReRoPE, w = 4): ``(Piece(0, 3, 0, 0), Piece(4, None, 1, 1))``.
        """
        b, keys = self.boundary, self.region_key_version
        return (Piece(0, b - 1, NEAR, keys[NEAR]), Piece(b, None, FAR, keys[FAR]))
