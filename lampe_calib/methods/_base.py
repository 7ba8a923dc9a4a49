"""What the position-scheme baselines' configs and plans share (SelfExtend, DCA, STRING, ReRoPE).

A config is a frozen dataclass whose fields are its plan's integer parameters, each declared with
``bound(low)`` (``bound(low, not_above="other")`` when it may not exceed another field), in the
plan's order, then ``attention_factor``. ``SchemeConfig`` validates them, builds the batch's plan
and serializes the config; ``RowPlan`` gives a plan whose only per-row field is ``length`` its
``row`` and (no chunks) ``chunks``; ``BandPlan``, a plan split at one distance, its regions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from .._checks import check_integer
from ..engine._config import check_attention_factor
from ..engine._plan import Piece, PositionPlan
from ..engine._positions import band_regions

__all__ = ["BandPlan", "RowPlan", "SchemeConfig", "bound"]


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
    """A plan of two regions split at one relative distance, ``boundary``: d < boundary is the
    first, the rest the second; the stock model when no row is longer than the boundary."""

    @property
    def boundary(self) -> int:
        raise NotImplementedError

    @property
    def identity(self) -> bool:
        """True when no row reaches d = boundary: one region, stock positions."""
        return bool((self.length <= self.boundary).all())

    def regions(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """``(B, S)``, ``(B, T)`` token positions -> ``(B, S, T)`` long: 0 where d < boundary, 1
        elsewhere (all 0 for an identity plan)."""
        boundary = float("inf") if self.identity else self.boundary
        return band_regions(query_positions, key_positions, boundary)

    def pieces(self) -> tuple[Piece, ...]:
        """The distance bands for the engine's fused path: ``[0, boundary − 1]`` with region 0's
        rotations, ``[boundary, ∞)`` with region 1's.

        Example (ReRoPE, w = 4): ``(Piece(0, 3, 0, 0), Piece(4, None, 1, 1))``.
        """
        if self.identity:
            return (Piece(0, None, 0, 0),)
        b, keys = self.boundary, self.region_key_version
        return (Piece(0, b - 1, 0, keys[0]), Piece(b, None, 1, keys[1]))
