"""Context-extension methods behind one interface, so every evaluator treats them alike.

Registry contract (``METHODS``, a plain dict like transformers' ``ROPE_INIT_FUNCTIONS``)::

    METHODS[name](model, window, length, profile) -> context manager

- ``model``: a transformers RoPE causal LM (Llama, Mistral, Qwen2, Qwen3 families);
- ``window``: W, the model's pretraining window (``model_info(model).window``);
- ``length``: L, the input length the method is set up for (a PPL window, or a passkey
  prompt plus its generated tokens);
- ``profile``: a calibrated profile (anything with ``to_lampe_config()``), or None; only the
  LaMPE methods read it. ``method_context`` also gives a profile calibrated for another method
  (``profile.method``) to that method, built with the profile's knobs (``Method.tuning``).

Entering the context runs ``model`` under the method, for a plain forward and for
``generate()``; leaving it restores the model exactly. Parameters default to each paper's
recommended settings for (W, L), cited beside each entry. Every method is the stock model when
it has nothing to do (an input that fits the window; STRING and ReRoPE included, although
their rules would also change such an input), except DCA and LaMPE, whose own rules
decide (DCA chunks anything longer than a chunk; LaMPE compresses whenever L > m(L)).

Each method is one ``Method`` entry of ``METHOD_ENTRIES`` (its name, a line of help, what it
reads of a profile, the rotary base it runs on, its factory and its knobs); ``METHODS``, the
tunable methods (``TUNABLE``), the rescaled bases (``BASES``) and the command lines' choices
(``method_names`` and its siblings) are derived from them. LaMPE on a rescaled base is the
composition of two entries (``on_base``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from torch import nn

from ._dca import DualChunkConfig, dca_knobs, dual_chunk_attention
from ._knobs import Knob, Tunable
from ._lampe import FIXED_MAPPING_FRACTION, LampeConfig, apply_lampe, as_lampe_config
from ._method import (
    LAMPE,
    RESCALED_BASE_FACTOR,
    STOCK,
    Method,
    MethodFactory,
    ProfileUse,
    check_window_length,
    knob_values,
    on_base,
    rotary_method,
    scheme_method,
)
from ._rerope import ReRopeConfig, rerope_attention, rerope_knobs
from ._rope_scaling import ntk_rescaling, pi_rescaling, rescaled_context, yarn_rescaling
from ._selfextend import SelfExtendConfig, self_extend, selfextend_knobs
from ._string import StringConfig, string_attention, string_knobs

__all__ = [
    "BASES",
    "FIXED_MAPPING_FRACTION",
    "METHODS",
    "METHOD_ENTRIES",
    "RESCALED_BASE_FACTOR",
    "STOCK",
    "TUNABLE",
    "Method",
    "MethodFactory",
    "ProfileUse",
    "calibrated_method_names",
    "knob_method_names",
    "lampe_knobs",
    "method_context",
    "method_names",
    "on_base",
    "profile_base",
    "profile_method_names",
    "rescaled_base",
    "tuned_context",
]


def vanilla(model: nn.Module, window: int, length: int, profile: Any = None) -> AbstractContextManager[Any]:
    """The stock model, unchanged (RoPE extrapolates past W)."""
    check_window_length(window, length)
    return contextlib.nullcontext()


def _selfextend(model: nn.Module, config: SelfExtendConfig) -> Any:
    return contextlib.nullcontext() if config.group == 1 else self_extend(model, config)


# --- LaMPE ---------------------------------------------------------------------------------------


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
            round(FIXED_MAPPING_FRACTION * window),
            True,
            False,
            "m: every relative position is mapped into [0, m)",
        ),
        Knob("head", 0, max(head, window // 4), head, True, False, "s1: the exact local band"),
        Knob("tail", 0, max(tail, window // 8), tail, True, False, "s2: the restored tail"),
    )


def _lampe_profile(profile: Any) -> Any:
    """``profile``, or None when it calibrates another method (its knobs are not LaMPE's):
    ``lampe-fixed`` and the rescaled LaMPEs then run at their defaults."""
    return None if getattr(profile, "method", LAMPE) != LAMPE else profile


def _profile_config(profile: Any, method: str) -> LampeConfig:
    return as_lampe_config(profile, f"method {method!r}")


def _fixed_config(profile: Any, mapping: float, method: str) -> LampeConfig:
    """LaMPE at one mapping length m for every L, with head, tail, mode and attention factor
    from a LaMPE profile when one is given, else ``LampeConfig``'s defaults."""
    profile = _lampe_profile(profile)
    if profile is None:
        return LampeConfig(mapping_length=mapping)
    return dataclasses.replace(_profile_config(profile, method), mapping_length=mapping, sigmoid=None)


def lampe_fixed(
    model: nn.Module, window: int, length: int, profile: Any = None
) -> AbstractContextManager[Any]:
    """LaMPE with one mapping length for every L (the length-awareness ablation):
    m = 3/4·W, the paper's sigmoid ceiling c; head, tail, mode and attention factor from the
    profile when one is given, else ``LampeConfig``'s defaults."""
    check_window_length(window, length)
    return apply_lampe(model, _fixed_config(profile, FIXED_MAPPING_FRACTION * window, "lampe-fixed"))


def lampe(model: nn.Module, window: int, length: int, profile: Any = None) -> AbstractContextManager[Any]:
    """LaMPE (arXiv 2508.02308) with m(L) and every other setting from the calibrated profile."""
    check_window_length(window, length)
    if profile is None:
        raise ValueError("method 'lampe' needs a calibrated profile (m(L) comes from its sigmoid)")
    if (base := profile_base(profile)) != STOCK:
        raise ValueError(f"this profile was calibrated on the {base} base: use method 'lampe-{base}'")
    return apply_lampe(model, _profile_config(profile, LAMPE))


def _lampe_on(profile: Any, window: float, base: str, method: str) -> LampeConfig:
    """LaMPE's scheme on a rescaled ``base`` of usable window s·W: with a profile calibrated on
    this very base, m(L) and every setting come from it; otherwise LaMPE maps every distance
    into a fixed m = 3/4·s·W (``lampe-fixed``'s rule on the rescaled window)."""
    profile = _lampe_profile(profile)
    calibrated_on = profile_base(profile)
    if calibrated_on == base:  # m(L) calibrated on this very base
        return _profile_config(profile, method)
    if calibrated_on != STOCK:
        raise ValueError(f"method {method!r} cannot use a profile calibrated on the {calibrated_on} base")
    return _fixed_config(profile, FIXED_MAPPING_FRACTION * window, method)


def profile_base(profile: Any) -> str:
    """The rotary a profile was calibrated on: ``STOCK``, or its ``lampe.base.type``."""
    lampe = getattr(profile, "lampe", None) or {}
    return (lampe.get("base") or {}).get("type", STOCK)


# --- the table -------------------------------------------------------------------------------------

_PI = rotary_method("pi", pi_rescaling, "PI: positions divided by s = L/W (Chen et al. 2023)", tunable=False)
# NTK-aware (bloc97 2023), the base dynamic NTK (emozilla 2023) uses for an input of L tokens.
_NTK = rotary_method("ntk", ntk_rescaling, "NTK-aware scaling: base θ·s^(D/(D−2)), s = L/W (bloc97 2023)")
# YaRN: β_fast = 32, β_slow = 1 and temperature 0.1·ln s + 1, the paper's settings for LLaMA.
_YARN = rotary_method(
    "yarn", yarn_rescaling, "YaRN with s = L/W and the paper's β and temperature (Peng et al. 2023)"
)
_LAMPE = Method(
    LAMPE,
    "LaMPE with m(L) and every setting from the calibrated profile (arXiv 2508.02308)",
    lampe,
    ProfileUse.REQUIRED,
    tuning=Tunable(lampe_knobs, None),  # calibrated by its own (L, m) sweep
    base_scheme=_lampe_on,
)

# Every method once; the order is the order of evaluation tables.
METHOD_ENTRIES: tuple[Method, ...] = (
    Method("vanilla", "the stock model, unchanged (RoPE extrapolates past W)", vanilla),
    _PI,
    _NTK,
    _YARN,
    # SelfExtend (arXiv 2401.01325): w_n = W/4, the smallest G with (W − w_n)·G + w_n >= L (§4).
    scheme_method(
        "selfextend",
        "SelfExtend: grouped positions past a neighbour window W/4 (Jin et al. 2024)",
        SelfExtendConfig.recommended,
        _selfextend,
        selfextend_knobs,
        beyond_window_only=False,
    ),
    # DCA (arXiv 2402.17463), the official c = 3W/4, w = W/16, s = c − w (replace_with_chunkllama).
    scheme_method(
        "dca",
        "Dual Chunk Attention: chunks of 11W/16 with a local window W/16 (An et al. 2024)",
        lambda window, length: DualChunkConfig.recommended(window),
        dual_chunk_attention,
        dca_knobs,
        beyond_window_only=False,
    ),
    # STRING (arXiv 2410.18745): w = 128 (at most W/16), S ≈ L/3 raised to keep positions in W.
    scheme_method(
        "string",
        "STRING: distances from S ≈ L/3 on shifted down to S − w (An et al. 2024)",
        StringConfig.recommended,
        string_attention,
        string_knobs,
    ),
    # ReRoPE (Su 2023): the author's published w = W/4.
    scheme_method(
        "rerope",
        "ReRoPE: relative positions clipped to min(d, W/4) (Su 2023)",
        lambda window, length: ReRopeConfig.recommended(window),
        rerope_attention,
        rerope_knobs,
    ),
    Method(
        "lampe-fixed",
        "LaMPE with one m = 3/4·W for every L (the length-awareness ablation)",
        lampe_fixed,
        ProfileUse.OPTIONAL,
    ),
    _LAMPE,
    on_base(_YARN, _LAMPE),
    on_base(_NTK, _LAMPE),
)
_BY_NAME = {entry.name: entry for entry in METHOD_ENTRIES}

# name -> MethodFactory; the order is the order of evaluation tables.
METHODS: dict[str, MethodFactory] = {entry.name: entry.build for entry in METHOD_ENTRIES}

# name -> Tunable: position schemes, then rotary rescalings, then LaMPE (its own sweep).
TUNABLE: dict[str, Tunable] = dict(
    sorted(
        ((entry.name, entry.tuning) for entry in METHOD_ENTRIES if entry.tuning is not None),
        key=lambda item: (item[1].build is None, _BY_NAME[item[0]].rescaling is not None),
    )
)

# The rotary bases: the model's own, then those a method of the table is composed on.
BASES: tuple[str, ...] = (STOCK, *(entry.base for entry in METHOD_ENTRIES if entry.base != STOCK))


def method_names() -> tuple[str, ...]:
    """Every method's name, in table order (``lampe-eval --methods``)."""
    return tuple(METHODS)


def profile_method_names() -> tuple[str, ...]:
    """The methods that read a LaMPE profile (``lampe`` cannot run without one)."""
    return tuple(entry.name for entry in METHOD_ENTRIES if entry.profile is not ProfileUse.NONE)


def knob_method_names() -> tuple[str, ...]:
    """The methods whose main knob ``lampe-calibrate --method`` sweeps, in ``TUNABLE`` order."""
    return tuple(name for name, tuning in TUNABLE.items() if tuning.build is not None)


def calibrated_method_names() -> tuple[str, ...]:
    """``lampe-calibrate --method``'s choices: LaMPE (its own sweep) first, then the methods
    with knobs (``knob_method_names``)."""
    own = tuple(name for name, tuning in TUNABLE.items() if tuning.build is None)
    return own + knob_method_names()


def rescaled_base(
    model: nn.Module, window: int, base: str, config: LampeConfig | None = None
) -> AbstractContextManager[Any]:
    """Run ``model`` on the ``base`` rotary (one of ``BASES`` but ``STOCK``, factor
    ``RESCALED_BASE_FACTOR``, built for s·W tokens), under LaMPE with ``config`` when one is
    given; restored on exit.

    Example::

        with rescaled_base(model, 256, "yarn", LampeConfig(mapping_length=384)):
            logits = model(input_ids).logits
    """
    if base not in BASES[1:]:
        raise ValueError(f"base must be one of {BASES[1:]}, got {base!r}")
    composed = next(entry for entry in METHOD_ENTRIES if entry.base == base)
    rescaling = _BY_NAME[base].rescaling
    assert rescaling is not None
    return rescaled_context(model, rescaling, window, RESCALED_BASE_FACTOR * window, composed.name, config)


def tuned_context(
    name: str, model: nn.Module, window: int, length: int, values: Mapping[str, float]
) -> AbstractContextManager[Any]:
    """Method ``name`` built with knob ``values`` (the others at their defaults).

    Example::

        with tuned_context("selfextend", model, 256, 1024, {"group": 8}):
            logits = model(input_ids).logits
    """
    tuning = TUNABLE.get(name)
    if tuning is None or tuning.build is None:
        known = ", ".join(knob_method_names())
        raise KeyError(f"method {name!r} has no knobs to set here; methods with knobs: {known}")
    return tuning.build(model, window, length, values)


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
        check_window_length(window, length)
        return tuned_context(name, model, window, length, values)
    return factory(model, window, length, profile)
