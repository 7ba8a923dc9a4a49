"""What a method lets a calibration tune: its knobs, each with a range and its paper default.

A ``Knob`` is one parameter of a method at one (W, L): its name, the range worth searching, the
value the method uses by default today (its paper's rule), whether it is an integer, and whether
the range is searched on a log scale. A method declares its knobs as a function
``knobs(window, length) -> tuple[Knob, ...]``, the first being its main knob (the one
``lampe-calibrate --method`` sweeps). ``Knob.grid`` gives the values a sweep evaluates.
A ``Tunable`` pairs a method's knobs with its builder from chosen values (``scheme_tuning`` for
a position scheme); each method's entry in ``methods._registry`` holds its ``Tunable``.

Example::

    >>> selfextend_knobs(256, 1024)[0]
    Knob(name='group', low=1, high=40, default=5, integer=True, log=True, description=...)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Build", "Knob", "Tunable", "checked_values", "grid_values", "scheme_tuning"]


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
            if (wanted := _unfit(value, self.integer)) is not None:
                raise ValueError(f"knob {self.name!r}: {field} must be {wanted}, got {value!r}")
        if not self.low <= self.default <= self.high:
            raise ValueError(
                f"knob {self.name!r}: default {self.default!r} must lie in [{self.low!r}, {self.high!r}]"
            )
        if self.log and self.low <= 0:
            raise ValueError(f"knob {self.name!r}: a log range needs low > 0, got {self.low!r}")

    def check(self, value: float) -> float:
        """``value`` if it lies in the range (an integer for an integer knob), else ``ValueError``."""
        if (wanted := _unfit(value, self.integer)) is not None:
            raise ValueError(f"{self.name} must be {wanted}, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"{self.name} must lie in [{self.low:g}, {self.high:g}], got {value!r}")
        return int(value) if self.integer else float(value)

    def grid(self, count: int) -> tuple[float, ...]:
        """``count`` values spread over the range (evenly in log for a log knob), the default
        always among them; fewer when an integer range has fewer distinct values.

        Example: ``Knob("w", 1, 64, 16, True, True, "").grid(4)`` -> ``(1, 8, 16, 64)``.
        """
        return grid_values(self, count)


def _unfit(value: Any, integer: bool) -> str | None:
    """What a knob's number should have been (``"a finite number"``, ``"an integer"``), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "a finite number"
    return "an integer" if integer and value != int(value) else None


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


# (model, window, length, values) -> the method built with those knob values.
Build = Callable[["nn.Module", int, int, Mapping[str, float]], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Tunable:
    """A method's knobs at (W, L) and its builder with chosen knob values.

    ``knobs(window, length)`` gives, as defaults, the values the method uses without
    calibration, so ``build(model, window, length, {})`` is the method as it runs by default.
    """

    knobs: Callable[[int, int], tuple[Knob, ...]]
    build: Build | None  # None: calibrated by its own sweep (LaMPE)


def checked_values(knobs: tuple[Knob, ...], values: Mapping[str, float], method: str) -> dict[str, Any]:
    """``values`` checked against ``knobs``; a name that is not a knob is a ``KeyError``.

    Example: ``checked_values(selfextend_knobs(256, 1024), {"group": 8.0}, "selfextend")``
    -> ``{"group": 8}``.
    """
    by_name = {k.name: k for k in knobs}
    for name in values:
        if name not in by_name:
            raise KeyError(f"method {method!r} has no knob {name!r}; its knobs: {', '.join(by_name)}")
    return {name: by_name[name].check(value) for name, value in values.items()}


def scheme_tuning(
    name: str,
    config_of: Callable[[int, int], Any],
    run: Callable[[Any, Any], AbstractContextManager[Any]],
    knobs: Callable[[int, int], tuple[Knob, ...]],
) -> Tunable:
    """The ``Tunable`` of a position scheme whose knobs are fields of its config: the config
    ``config_of(W, L)`` (the paper's settings) with the chosen values in place, run by
    ``run(model, config)``."""

    def build(model: nn.Module, window: int, length: int, values: Mapping[str, float]) -> Any:
        chosen = checked_values(knobs(window, length), values, name)
        return run(model, dataclasses.replace(config_of(window, length), **chosen))

    build.__name__ = build.__qualname__ = f"tuned_{name}"
    return Tunable(knobs, build)
