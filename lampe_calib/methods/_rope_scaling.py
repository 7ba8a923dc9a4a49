"""Frequency-scaling baselines: position interpolation, NTK-aware scaling and YaRN.

All three change only RoPE's frequency table, so each is a new rotary module of the model's own
class, built by transformers (``ROPE_INIT_FUNCTIONS``) from a modified copy of the config's RoPE
parameters and swapped onto the instance (``model.model.rotary_emb``) inside a context manager.
Only the table of the layers that see the whole input changes: a model with one table per layer
type (Gemma 3) keeps its sliding layers' table, which never sees a distance past its window.
The scale factor is s = L / W for inputs of L tokens on a model of window W:

- PI (Chen et al. 2023, arXiv 2306.15595): every position divided by s, ``rope_type="linear"``.
- NTK (bloc97 2023, "NTK-aware scaled RoPE"; the base of dynamic NTK, emozilla 2023, at an input
  of L tokens): base θ·s^(D/(D−2)), so the lowest frequency is interpolated by s and the highest
  is kept. Static for the call (dynamic NTK would re-rotate with a new base as a cached sequence
  grows, which a KV cache cannot follow).
- YaRN (Peng et al. 2023, arXiv 2309.00071): ``rope_type="yarn"`` with factor s, the paper's
  β_fast = 32, β_slow = 1 and its temperature 0.1·ln s + 1 (transformers' default).

With s <= 1 there is nothing to extend and the factories leave the model as it is. Each scheme
is a ``Rescaling`` (``pi_rescaling``, ``ntk_rescaling``, ``yarn_rescaling``) that the method
registry names; ``rescaled_context`` runs a model on one, ``rotary_tuning`` tunes its factor s.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from torch import nn

from ..engine._family import (
    FAMILIES,
    FULL,
    decoder_of,
    global_rope_parameters,
    layer_spans,
    rotary_dim_of,
)
from ..engine._hook import apply_position_scheme
from ..engine._session import PositionScheme
from ..engine._window import WindowScheme
from ._knobs import Knob, Tunable, checked_values

__all__ = [
    "Rescaling",
    "factor_knobs",
    "ntk_base",
    "ntk_rescaling",
    "ntk_rope_parameters",
    "pi_rescaling",
    "pi_rope_parameters",
    "rescaled_context",
    "rescaled_rotary",
    "rope_parameters_of",
    "rotary_dim",
    "rotary_tuning",
    "swap_rope_parameters",
    "yarn_rescaling",
    "yarn_rope_parameters",
]

# YaRN paper §3.2 (and transformers' defaults): the ramp between interpolated and kept dims.
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0


def rope_parameters_of(model: nn.Module, method: str) -> dict[str, Any]:
    """The model's RoPE parameters; ``method`` names the baseline for the error message.

    The baselines rescale a plain RoPE table; a model that already uses a scaled rope type
    (llama3, yarn, ...) has no single base frequency to rescale.
    """
    config = getattr(model, "config", None)
    if getattr(config, "rope_parameters", None) is None and getattr(config, "rope_theta", None) is None:
        raise ValueError(f"method {method!r} needs a RoPE model; this model's config has no rope_theta")
    params = global_rope_parameters(config)
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"method {method!r} rescales plain RoPE (rope_type 'default'); got {rope_type!r}")
    return params


def _scale(window: int, length: int) -> float:
    if window <= 0 or length <= 0:
        raise ValueError(f"window and length must be positive, got window={window!r}, length={length!r}")
    return length / window


def pi_rope_parameters(params: Mapping[str, Any], window: int, length: int) -> dict[str, Any]:
    """Position interpolation: ``rope_type="linear"`` with factor s = L/W.

    Example: ``pi_rope_parameters({"rope_type": "default", "rope_theta": 1e4}, 256, 1024)``
    -> ``{"rope_type": "linear", "rope_theta": 1e4, "factor": 4.0}``.
    """
    return {**params, "rope_type": "linear", "factor": _scale(window, length)}


def ntk_base(theta: float, head_dim: int, scale: float) -> float:
    """NTK-aware base θ·s^(D/(D−2)) for rotary dim D (``dynamic`` NTK's formula at factor 1).

    Example: ``ntk_base(10000.0, 64, 4.0)`` -> ``10000·4^(64/62)`` = 41809.4…
    """
    return theta * scale ** (head_dim / (head_dim - 2))


def ntk_rope_parameters(params: Mapping[str, Any], head_dim: int, window: int, length: int) -> dict[str, Any]:
    """NTK-aware scaling as a plain table with the scaled base (``rope_type="default"``).

    ``head_dim`` is the rotary dim (head dim times any ``partial_rotary_factor``).

    Example: ``ntk_rope_parameters({"rope_type": "default", "rope_theta": 1e4}, 64, 256, 1024)``
    -> ``{"rope_type": "default", "rope_theta": 41809.4…}``.
    """
    return {**params, "rope_theta": ntk_base(params["rope_theta"], head_dim, _scale(window, length))}


def yarn_rope_parameters(params: Mapping[str, Any], window: int, length: int) -> dict[str, Any]:
    """YaRN with factor s = L/W over the original window W; temperature left to transformers
    (0.1·ln s + 1, the paper's Eq. 22).

    Example: ``yarn_rope_parameters({"rope_type": "default", "rope_theta": 1e4}, 256, 1024)``
    -> ``{"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0,
    "original_max_position_embeddings": 256, "beta_fast": 32.0, "beta_slow": 1.0}``.
    """
    return {
        **params,
        "rope_type": "yarn",
        "factor": _scale(window, length),
        "original_max_position_embeddings": window,
        "beta_fast": YARN_BETA_FAST,
        "beta_slow": YARN_BETA_SLOW,
    }


def rotary_dim(model: nn.Module) -> int:
    """Rotary dimension D of the model (head dim × partial_rotary_factor)."""
    return rotary_dim_of(model.config)


# (the model's RoPE parameters, model, W, L) -> the parameters of a rotary rescaled for L tokens.
Rescaling = Callable[[Mapping[str, Any], nn.Module, int, float], dict[str, Any]]


def pi_rescaling(params: Mapping[str, Any], model: nn.Module, window: int, length: float) -> dict[str, Any]:
    """PI as a ``Rescaling`` (``pi_rope_parameters``)."""
    return pi_rope_parameters(params, window, length)


def ntk_rescaling(params: Mapping[str, Any], model: nn.Module, window: int, length: float) -> dict[str, Any]:
    """NTK-aware scaling as a ``Rescaling``, on the model's rotary dim (``ntk_rope_parameters``)."""
    return ntk_rope_parameters(params, rotary_dim(model), window, length)


def yarn_rescaling(params: Mapping[str, Any], model: nn.Module, window: int, length: float) -> dict[str, Any]:
    """YaRN as a ``Rescaling`` (``yarn_rope_parameters``)."""
    return yarn_rope_parameters(params, window, length)


def rescaled_context(
    model: nn.Module,
    rescaling: Rescaling,
    window: int,
    length: float,
    method: str,
    scheme: PositionScheme | None = None,
) -> AbstractContextManager[Any]:
    """Run ``model`` on its rotary rescaled by ``rescaling`` for ``length`` tokens over the
    window W, under the position ``scheme`` when one is given (``swap_rope_parameters``);
    ``method`` names the method in errors (``rope_parameters_of``).

    Example::

        with rescaled_context(model, yarn_rescaling, 256, 1024, "yarn"):
            logits = model(input_ids).logits
    """
    params = rescaling(rope_parameters_of(model, method), model, window, length)
    return swap_rope_parameters(model, params, window, scheme)


def factor_knobs(window: int, length: int) -> tuple[Knob, ...]:
    """A rescaling's one knob: the scale factor s, default L/W (1, the stock model, for L <= W).

    Example: ``factor_knobs(256, 1024)[0]`` -> s in [1, 8], default 4.
    """
    default = max(1.0, length / window)
    return (Knob("factor", 1.0, max(2.0, 2 * default), default, False, True, "s: the RoPE scale factor"),)


def rotary_tuning(name: str, rescaling: Rescaling) -> Tunable:
    """The ``Tunable`` of a rescaling: its factor s (``factor_knobs``); s <= 1 is the stock model."""

    def build(model: nn.Module, window: int, length: int, values: Mapping[str, float]) -> Any:
        chosen = checked_values(factor_knobs(window, length), values, name)
        factor = chosen.get("factor", max(1.0, length / window))
        if factor <= 1.0:
            return contextlib.nullcontext()
        return rescaled_context(model, rescaling, window, factor * window, name)

    build.__name__ = build.__qualname__ = f"tuned_{name}"
    return Tunable(factor_knobs, build)


def rescaled_rotary(model: nn.Module, rope_parameters: Mapping[str, Any], window: int) -> nn.Module:
    """A rotary module of the model's own class built for ``rope_parameters`` (not installed).

    Built from a deep copy of the config whose ``rope_parameters`` are replaced (for a model
    with one table per layer type, only the ``full_attention`` entry) and
    ``max_position_embeddings`` set to the window W, which YaRN reads as the original length;
    transformers computes its ``inv_freq`` and ``attention_scaling``.
    """
    original = decoder_of(model).rotary_emb
    config = copy.deepcopy(model.config)
    if FAMILIES[config.model_type].rope_per_layer_type:
        config.rope_parameters = {**config.rope_parameters, FULL: dict(rope_parameters)}
    else:
        config.rope_parameters = dict(rope_parameters)
    config.max_position_embeddings = window
    return type(original)(config=config).to(next(original.buffers()).device)


@contextmanager
def swap_rope_parameters(
    model: nn.Module, rope_parameters: Mapping[str, Any], window: int, scheme: PositionScheme | None = None
) -> Iterator[Any]:
    """Run ``model`` with the layers that see the whole input on a rotary built for
    ``rope_parameters`` (``rescaled_rotary``), under the position ``scheme`` when one is given
    (LaMPE on a rescaled base); restore it on exit.

    A model without sliding-window layers gets the new module in place of
    ``model.model.rotary_emb`` (nothing else is touched; under a scheme the engine reads it). A
    model with sliding layers keeps its rotary module, whose table those layers need, and runs
    through the engine (``apply_position_scheme``): the global layers on the new table, the
    sliding ones exact on their own. Yields the new module, or the scheme's session.

    Example::

        params = pi_rope_parameters(rope_parameters_of(model, "pi"), 256, 1024)
        with swap_rope_parameters(model, params, window=256):
            logits = model(input_ids).logits
    """
    base = decoder_of(model)
    original, rotary = base.rotary_emb, rescaled_rotary(model, rope_parameters, window)
    if any(span.window is not None for span in layer_spans(model.config)):
        with apply_position_scheme(model, scheme or WindowScheme(None), global_rotary=rotary) as session:
            yield rotary if scheme is None else session
        return
    base.rotary_emb = rotary
    try:
        if scheme is None:
            yield rotary
        else:
            # apply_position_scheme reads the rotary module on entry: the new one is in place.
            with apply_position_scheme(model, scheme) as session:
                yield session
    finally:
        base.rotary_emb = original
