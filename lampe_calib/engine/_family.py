"""Model families: what the engine needs from each transformers architecture, in one table.

A family entry (``FAMILIES``, keyed by ``config.model_type``) says how to read a model of that
architecture; the functions below read any supported model through its entry:

- the decoder (``model.model``: ``layers``, each with ``self_attn``, and one ``rotary_emb``);
- the projections: separate ``q_proj``/``k_proj``/``v_proj`` or one fused ``qkv_proj``
  (Phi-3), then ``o_proj``; optional per-head ``q_norm``/``k_norm`` before the rotation (Qwen3,
  Gemma 3);
- the logit scale: ``head_dim ** -0.5``, or ``query_pre_attn_scalar ** -0.5`` (Gemma 2 and 3);
  Gemma 2's logit soft-capping ``c·tanh(s/c)``;
- each layer's attention span: full, or a sliding window of ``sliding_window`` tokens
  (``d < sliding_window``; Mistral and Phi-3 on every layer, Gemma 2 and 3 on the layers that
  ``layer_types`` marks ``sliding_attention``);
- each layer's rotary table: one for the model, or one per layer type (Gemma 3: base 1e4 on the
  sliding layers, 1e6 on the global ones), and the RoPE parameters of the global layers, the
  ones a frequency-scaling method rescales;
- the pretraining window W (``pretraining_window``, the one rule, see its docstring).

Adding a family is one entry here plus its tests (``tests/engine/test_families.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "FAMILIES",
    "Family",
    "LayerSpan",
    "attention_scale",
    "decoder_of",
    "family_of",
    "global_rope_parameters",
    "head_dim_of",
    "layer_spans",
    "logit_softcap",
    "pretraining_window",
    "project_qkv",
    "rotary_dim_of",
    "rotary_table",
]

# RoPE types whose frequency table changes with the input (the engine needs a static one).
DYNAMIC_ROPE_TYPES = ("dynamic", "longrope")
# The layer type of layers that attend to the whole input (transformers' ``layer_types``).
FULL, SLIDING = "full_attention", "sliding_attention"


@dataclass(frozen=True)
class Family:
    """One architecture's answers to the engine's questions (see the module docstring).

    Args:
        name: transformers ``model_type``.
        fused_qkv: one ``qkv_proj`` producing q, k and v side by side (Phi-3).
        qk_norm: ``q_norm``/``k_norm`` per head before the rotation (Qwen3, Gemma 3).
        rope_per_layer_type: ``rope_parameters`` is keyed by layer type and the rotary module
            holds one ``{type}_inv_freq`` per type (Gemma 3).
        query_pre_attn_scalar: the logit scale is ``config.query_pre_attn_scalar ** -0.5``
            rather than ``head_dim ** -0.5`` (Gemma 2 and 3).
    """

    name: str
    fused_qkv: bool = False
    qk_norm: bool = False
    rope_per_layer_type: bool = False
    query_pre_attn_scalar: bool = False


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("llama"),
        Family("mistral"),
        Family("qwen2"),
        Family("qwen3", qk_norm=True),
        Family("gemma"),
        Family("gemma2", query_pre_attn_scalar=True),
        Family("gemma3_text", qk_norm=True, rope_per_layer_type=True, query_pre_attn_scalar=True),
        Family("phi3", fused_qkv=True),
    )
}


@dataclass(frozen=True)
class LayerSpan:
    """What one decoder layer attends to: ``window`` None for the whole input, else keys at
    distances ``d < window``; ``layer_type`` names its rotary table (``FULL`` or ``SLIDING``)."""

    window: int | None
    layer_type: str


def _config_of(model_or_config: Any) -> Any:
    return getattr(model_or_config, "config", model_or_config)


def family_of(model_or_config: Any) -> Family:
    """The family entry of a model or config; ``ValueError`` for a model without RoPE or of a
    family not in ``FAMILIES`` (naming the supported ones), and for RoPE this engine cannot serve.

    Example: ``family_of(LlamaConfig()).name`` -> ``"llama"``.
    """
    config = _config_of(model_or_config)
    model_type = getattr(config, "model_type", None)
    rope = getattr(config, "rope_parameters", None)
    if rope is None and getattr(config, "rope_theta", None) is None:
        raise ValueError(
            f"model type {model_type!r} does not use rotary position embeddings (RoPE); "
            "LaMPE applies only to RoPE models"
        )
    family = FAMILIES.get(model_type)
    if family is None:
        raise ValueError(
            f"model type {model_type!r} is not supported; supported families: {', '.join(FAMILIES)}"
        )
    if getattr(config, "use_bidirectional_attention", False):
        raise ValueError(f"model type {model_type!r} with bidirectional attention is not a causal LM")
    params = global_rope_parameters(config)
    if params.get("rope_type", "default") in DYNAMIC_ROPE_TYPES:
        raise ValueError(
            f"rope_type {params['rope_type']!r} changes its frequencies with the input; "
            "LaMPE needs a static one"
        )
    if float(params.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError(
            f"partial_rotary_factor {params['partial_rotary_factor']} rotates part of each head; "
            "the engine rotates whole heads"
        )
    return family


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder of a causal LM: the module with ``layers`` and ``rotary_emb`` (``model.model``)."""
    decoder = getattr(model, "model", None)
    if decoder is None or not hasattr(decoder, "layers") or not hasattr(decoder, "rotary_emb"):
        raise ValueError(f"model {type(model).__name__} has no decoder layers with a rotary embedding")
    return decoder


