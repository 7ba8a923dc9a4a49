"""Methods a calibration can tune: each one's knobs and how it is built with chosen values.

Registry contract (``TUNABLE``, a plain dict like ``METHODS``)::

    TUNABLE[name] = Tunable(knobs, build)
    knobs(window, length) -> tuple[Knob, ...]          # the first is the main knob
    build(model, window, length, values) -> context manager

``values`` maps knob names to values (each checked against its knob's range); a knob left out
keeps its default. Each ``knobs`` gives, as defaults, the values the method's ``METHODS``
factory uses today, so ``build`` with no values is that factory's method.

LaMPE's knobs (m, head, tail) are declared here for the table of knobs; LaMPE itself is
calibrated by the (L, m) sweep and its sigmoid (``lampe-calibrate``), not through ``build``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from torch import nn

from ._dca import DualChunkConfig, dca_knobs, dual_chunk_attention
from ._knobs import Knob
from ._rerope import ReRopeConfig, rerope_attention, rerope_knobs
from ._rope_scaling import (
    ntk_rope_parameters,
    rope_parameters_of,
    rotary_dim,
    swap_rope_parameters,
    yarn_rope_parameters,
)
from ._selfextend import SelfExtendConfig, self_extend, selfextend_knobs
from ._string import StringConfig, string_attention, string_knobs

__all__ = ["TUNABLE", "Tunable", "knob_values", "lampe_knobs", "main_knob_context", "tuned_context"]

Build = Callable[[nn.Module, int, int, Mapping[str, float]], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Tunable:
    """A method's knobs at (W, L) and its builder with chosen knob values."""

    knobs: Callable[[int, int], tuple[Knob, ...]]
    build: Build | None  # None: calibrated by its own sweep (LaMPE)


def lampe_knobs(window: int, length: int) -> tuple[Knob, ...]:
    """LaMPE's knobs at W: the mapping length m (main) from s1 + s2 + 1 to 1.25·W, default
    0.75·W (``lampe-fixed``, the paper's c), then the head s1 and tail s2 at the calibration's
    defaults W/8 and W/16 (``default_spec``).

    Example: ``lampe_knobs(256, 1024)[0]`` -> m in [49, 320], default 192.
    """
    head, tail = max(1, window // 8), max(1, window // 16)
    return (
        Knob(
            "mapping_length",
            head + tail + 1,
            round(1.25 * window),
            round(0.75 * window),
            True,
            False,
            "m: every relative position is mapped into [0, m)",
        ),
        Knob("head", 0, max(head, window // 4), head, True, False, "s1: the exact local band"),
        Knob("tail", 0, max(tail, window // 8), tail, True, False, "s2: the restored tail"),
    )


def _factor_knobs(window: int, length: int) -> tuple[Knob, ...]:
    """YaRN's and NTK's one knob: the scale factor s, default L/W (1, the stock model, for L <= W)."""
    default = max(1.0, length / window)
    return (Knob("factor", 1.0, max(2.0, 2 * default), default, False, True, "s: the RoPE scale factor"),)


def _checked(knobs: tuple[Knob, ...], values: Mapping[str, float], method: str) -> dict[str, Any]:
    """``values`` checked against ``knobs``; a name that is not a knob is a ``KeyError``."""
    by_name = {k.name: k for k in knobs}
    for name in values:
        if name not in by_name:
            raise KeyError(f"method {method!r} has no knob {name!r}; its knobs: {', '.join(by_name)}")
    return {name: by_name[name].check(value) for name, value in values.items()}


def _scheme(
    name: str, config_of: Callable[[int, int], Any], run: Callable[[nn.Module, Any], Any], knobs: Any
) -> Build:
    def build(model: nn.Module, window: int, length: int, values: Mapping[str, float]) -> Any:
        chosen = _checked(knobs(window, length), values, name)
        return run(model, dataclasses.replace(config_of(window, length), **chosen))

    return build


def _scaled(kind: str) -> Build:
    def build(model: nn.Module, window: int, length: int, values: Mapping[str, float]) -> Any:
        factor = _checked(_factor_knobs(window, length), values, kind).get(
            "factor", max(1.0, length / window)
        )
        if factor <= 1.0:
            return contextlib.nullcontext()
        params = rope_parameters_of(model, kind)
        if kind == "yarn":
            params = yarn_rope_parameters(params, window, factor * window)
        else:
            params = ntk_rope_parameters(params, rotary_dim(model), window, factor * window)
        return swap_rope_parameters(model, params, window)

    return build


def _selfextend(model: nn.Module, config: SelfExtendConfig) -> Any:
    return contextlib.nullcontext() if config.group == 1 else self_extend(model, config)


# name -> Tunable; the names are ``METHODS``' names.
TUNABLE: dict[str, Tunable] = {
    "selfextend": Tunable(
        selfextend_knobs, _scheme("selfextend", SelfExtendConfig.recommended, _selfextend, selfextend_knobs)
    ),
    "dca": Tunable(
        dca_knobs,
        _scheme("dca", lambda w, n: DualChunkConfig.recommended(w), dual_chunk_attention, dca_knobs),
    ),
    "string": Tunable(
        string_knobs, _scheme("string", StringConfig.recommended, string_attention, string_knobs)
    ),
    "rerope": Tunable(
        rerope_knobs,
        _scheme("rerope", lambda w, n: ReRopeConfig.recommended(w), rerope_attention, rerope_knobs),
    ),
    "yarn": Tunable(_factor_knobs, _scaled("yarn")),
    "ntk": Tunable(_factor_knobs, _scaled("ntk")),
    "lampe": Tunable(lampe_knobs, None),
}


def tuned_context(
    name: str, model: nn.Module, window: int, length: int, values: Mapping[str, float]
) -> AbstractContextManager[Any]:
    """Method ``name`` built with knob ``values`` (the others at their defaults).

    Example::

        with tuned_context("selfextend", model, 256, 1024, {"group": 8}):
            logits = model(input_ids).logits
    """
    tunable = TUNABLE.get(name)
    if tunable is None or tunable.build is None:
        known = ", ".join(k for k, t in TUNABLE.items() if t.build is not None)
        raise KeyError(f"method {name!r} has no knobs to set here; methods with knobs: {known}")
    return tunable.build(model, window, length, values)


def main_knob_context(
    name: str, model: nn.Module, window: int, length: int, value: float
) -> AbstractContextManager[Any]:
    """Method ``name`` with its main knob (the first of its ``knobs``) at ``value``."""
    main = TUNABLE[name].knobs(window, length)[0]
    return tuned_context(name, model, window, length, {main.name: value})


def knob_values(profile: Any, name: str, length: int) -> dict[str, float] | None:
    """The knob values a profile calibrated for method ``name`` chose at ``length``; None when
    the profile is not of that method (e.g. a LaMPE profile passed to every method)."""
    if profile is None or getattr(profile, "method", "lampe") != name or name == "lampe":
        return None
    return profile.knob_values(length)
