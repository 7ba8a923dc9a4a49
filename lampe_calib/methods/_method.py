"""What a method is: a ``Method`` entry of the registry (``methods._registry``), and the
factories that make one from a rotary rescaling (``rotary_method``), from a position scheme
(``scheme_method``), or from two entries composed (``on_base``: LaMPE on a rescaled base)."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from torch import nn

from .._checks import check_integer
from ._knobs import Knob, Tunable, scheme_tuning
from ._names import LAMPE, STOCK
from ._rope_scaling import Rescaling, rescaled_context, rotary_tuning

__all__ = [
    "RESCALED_BASE_FACTOR",
    "STOCK",
    "LAMPE",
    "BaseScheme",
    "Method",
    "MethodFactory",
    "ProfileUse",
    "check_window_length",
    "knob_values",
    "on_base",
    "rotary_method",
    "scheme_method",
]

MethodFactory = Callable[[nn.Module, int, int, Any], AbstractContextManager[Any]]
# For a method that can run on a rescaled base (LaMPE): (profile, usable window, base, name of
# the composed method) -> the position scheme to run there.
BaseScheme = Callable[[Any, float, str, str], Any]

# LaMPE on a rescaled RoPE base (the paper's open question 1): the base is rescaled for s·W
# positions, then LaMPE maps every distance into m = 3/4·s·W of them. s = 2 is the smallest
# factor that doubles the usable range; YaRN and NTK are reported to hold at s = 2 without
# fine-tuning (Peng et al. 2023, Table 1 and §3.1).
RESCALED_BASE_FACTOR = 2


class ProfileUse(enum.Enum):
    """What a method reads of a calibrated LaMPE profile."""

    NONE = "none"  # nothing (a profile of this very method sets its knobs: ``Method.tuning``)
    OPTIONAL = "optional"  # LaMPE's settings when one is given, defaults otherwise
    REQUIRED = "required"  # m(L) itself: the method cannot run without one


@dataclass(frozen=True)
class Method:
    """One method of the registry.

    Args:
        name: its name on the command line and in result tables.
        description: one line for ``--help`` and tables.
        build: the factory (``MethodFactory``; the contract of ``methods._registry.METHODS``).
        profile: what it reads of a LaMPE profile.
        base: the rotary it runs on: ``STOCK`` or the name of a rescaling entry.
        tuning: its knobs and its builder with chosen values; None: nothing to tune.
        rescaling: for a rotary rescaling (PI, NTK, YaRN), its rule; a base for ``on_base``.
        base_scheme: for a method that can run on a rescaled base, its scheme there.
    """

    name: str
    description: str
    build: MethodFactory
    profile: ProfileUse = ProfileUse.NONE
    base: str = STOCK
    tuning: Tunable | None = None
    rescaling: Rescaling | None = None
    base_scheme: BaseScheme | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.description or "\n" in self.description:
            raise ValueError(f"method {self.name!r}: a name and a one-line description are needed")


def check_window_length(window: int, length: int) -> None:
    """``ValueError`` unless W and L are integers >= 1 (every factory checks them first)."""
    for name, value in (("window", window), ("length", length)):
        check_integer(name, value, 1)


def _named(factory: MethodFactory, name: str, description: str) -> MethodFactory:
    factory.__name__ = factory.__qualname__ = name.replace("-", "_")
    factory.__doc__ = description
    return factory


def rotary_method(name: str, rescaling: Rescaling, description: str, tunable: bool = True) -> Method:
    """A rotary rescaling with s = L/W as a method (the stock model for L <= W)."""

    def factory(model: nn.Module, window: int, length: int, profile: Any = None) -> Any:
        check_window_length(window, length)
        if length <= window:
            return contextlib.nullcontext()
        return rescaled_context(model, rescaling, window, length, name)

    tuning = rotary_tuning(name, rescaling) if tunable else None
    return Method(name, description, _named(factory, name, description), tuning=tuning, rescaling=rescaling)


def scheme_method(
    name: str,
    description: str,
    config_of: Callable[[int, int], Any],
    run: Callable[[nn.Module, Any], Any],
    knobs: Callable[[int, int], tuple[Knob, ...]],
    beyond_window_only: bool = True,
) -> Method:
    """A position scheme as a method: ``run(model, config_of(W, L))``; with
    ``beyond_window_only`` the stock model for L <= W. Its knobs are fields of its config."""
    tuning = scheme_tuning(name, config_of, run, knobs)
    assert tuning.build is not None

    def factory(model: nn.Module, window: int, length: int, profile: Any = None) -> Any:
        check_window_length(window, length)
        if beyond_window_only and length <= window:
            return contextlib.nullcontext()
        return tuning.build(model, window, length, {})  # the config's defaults: the paper's

    return Method(name, description, _named(factory, name, description), tuning=tuning)


def on_base(base: Method, method: Method) -> Method:
    """``method`` (LaMPE) on the rotary of the rescaling entry ``base`` built for s·W tokens
    (s = ``RESCALED_BASE_FACTOR``), named ``<method>-<base>``; the stock model for L <= W. The
    base's attention temperature and the method's attention factor multiply."""
    rescaling, base_scheme = base.rescaling, method.base_scheme
    if rescaling is None or base_scheme is None:
        raise ValueError(f"{method.name!r} cannot run on {base.name!r}: it needs a rescaling and a scheme")
    name = f"{method.name}-{base.name}"

    def factory(model: nn.Module, window: int, length: int, profile: Any = None) -> Any:
        check_window_length(window, length)
        if length <= window:
            return contextlib.nullcontext()
        scaled = RESCALED_BASE_FACTOR * window
        scheme = base_scheme(profile, scaled, base.name, name)
        return rescaled_context(model, rescaling, window, scaled, name, scheme)

    description = (
        f"{method.name} on the {base.name} rotary for s·W tokens, s = {RESCALED_BASE_FACTOR}: m(L) from "
        "a profile calibrated on it, else m = 3/4·s·W"
    )
    return Method(name, description, _named(factory, name, description), ProfileUse.OPTIONAL, base.name)


def knob_values(profile: Any, name: str, length: int) -> dict[str, float] | None:
    """The knob values a profile calibrated for method ``name`` chose at ``length``; None when
    the profile is not of that method (e.g. a LaMPE profile passed to every method)."""
    if profile is None or getattr(profile, "method", LAMPE) != name or name == LAMPE:
        return None
    return profile.knob_values(length)
