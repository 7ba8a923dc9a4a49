"""What the position-scheme baselines' configs share (SelfExtend, DCA, STRING, ReRoPE).

Each config is a frozen dataclass whose fields are its plan's integer parameters, in the plan's
order, then ``attention_factor``. This base validates them, builds the batch's plan, and
serializes the config; a subclass declares only its bounds and its plan class.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import torch

from .._checks import check_integer
from ..engine._config import check_attention_factor
from ..engine._plan import PositionPlan

__all__ = ["SchemeConfig"]


class SchemeConfig:
    """Validation, ``plan`` and ``to_dict`` for a baseline's config dataclass.

    Class attributes of a subclass:
        LIMITS: integer field -> its smallest value, in the order the plan takes them.
        PLAN: the plan class, built as ``PLAN(lengths, *integer fields)``.
        NOT_ABOVE: ``(small, large)`` when field ``small`` must not exceed field ``large``.
    """

    LIMITS: ClassVar[dict[str, int]]
    PLAN: ClassVar[type]
    NOT_ABOVE: ClassVar[tuple[str, str] | None] = None
    attention_factor: float

    def __post_init__(self) -> None:
        for name, low in self.LIMITS.items():
            check_integer(name, getattr(self, name), low)
        if self.NOT_ABOVE is not None:
            small, large = self.NOT_ABOVE
            if getattr(self, small) > getattr(self, large):
                raise ValueError(
                    f"{small} must not exceed {large}={getattr(self, large)}, got {getattr(self, small)!r}"
                )
        check_attention_factor(self.attention_factor)

    def plan(self, lengths: torch.Tensor) -> PositionPlan:
        """The plan of a batch whose rows have ``lengths`` tokens, ``(B,)`` int64."""
        return self.PLAN(lengths.to(torch.float64).cpu(), *(getattr(self, name) for name in self.LIMITS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # a dataclass in every subclass