def head_dim_of(config: Any) -> int:
    """Head size D: ``config.head_dim``, else hidden size / heads.

    Example: a config with hidden_size 64 and 4 heads and no head_dim -> 16.
    """
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def rotary_dim_of(config: Any) -> int:
    """Rotary dimension: head size times ``partial_rotary_factor`` of the global layers' RoPE."""
    factor = global_rope_parameters(config).get("partial_rotary_factor", 1.0)
    return int(head_dim_of(config) * factor)


def attention_scale(config: Any) -> float:
    """The logit scale: ``query_pre_attn_scalar ** -0.5`` (Gemma 2 and 3) or ``D ** -0.5``.

    Example: Gemma 3 270M (head size 256, query_pre_attn_scalar 256) -> 0.0625.
    """
    if FAMILIES[config.model_type].query_pre_attn_scalar:
        return float(config.query_pre_attn_scalar) ** -0.5
    return head_dim_of(config) ** -0.5


def logit_softcap(config: Any) -> float | None:
    """The attention logit soft-cap c (scores become ``c·tanh(s/c)``), or None (Gemma 2: 50)."""
    cap = getattr(config, "attn_logit_softcapping", None)
    return None if cap is None else float(cap)


def layer_spans(config: Any) -> tuple[LayerSpan, ...]:
    """Each layer's attention span, from ``layer_types`` and ``sliding_window``.

    Without ``layer_types`` a ``sliding_window`` applies to every layer (Mistral, Phi-3), as in
    their attention modules. Example: Gemma 3 with 7 layers -> five ``LayerSpan(512,
    "sliding_attention")``, one ``LayerSpan(None, "full_attention")``, one sliding.
    """
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is None:
        return (LayerSpan(window, SLIDING if window else FULL),) * config.num_hidden_layers
    unknown = sorted(set(types) - {FULL, SLIDING})
    if unknown:
        raise ValueError(f"layer types {unknown} are not supported (only {FULL} and {SLIDING})")
    return tuple(LayerSpan(window if t == SLIDING else None, t) for t in types)


def global_rope_parameters(config: Any) -> dict[str, Any]:
    """The RoPE parameters of the layers that attend to the whole input (for Gemma 3 the
    ``full_attention`` entry), with ``rope_type`` filled in; configs that only carry
    ``rope_theta`` read as the default type."""
    params = getattr(config, "rope_parameters", None)
    if params is None:
        return {"rope_type": "default", "rope_theta": float(config.rope_theta)}
    if FAMILIES.get(config.model_type, Family("")).rope_per_layer_type:
        params = params[FULL]
    return {"rope_type": "default", **params}


def rotary_table(rotary: nn.Module, layer_type: str) -> tuple[torch.Tensor, float]:
    """``(inv_freq (D/2,) float32, attention_scaling)`` of a transformers rotary module for the
    layers of ``layer_type`` (the per-type buffers of Gemma 3, else the module's own)."""
    inv_freq = getattr(rotary, f"{layer_type}_inv_freq", None)
    if inv_freq is not None:
        scaling = getattr(rotary, f"{layer_type}_attention_scaling", 1.0)
    else:
        inv_freq, scaling = rotary.inv_freq, getattr(rotary, "attention_scaling", 1.0)
    return inv_freq.detach().to(torch.float32), float(scaling)


def project_qkv(
    family: Family, attn: nn.Module, hidden_states: torch.Tensor, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B, S, hidden)`` -> q ``(B, H, S, D)``, k and v ``(B, Hkv, S, D)``, q and k normed
    when the family norms them (before any rotation), through the layer's own modules."""
    B, S, _ = hidden_states.shape
    shape = (B, S, -1, head_dim)
    if family.fused_qkv:
        qkv = attn.qkv_proj(hidden_states)
        kv = attn.num_key_value_heads * head_dim
        q, k, v = qkv.split([qkv.shape[-1] - 2 * kv, kv, kv], dim=-1)
        q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
    else:
        q, k = attn.q_proj(hidden_states).view(shape), attn.k_proj(hidden_states).view(shape)
        v = attn.v_proj(hidden_states).view(shape)
    if family.qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def pretraining_window(max_position_embeddings: int, rope_parameters: Mapping[str, Any]) -> int:
    """W, the pretraining window, from a config alone (the one rule, whatever the loading route).

    - ``default`` RoPE, and ``llama3`` scaling: ``max_position_embeddings``. A llama3-scaled
      config (Llama 3.1, 3.2) was pretrained with that scaling to its full window (Llama 3.1:
      continued pretraining to 128K), so ``original_max_position_embeddings`` (8192) is where
      the scaling starts, not the end of training;
    - every other scaled type (``linear``, ``yarn``, ...): the scaling stretches an original
      window at inference, so W is ``original_max_position_embeddings`` when the config states
      it, else ``max_position_embeddings``.

    Example: ``pretraining_window(131072, {"rope_type": "llama3", ...,
    "original_max_position_embeddings": 8192})`` -> 131072; ``pretraining_window(16384,
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096})`` -> 4096.
    """
    if rope_parameters.get("rope_type", "default") in ("default", "llama3"):
        return int(max_position_embeddings)
    return int(rope_parameters.get("original_max_position_embeddings") or max_position_embeddings)
