"""Methods a calibration can tune: each one's knobs and how it is built with chosen values.

Registry contract (``TUNABLE``, a plain dict like ``METHODS``, derived from the registry's
entries: each ``Method.tuning``)::

    TUNABLE[name] = Tunable(knobs, build)
    knobs(window, length) -> tuple[Knob, ...]          # the first is the main knob
    build(model, window, length, values) -> context manager

``values`` maps knob names to values (each checked against its knob's range); a knob left out
keeps its default. Each ``knobs`` gives, as defaults, the values the method's ``METHODS``
factory uses, so ``build`` with no values is that factory's method (for a position scheme the
factory is that very ``build``; ``methods._registry``).

LaMPE's knobs (m, head, tail) are declared for the table of knobs; LaMPE itself is calibrated
by the (L, m) sweep and its sigmoid (``lampe-calibrate``), not through ``build``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from torch import nn

from ._knobs import Tunable
from ._method import knob_values
from ._registry import TUNABLE, lampe_knobs, tuned_context

__all__ = ["TUNABLE", "Tunable", "knob_values", "lampe_knobs", "main_knob_context", "tuned_context"]


def main_knob_context(
    name: str, model: nn.Module, window: int, length: int, value: float
) -> AbstractContextManager[Any]:
    """Method ``name`` with its main knob (the first of its ``knobs``) at ``value``."""
    main = TUNABLE[name].knobs(window, length)[0]
    return tuned_context(name, model, window, length, {main.name: value})
