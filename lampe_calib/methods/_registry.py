"""Context-extension methods behind one interface, so every evaluator treats them alike.

Registry contract (``METHODS``, a plain dict like transformers' ``ROPE_INIT_FUNCTIONS``)::

    METHODS[name](model, window, length, profile) -> context manager

- ``model``: a transformers RoPE causal LM (Llama, Mistral, Qwen2, Qwen3 families);
- ``window``: W, the model's pretraining window (``model_info(model).window``);
- ``length``: L, the input length the method is set up for (a PPL window, or a passkey
  prompt plus its generated tokens);
- ``profile``: a calibrated profile (anything with ``to_lampe_config()``), or None; only the
  LaMPE methods read it. ``method_context`` also gives a profile calibrated for another method
  (``profile.method``) to that method, built with the profile's knobs (``methods._tuning``).

Entering the context runs ``model`` under the method, for a plain forward and for
``generate()``; leaving it restores the model exactly. Parameters default to each paper's
recommended settings for (W, L), listed on each factory. Every method is the stock model when
it has nothing to do (an input that fits the window; STRING and ReRoPE included, although
their rules would also change such an input), except DCA and LaMPE, whose own rules
decide (DCA chunks anything longer than a chunk; LaMPE compresses whenever L > m(L)).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from torch import nn

from .._checks import check_integer
from ._dca import DualChunkConfig, dual_chunk_attention
from ._lampe import FIXED_MAPPING_FRACTION, LampeConfig, apply_lampe, as_lampe_config
from ._rerope import ReRopeConfig, rerope_attention
from ._rope_scaling import (
    ntk_rope_parameters,
    pi_rope_parameters,
    rope_parameters_of,
    rotary_dim,
    swap_rope_parameters,
    yarn_rope_parameters,
)
from ._selfextend import SelfExtendConfig, self_extend
from ._string import StringConfig, string_attention
from ._tuning import knob_values, tuned_context

__all__ = [
    "BASES",
    "FIXED_MAPPING_FRACTION",
    "METHODS",
    "RESCALED_BASE_FACTOR",
    "STOCK",
    "MethodFactory",
    "method_context",
    "profile_base",
    "rescaled_base",
]

MethodFactory = Callable[[nn.Module, int, int, Any], AbstractContextManager[Any]]


def _check(window: int, length: int) -> None:
    for name, value in (("window", window), ("length", length)):
        check_integer(name, value, 1)


def vanilla(model: nn.Module, window: int, length: int, profile: Any = None) -> AbstractContextManager[Any]:
    """The stock model, unchanged (RoPE extrapolates past W)."""
    _check(window, length)
    return contextlib.nullcontext()


def position_interpolation(
    model: nn.Module, window: int, length: int, profile: Any = None
) -> AbstractContextManager[Any]:
    """PI (Chen et al. 2023, arXiv 2306.15595): positions divided by s = L/W, so every relative
    position of the input lands inside the window (the paper's interpolation to W)."""
    _check(window, length)
    if length <= window:
        return contextlib.nullcontext()
    params = pi_rope_parameters(rope_parameters_of(model, "pi"), window, length)
    return swap_rope_parameters(model, params, window)


def ntk(model: nn.Module, window: int, length: int, profile: Any = None) -> AbstractContextManager[Any]:
    """NTK-aware base scaling (bloc97 2023) with s = L/W, the base that dynamic NTK (emozilla
    2023) uses for an input of L tokens: θ' = θ·s^(D/(D−2))."""
    _check(window, length)
    if length <= window:
        return contextlib.nullcontext()
    params = ntk_rope_parameters(rope_parameters_of(model, "ntk"), rotary_dim(model), window, length)
    return swap_rope_parameters(model, params, window)


def yarn(model: nn.Module, window: int, length: int, profile: Any = None) -> AbstractContextManager[Any]:
    """YaRN (Peng et al. 2023, arXiv 2309.00071) with factor s = L/W, β_fast = 32, β_slow = 1
    and temperature 0.1·ln s + 1 (the paper's settings for LLaMA models)."""
    _check(window, length)
    if length <= window:
        return contextlib.nullcontext()
    params = yarn_rope_parameters(rope_parameters_of(model, "yarn"), window, length)
    return swap_rope_parameters(model, params, window)


def selfextend(
    model: nn.Module, window: int, length: int, profile: Any = None
) -> AbstractContextManager[Any]:
    """SelfExtend (Jin et al. 2024, arXiv 2401.01325): neighbour window w_n = W/4 and the
    smallest group size G with (W − w_n)·G + w_n >= L (the authors' README, §4)."""
    _check(window, length)
    config = SelfExtendConfig.recommended(window, length)
    if config.group == 1:
        return contextlib.nullcontext()
    return self_extend(model, config)


def dca(model: nn.Module, window: int, length: int, profile: Any = None) -> AbstractContextManager[Any]:
    """Dual Chunk Attention (An et al. 2024, arXiv 2402.17463) with the official settings:
    c = 3W/4, local window w = W/16, chunk s = c − w (``replace_with_chunkllama``)."""
    _check(window, length)
    return dual_chunk_attention(model, DualChunkConfig.recommended(window))


def string(model: nn.Module, window: int, length: int, profile: Any = None) -> AbstractContextManager[Any]:
    """STRING (An et al. 2024, arXiv 2410.18745): d >= S shown as d − S + w, with w = 128 (at
    most W/16), S ≈ L/3 raised so every shown position stays inside W where possible, and the
    official temperature 0.1·ln 2 + 1 (``StringConfig.recommended``)."""
    _check(window, length)
    if length <= window:
        return contextlib.nullcontext()
    return string_attention(model, StringConfig.recommended(window, length))


def rerope(model: nn.Module, window: int, length: int, profile: Any = None) -> AbstractContextManager[Any]:
    """ReRoPE (Su 2023): relative positions clipped to min(d, w), w = W/4 (the author's
    published setting, ``ReRopeConfig.recommended``)."""
    _check(window, length)
    if length <= window:
        return contextlib.nullcontext()
    return rerope_attention(model, ReRopeConfig.recommended(window))


def _lampe_profile(profile: Any) -> Any:
    """``profile``, or None when it calibrates another method (its knobs are not LaMPE's):
    ``lampe-fixed`` and the rescaled LaMPEs then run at their defaults."""
    return None if getattr(profile, "method", "lampe") != "lampe" else profile


def _profile_config(profile: Any, method: str) -> LampeConfig:
    return as_lampe_config(profile, f"method {method!r}")


def lampe_fixed(
    model: nn.Module, window: int, length: int, profile: Any = None
) -> AbstractContextManager[Any]:
    """LaMPE with one mapping length for every L (the length-awareness ablation):
    m = 3/4·W, the paper's sigmoid ceiling c; head, tail, mode and attention factor from the
    profile when one is given, else ``LampeConfig``'s defaults."""
    _check(window, length)
    fixed_m = FIXED_MAPPING_FRACTION * window
    profile = _lampe_profile(profile)
    if profile is None:
        return apply_lampe(model, LampeConfig(mapping_length=fixed_m))
    calibrated = _profile_config(profile, "lampe-fixed")
    return apply_lampe(model, dataclasses.replace(calibrated, mapping_length=fixed_m, sigmoid=None))


def lampe(model: nn.Module, window: int, length: int, profile: Any = None) -> AbstractContextManager[Any]:
    """LaMPE (arXiv 2508.02308) with m(L) and every other setting from the calibrated profile."""
    _check(window, length)
    if profile is None:
        raise ValueError("method 'lampe' needs a calibrated profile (m(L) comes from its sigmoid)")
    if (base := profile_base(profile)) != STOCK:
        raise ValueError(f"this profile was calibrated on the {base} base: use method 'lampe-{base}'")
    return apply_lampe(model, _profile_config(profile, "lampe"))


# LaMPE on a rescaled RoPE base (the paper's open question 1): the base is rescaled for s·W
# positions, then LaMPE maps every distance into m = 3/4·s·W of them. s = 2 is the smallest
# factor that doubles the usable range; YaRN and NTK are reported to hold at s = 2 without
# fine-tuning (Peng et al. 2023, Table 1 and §3.1).
RESCALED_BASE_FACTOR = 2


# The rotary a method or a calibration runs on: the model's own (STOCK), or a rescaled base
# LaMPE composes with.
STOCK = "stock"
BASES = (STOCK, "yarn", "ntk")


def rescaled_base(
    model: nn.Module, window: int, base: str, config: LampeConfig | None = None
) -> AbstractContextManager[Any]:
    """Run ``model`` on the ``base`` rotary (``yarn`` or ``ntk``, factor ``RESCALED_BASE_FACTOR``,
    built for s·W tokens), under LaMPE with ``config`` when one is given; restored on exit.

    Example::

        with rescaled_base(model, 256, "yarn", LampeConfig(mapping_length=384)):
            logits = model(input_ids).logits
    """
    if base not in BASES[1:]:
        raise ValueError(f"base must be one of {BASES[1:]}, got {base!r}")
    scaled = RESCALED_BASE_FACTOR * window
    params = rope_parameters_of(model, f"lampe-{base}")
    if base == "yarn":
        params = yarn_rope_parameters(params, window, scaled)
    else:
        params = ntk_rope_parameters(params, rotary_dim(model), window, scaled)
    return _on_rope(model, params, window, config)


def _on_rope(
    model: nn.Module, rope_parameters: dict[str, Any], window: int, config: LampeConfig | None
) -> AbstractContextManager[Any]:
    # The global layers on the rescaled rotary, under LaMPE when a config is given
    # (``swap_rope_parameters`` yields the rotary, or LaMPE's session).
    return swap_rope_parameters(model, rope_parameters, window, config)


def profile_base(profile: Any) -> str:
    """The rotary a profile was calibrated on: ``"stock"``, or its ``lampe.base.type``."""
    lampe = getattr(profile, "lampe", None) or {}
    return (lampe.get("base") or {}).get("type", STOCK)


def _rescaled_lampe(base: str) -> MethodFactory:
    name = f"lampe-{base}"

    def factory(
        model: nn.Module, window: int, length: int, profile: Any = None
    ) -> AbstractContextManager[Any]:
        _check(window, length)
        if length <= window:
            return contextlib.nullcontext()
        profile = _lampe_profile(profile)
        calibrated_on = profile_base(profile)
        if calibrated_on == base:  # m(L) calibrated on this very base
            return rescaled_base(model, window, base, _profile_config(profile, name))
        if calibrated_on != STOCK:
            raise ValueError(f"method {name!r} cannot use a profile calibrated on the {calibrated_on} base")
        mapping = FIXED_MAPPING_FRACTION * RESCALED_BASE_FACTOR * window
        if profile is None:
            config = LampeConfig(mapping_length=mapping)
        else:
            config = dataclasses.replace(_profile_config(profile, name), mapping_length=mapping, sigmoid=None)
        return rescaled_base(model, window, base, config)

    factory.__name__ = factory.__qualname__ = f"lampe_{base}"
    factory.__doc__ = (
        f"LaMPE on a {base.upper()} base of factor s = RESCALED_BASE_FACTOR (2): the rotary is the "
        f"``{base}`` baseline's for s·W tokens. With a profile calibrated on this base "
        f"(``lampe-calibrate --base {base}``), m(L) and every setting come from it; otherwise "
        "LaMPE maps every distance into a fixed m = 3/4·s·W (``lampe-fixed``'s rule on the "
        "rescaled window), with head, tail, mode and attention factor from the profile when one "
        "is given (the attention factor multiplies the base's own temperature). Stock within the "
        "window."
    )
    return factory


lampe_yarn = _rescaled_lampe("yarn")
lampe_ntk = _rescaled_lampe("ntk")


# name -> MethodFactory; the order is the order of evaluation tables.
METHODS: dict[str, MethodFactory] = {
    "vanilla": vanilla,
    "pi": position_interpolation,
    "ntk": ntk,
    "yarn": yarn,
    "selfextend": selfextend,
    "dca": dca,
    "string": string,
    "rerope": rerope,
    "lampe-fixed": lampe_fixed,
    "lampe": lampe,
    "lampe-yarn": lampe_yarn,
    "lampe-ntk": lampe_ntk,
}


def method_context(
    name: str, model: nn.Module, window: int, length: int, profile: Any = None
) -> AbstractContextManager[Any]:
    """``METHODS[name](model, window, length, profile)``, with a ``KeyError`` naming the known
    methods for an unknown name; a profile calibrated for method ``name`` (its ``method``)
    builds it with the knob values the profile chose for ``length`` (``TUNABLE``).

    Example::

        with method_context("yarn", model, window=256, length=1024):
            logits = model(input_ids).logits
    """
    factory = METHODS.get(name)
    if factory is None:
        raise KeyError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    # A profile calibrated for this very method (``lampe-calibrate --method``) sets its knobs.
    values = knob_values(profile, name, length)
    if values is not None:
        _check(window, length)
        return tuned_context(name, model, window, length, values)
    return factory(model, window, length, profile)
