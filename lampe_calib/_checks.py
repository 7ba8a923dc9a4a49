"""The one integer check every layer uses for its arguments (bools are not integers here)."""

from __future__ import annotations

from typing import Any

__all__ = ["check_integer", "is_integer"]


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
