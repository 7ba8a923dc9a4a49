"""The checks every layer uses for its numeric arguments (bools are not numbers here)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_attention_factor", "check_finite", "check_integer", "is_integer"]


def is_integer(value: Any) -> bool:
    """True for an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_integer(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """Return ``value``, or raise ``ValueError`` naming ``name`` unless it is an integer in
    ``[low, high]`` (either bound may be open).

    Example: ``check_integer("head", 2.5, 0)`` -> ``ValueError: head must be an integer >= 0, got 2.5``.
    """
    if is_integer(value) and (low is None or value >= low) and (high is None or value <= high):
        return value
    if low is not None and high is not None:
        wanted = f"an integer in [{low}, {high}]"
    elif low is not None:
        wanted = f"an integer >= {low}"
    elif high is not None:
        wanted = f"an integer <= {high}"
    else:
        wanted = "an integer"
    raise ValueError(f"{name} must be {wanted}, got {value!r}")


def check_finite(name: str, value: Any) -> float:
    """Return ``value``, or raise ``ValueError`` naming ``name`` unless it is a finite number.

    Example: ``check_finite("sigmoid.a", float("nan"))`` -> ``ValueError: sigmoid.a must be a
    finite number, got nan``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def check_attention_factor(value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0 (the RoPE cos/sin factor of
    a position scheme).

    Example: ``check_attention_factor(0)`` -> ``ValueError: attention_factor must be a finite
    number > 0, got 0``.
    """
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ValueError(f"attention_factor must be a finite number > 0, got {value!r}")
