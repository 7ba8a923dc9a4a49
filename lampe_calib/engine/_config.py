"""LaMPE configuration: region sizes, mapping length (fixed or length-aware), mode, temperature.

The mapping length ``m`` is either one number for every input (``mapping_length``) or the
length-aware sigmoid of the paper, ``m(L) = c / (1 + exp(-(a·L + b)))`` (``sigmoid``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .._checks import check_integer

__all__ = [
    "MODES",
    "LampeConfig",
    "SigmoidMapping",
    "check_attention_factor",
    "check_integer",
    "sigmoid_mapping_length",
]

MODES = ("exact", "floor")


def check_attention_factor(value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0 (the RoPE cos/sin factor).

    Example: ``check_attention_factor(0)`` -> ``ValueError: attention_factor must be a finite
    number > 0, got 0``.
    """
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ValueError(f"attention_factor must be a finite number > 0, got {value!r}")


def sigmoid_mapping_length(length: float, a: float, b: float, c: float) -> float:
    """The length-aware mapping length ``m(L) = c / (1 + exp(-(a·L + b)))`` (paper §3.2).

    Example: ``sigmoid_mapping_length(8192, 1.0493e-4, -2.4666, 6204.4)`` -> ``1036.1…``
    (the official llama3-8b fit at L = 8192).
    """
    z = a * length + b
    # exp(-z) overflows for very negative z; the limit there is 0.
    if z < -700:
        return 0.0
    return c / (1.0 + math.exp(-z))


@dataclass(frozen=True)
class SigmoidMapping:
    """Parameters of ``m(L) = c / (1 + exp(-(a·L + b)))``; ``a > 0`` makes m grow with L."""

    a: float
    b: float
    c: float

    def __post_init__(self) -> None:
        for name in ("a", "b", "c"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"sigmoid.{name} must be a finite number, got {value!r}")
        if self.a <= 0:
            raise ValueError(f"sigmoid.a must be > 0 (m grows with L), got {self.a!r}")
        if self.c <= 0:
            raise ValueError(f"sigmoid.c must be > 0, got {self.c!r}")

    def __call__(self, length: float) -> float:
        return sigmoid_mapping_length(length, self.a, self.b, self.c)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SigmoidMapping:
        return cls(a=data["a"], b=data["b"], c=data["c"])


@dataclass(frozen=True)
class LampeConfig:
    """How LaMPE maps relative positions (docs/design.md §1).

    Args:
        head: s1, size of the exact local band (relative positions ``d <= head`` are kept).
        tail: s2, size of the restored tail (``d >= l - tail`` keeps its spacing, shifted).
        mapping_length: a fixed m for every input length; exclusive with ``sigmoid``.
        sigmoid: the length-aware ``m(L)``; exclusive with ``mapping_length``.
        mode: ``"exact"`` (the paper's real-valued positions) or ``"floor"`` (the official
            release's integer grouping, for parity with published numbers).
        attention_factor: multiplies RoPE's cos and sin of every rotation, so attention
            logits scale by its square (the official code uses 0.1·ln 2 + 1; 1.0 is neutral).

    Example: ``LampeConfig(head=32, tail=16, mapping_length=192).mapping_length_for(1024)`` -> 192.0
    """

    # 32 and 16 are small against any window we target (W >= 256) and keep the closest tokens
    # and the first tokens (attention sinks) at their trained spacing.
    head: int = 32
    tail: int = 16
    mapping_length: float | None = None
    sigmoid: SigmoidMapping | None = None
    mode: Literal["exact", "floor"] = "exact"
    attention_factor: float = 1.0

    def __post_init__(self) -> None:
        for name in ("head", "tail"):
            check_integer(name, getattr(self, name), 0)
        if (self.mapping_length is None) == (self.sigmoid is None):
            raise ValueError(
                "exactly one of mapping_length and sigmoid must be set, got "
                f"mapping_length={self.mapping_length!r}, sigmoid={self.sigmoid!r}"
            )
        if self.mapping_length is not None:
            m = self.mapping_length
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m):
                raise ValueError(f"mapping_length must be a finite number, got {m!r}")
            if m <= self.head + self.tail:
                raise ValueError(
                    f"mapping_length must exceed head + tail = {self.head + self.tail}, got {m!r}"
                )
        if self.sigmoid is not None and not isinstance(self.sigmoid, SigmoidMapping):
            raise ValueError(f"sigmoid must be a SigmoidMapping, got {self.sigmoid!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        check_attention_factor(self.attention_factor)

    def mapping_length_for(self, length: int) -> float:
        """The mapping length m used for an input of ``length`` tokens.

        A sigmoid value at or below ``head + tail`` (very short inputs under a small fit)
        is raised to ``head + tail + 1``, the smallest m with a non-empty middle region.
        """
        if self.mapping_length is not None:
            return float(self.mapping_length)
        assert self.sigmoid is not None
        return max(self.sigmoid(length), float(self.head + self.tail + 1))

    def plan(self, lengths: Any) -> Any:
        """The ``LampePlan`` of a batch whose rows have ``lengths`` tokens (``(B,)``)."""
        from ._positions import LampePlan

        return LampePlan.from_config(self, lengths)

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "tail": self.tail,
            "mapping_length": self.mapping_length,
            "sigmoid": None if self.sigmoid is None else self.sigmoid.to_dict(),
            "mode": self.mode,
            "attention_factor": self.attention_factor,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LampeConfig:
        sigmoid = data.get("sigmoid")
        return cls(
            head=data.get("head", 32),
            tail=data.get("tail", 16),
            mapping_length=data.get("mapping_length"),
            sigmoid=None if sigmoid is None else SigmoidMapping.from_dict(sigmoid),
            mode=data.get("mode", "exact"),
            attention_factor=data.get("attention_factor", 1.0),
        )
