"""What a method lets a calibration tune: its knobs, each with a range and its paper default.

A ``Knob`` is one parameter of a method at one (W, L): its name, the range worth searching, the
value the method uses by default today (its paper's rule), whether it is an integer, and whether
the range is searched on a log scale. A method declares its knobs as a function
``knobs(window, length) -> tuple[Knob, ...]``, the first being its main knob (the one
``lampe-calibrate --method`` sweeps). ``Knob.grid`` gives the values a sweep evaluates.

Example::

    >>> selfextend_knobs(256, 1024)[0]
    Knob(name='group', low=1, high=40, default=5, integer=True, log=True, description=...)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Knob", "grid_values"]


@dataclass(frozen=True)
class Knob:
    """One tunable parameter of a method, at one window W and input length L.

    Args:
        name: the method config's field (e.g. ``"group"`` for SelfExtend's G).
        low, high: the range a calibration searches (inclusive).
        default: the value the method uses without calibration (its paper's rule at (W, L)).
        integer: values are integers (token counts, group sizes).
        log: the range is searched evenly in log scale (a size spanning orders of magnitude).
        description: one line for tables and ``--help``.
    """

    name: str
    low: float
    high: float
    default: float
    integer: bool
    log: bool
    description: str

    def __post_init__(self) -> None:
        for field in ("low", "high", "default"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"knob {self.name!r}: {field} must be a finite number, got {value!r}")
            if self.integer and value != int(value):
                raise ValueError(f"knob {self.name!r}: {field} must be an integer, got {value!r}")
        if not self.low <= self.default <= self.high:
            raise ValueError(
                f"knob {self.name!r}: default {self.default!r} must lie in [{self.low!r}, {self.high!r}]"
            )
        if self.log and self.low <= 0:
            raise ValueError(f"knob {self.name!r}: a log range needs low > 0, got {self.low!r}")

    def check(self, value: float) -> float:
        """``value`` if it lies in the range (an integer for an integer knob), else ``ValueError``."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{self.name} must be a finite number, got {value!r}")
        if self.integer and value != int(value):
            raise ValueError(f"{self.name} must be an integer, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"{self.name} must lie in [{self.low:g}, {self.high:g}], got {value!r}")
        return int(value) if self.integer else float(value)

    def grid(self, count: int) -> tuple[float, ...]:
        """``count`` values spread over the range (evenly in log for a log knob), the default
        always among them; fewer when an integer range has fewer distinct values.

        Example: ``Knob("w", 1, 64, 16, True, True, "").grid(4)`` -> ``(1, 8, 16, 64)``.
        """
        return grid_values(self, count)


def grid_values(knob: Knob, count: int) -> tuple[float, ...]:
    """``Knob.grid``: ``count − 1`` values spread evenly over the range (both ends included),
    the default added, and while fewer than ``count`` (integers that round alike), the middle
    of the widest gap that has a new value there."""
    if count < 1:
        raise ValueError(f"a knob grid needs at least 1 value, got {count}")
    lo, hi = float(knob.low), float(knob.high)

    def scale(v: float) -> float:
        return math.log(v) if knob.log else v

    def unscale(t: float) -> float:
        value = math.exp(t) if knob.log else t
        return float(round(value)) if knob.integer else value

    ends = [lo, hi][: count - 1]  # 1 value: the default alone; 2: the default and low
    inner = [unscale(scale(lo) + (scale(hi) - scale(lo)) * i / (count - 2)) for i in range(1, count - 2)]
    spread = [lo, *inner, hi]
    values = sorted({float(knob.default), *(spread if count > 2 else ends)})
    while len(values) < count:
        gaps = sorted(
            ((scale(b) - scale(a), a, b) for a, b in zip(values, values[1:], strict=False)), reverse=True
        )
        middles = (unscale((scale(a) + scale(b)) / 2) for _, a, b in gaps)
        middle = next((m for m in middles if m not in values), None)
        if middle is None:
            break  # an integer range with no value left between its points
        values = sorted({*values, middle})
    return tuple(int(v) if knob.integer else v for v in values)
