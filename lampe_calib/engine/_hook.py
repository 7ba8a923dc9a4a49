"""``apply_lampe``: run a transformers RoPE model under LaMPE, for prefill and ``generate()``.

Stock attention rotates q and k before its attention function and caches rotated keys, and a
LaMPE key needs two rotations (stock for the head and tail, α·j for the middle). So, inside the
context manager and on this model instance only:

- each decoder layer's ``self_attn`` is swapped for a ``LampeAttention`` that reuses the layer's
  own projections (and q/k norms, biases) and caches both key rotations side by side in the last
  dim of the cache's key tensor ``(B, Hkv, T, 2·D)``; with l fixed for a sequence, a cached key
  never needs a new rotation (DESIGN §1 "Decoding");
- the model's attention implementation is set to ``"lampe"``, registered through transformers'
  ``AttentionInterface`` and ``AttentionMaskInterface`` so the model hands attention a 2D padding
  mask instead of building an ``S × T`` one;
- ``generate`` gets an instance-level wrapper that fixes l = prompt + max_new_tokens for the call.

On exit every swapped module, the attention implementation and ``generate`` are restored.
No transformers class attribute is touched.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import transformers
from torch import nn

from ._attention import dense_region_attention, fused_attention
from ._config import LampeConfig
from ._rope import Rope, rotate_many
from ._session import LampeSession, PositionScheme

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "SUPPORTED_TRANSFORMERS",
    "LampeAttention",
    "LampeSession",
    "PositionScheme",
    "apply_lampe",
    "apply_position_scheme",
]

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# The transformers releases whose attention modules this swap is tested against (both ends in
# CI); pyproject.toml declares the same range.
SUPPORTED_TRANSFORMERS = ">=5.0,<6"
# Parameters a supported attention module's forward may have: the ones LampeAttention.forward
# names. A stock module with any other parameter has an interface this swap does not know.
_KNOWN_ATTENTION_PARAMETERS = frozenset(
    {
        "hidden_states",
        "position_embeddings",
        "attention_mask",
        "cache",
        "past_key_values",
        "position_ids",
        "cache_position",
        "use_cache",
    }
)
ATTN_IMPLEMENTATION = "lampe"
# RoPE types whose frequency table changes with the input (the engine needs a static one).
_DYNAMIC_ROPE_TYPES = ("dynamic", "longrope")


def _unused_attention(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("the 'lampe' attention implementation only runs inside `with apply_lampe(model, ...)`")


def _refuse_unknown(where: str, unknown: dict[str, Any]) -> None:
    """A TypeError naming keywords a transformers hook received but does not understand."""
    if unknown:
        raise TypeError(
            f"{where} got keyword(s) it does not know: {', '.join(sorted(unknown))} "
            f"(transformers {transformers.__version__}; lampe-calib supports transformers "
            f"{SUPPORTED_TRANSFORMERS})"
        )


def _padding_mask(
    *,
    batch_size: int,
    kv_length: int,
    attention_mask: torch.Tensor | None = None,
    q_length: int | None = None,
    q_offset: int = 0,
    kv_offset: int = 0,
    cache_position: torch.Tensor | None = None,
    mask_function: Any = None,
    local_size: int | None = None,
    allow_is_causal_skip: bool = True,
    allow_is_bidirectional_skip: bool = False,
    dtype: torch.dtype | None = None,
    config: Any = None,
    use_vmap: bool = False,
    device: Any = None,
    **unknown: Any,
) -> torch.Tensor | None:
    """Mask hook: the ``(B, T)`` bool padding mask of the keys, or None when nothing is padded.

    The engine builds causality and its regions itself, so of what transformers describes
    (``q_length``/``q_offset`` from 5.24 on, ``cache_position`` before; the mask function, dtype
    and device of a dense mask) it needs only the padding; a sliding window that cuts the input
    (``local_size``) is attention the engine does not compute, so it is refused, and so is any
    keyword this hook does not know.
    """
    _refuse_unknown("the 'lampe' mask hook", unknown)
    if local_size is not None and kv_offset + kv_length > local_size:
        raise ValueError(
            f"the model attends through a sliding window of {local_size} tokens, shorter than the input "
            f"({kv_offset + kv_length}); apply_lampe implements full causal attention only"
        )
    if attention_mask is None:
        return None
    attention_mask = attention_mask[:, -kv_length:]
    return None if bool(attention_mask.all()) else attention_mask


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, _unused_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, _padding_mask)


class LampeAttention(nn.Module):
    """A decoder layer's attention under LaMPE; holds the original module and reuses its weights."""

    def __init__(self, inner: nn.Module, session: LampeSession) -> None:
        super().__init__()
        self.inner = inner
        self.session = session
        self.layer_idx = inner.layer_idx
        self._checked: torch.Tensor | None = None  # the query positions last checked (once per pass)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        past_key_values: Any = None,
        position_ids: torch.Tensor | None = None,
        cache_position: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **unknown: Any,
    ) -> tuple[torch.Tensor, None]:
        # The decoder layer's keywords, named one by one: the KV cache arrives as `cache`
        # (transformers >= 5.24) or `past_key_values` (before). A keyword this module does not
        # know would otherwise change nothing and pass silently (that is how a renamed cache
        # keyword once turned every decode step into one without its past keys).
        _refuse_unknown("LampeAttention", unknown)
        if cache is not None and past_key_values is not None and cache is not past_key_values:
            raise TypeError("LampeAttention got two different caches, as `cache` and as `past_key_values`")
        past_key_values = cache if cache is not None else past_key_values
        attn, session = self.inner, self.session
        B, S, _ = hidden_states.shape
        shape = (B, S, -1, attn.head_dim)
        q, k = attn.q_proj(hidden_states).view(shape), attn.k_proj(hidden_states).view(shape)
        v = attn.v_proj(hidden_states).view(shape)
        if hasattr(attn, "q_norm"):  # Qwen3 normalises q and k per head before rotation
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, S, D)

        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(
                "apply_lampe takes a 2D padding mask, got an attention mask of shape "
                f"{tuple(attention_mask.shape)}"
            )
        past = past_key_values.get_seq_length(self.layer_idx) if past_key_values is not None else 0
        T = past + S
        key_valid = attention_mask.to(torch.bool) if attention_mask is not None else None
        forward_key = position_embeddings[0] if position_embeddings is not None else None
        step = session.step(
            forward_key, past_key_values, key_valid, past, S, B, self.layer_idx, q.dtype, q.device
        )
        if step.query_positions is not self._checked:
            _check_positions(step.query_positions, key_valid, past, position_ids, cache_position)
            self._checked = step.query_positions
        if self.layer_idx == session.last_layer:
            session.end_forward()  # drop the tables before the LM head allocates its logits
        plan, positions, q_positions = step.plan, step.positions, step.query_positions
        queries = rotate_many(q, step.query_tables)  # (R, B, H, S, D)
        keys = rotate_many(k, step.key_tables)  # (V, B, Hkv, S, D)
        del q, k  # only the rotated copies are used from here on
        V, D = keys.shape[0], attn.head_dim
        values = v
        if past_key_values is not None:
            # Both rotations side by side in the last dim: (B, Hkv, S, V·D).
            packed = keys.permute(1, 2, 3, 0, 4).reshape(B, -1, S, V * D)
            packed, values = past_key_values.update(packed, v, self.layer_idx)
            if past:
                keys = packed.view(B, -1, T, V, D).permute(3, 0, 1, 2, 4)

        # Fused kernels for distance pieces and DCA chunks (prefill, left padding, decode steps);
        # the blocked dense path for anything else (other padding, other schemes).
        out = None
        if key_valid is None or _left_padded(key_valid):
            out = fused_attention(queries, keys, values, plan, key_valid, attn.scaling)
        if out is None:
            out, _ = dense_region_attention(
                queries, keys, values, plan, q_positions, positions, key_valid, attn.scaling
            )
        out = out.transpose(1, 2).reshape(B, S, -1)  # (B, S, H·D)
        return attn.o_proj(out), None


def _check_positions(
    query_positions: torch.Tensor,
    key_valid: torch.Tensor | None,
    past: int,
    position_ids: torch.Tensor | None,
    cache_position: torch.Tensor | None,
) -> None:
    """Refuse positions the engine would not honour. It derives every token's position from the
    padding mask and the cache length, as ``generate()`` builds ``position_ids``; a plain forward
    hands it the default ``past + arange(S)`` even for padded rows, which it overrides on purpose
    (so a padded row equals the row alone). Any other ``position_ids`` (packed sequences, offsets)
    would be ignored, so they are refused."""
    if cache_position is not None and cache_position.numel() and int(cache_position.reshape(-1)[0]) != past:
        raise ValueError(
            f"cache_position starts at {int(cache_position.reshape(-1)[0])} but the cache holds {past} tokens"
        )
    if position_ids is None:
        return
    given = position_ids.to(query_positions.device).expand_as(query_positions)
    default = past + torch.arange(given.shape[-1], device=given.device)
    if bool((given == default).all()):
        return
    real = key_valid[:, past:] if key_valid is not None else torch.ones_like(given, dtype=torch.bool)
    if not bool(((given == query_positions) | ~real).all()):
        raise ValueError(
            "apply_lampe takes token positions from the padding mask and the cache; the position_ids "
            "passed differ from them (packed sequences and custom positions are not supported)"
        )


def _left_padded(key_valid: torch.Tensor) -> bool:
    """True when each row's real tokens are one block at the right end (left padding)."""
    return bool((key_valid[:, 1:] >= key_valid[:, :-1]).all())


def _decoder(model: nn.Module) -> nn.Module:
    base = getattr(model, "model", model)
    if not hasattr(base, "layers") or not hasattr(base, "rotary_emb"):
        raise ValueError(
            f"model {type(model).__name__} has no decoder layers with a rotary embedding; "
            f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return base


def _check_model(model: nn.Module) -> None:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    rope = getattr(config, "rope_parameters", None)
    if config is None or (rope is None and getattr(config, "rope_theta", None) is None):
        raise ValueError(f"model type {model_type!r} does not use rotary position embeddings (RoPE)")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    rope_type = (rope or {}).get("rope_type", "default")
    if rope_type in _DYNAMIC_ROPE_TYPES:
        raise ValueError(
            f"rope_type {rope_type!r} changes its frequencies with the input; LaMPE needs a static one"
        )


def _check_attention(decoder: nn.Module) -> None:
    """Refuse a decoder whose attention modules take arguments the swap does not know."""
    attn = decoder.layers[0].self_attn
    parameters = inspect.signature(type(attn).forward).parameters
    named = {n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
    problems = sorted(named - _KNOWN_ATTENTION_PARAMETERS)
    if not {"hidden_states", "position_embeddings", "attention_mask"} <= named:
        problems.append("no hidden_states/position_embeddings/attention_mask")
    if not named & {"cache", "past_key_values"}:
        problems.append("no cache or past_key_values")
    if problems:
        raise ValueError(
            f"{type(attn).__name__}.forward in transformers {transformers.__version__} has an interface "
            f"apply_lampe does not know ({'; '.join(problems)}); "
            f"supported: transformers {SUPPORTED_TRANSFORMERS}"
        )


def _as_config(config_or_profile: Any) -> LampeConfig:
    if isinstance(config_or_profile, LampeConfig):
        return config_or_profile
    to_config = getattr(config_or_profile, "to_lampe_config", None)
    if to_config is None:
        raise ValueError(
            f"apply_lampe takes a LampeConfig or a profile, got {type(config_or_profile).__name__}"
        )
    return to_config()


def apply_lampe(
    model: nn.Module, config_or_profile: Any, *, allow_transfer: bool = False
) -> contextlib.AbstractContextManager[LampeSession]:
    """Run ``model`` under LaMPE inside the ``with`` block; restore it exactly on exit.

    Args:
        model: a transformers causal LM of a supported family (Llama, Mistral, Qwen2, Qwen3).
        config_or_profile: a ``LampeConfig`` (fixed m or a sigmoid m(L)) or a loaded profile
            (anything with ``to_lampe_config()``).
        allow_transfer: apply a profile to a model whose position facts (family, window, RoPE
            type/base/scaling, head size) differ from the one it was fitted on; without it such a
            profile is refused (``Profile.check_model``). A ``LampeConfig`` is never checked.

    Raises:
        ValueError: the profile was fitted on a model with other facts, the model is already
            inside ``apply_lampe`` (or another position scheme), or it is not supported.

    Yields:
        The session (its ``config`` and ``rope``), mostly for inspection.

    The input length l is each row's number of real tokens for a plain forward, and prompt +
    ``max_new_tokens`` in ``generate()``; rows with l <= m keep their positions.

    Example::

        with apply_lampe(model, LampeConfig(head=32, tail=16, mapping_length=192)):
            logits = model(input_ids).logits
    """
    _refuse_nested(model)
    check_model = getattr(config_or_profile, "check_model", None)
    if check_model is not None:  # a profile: it must belong to this model (or be a stated transfer)
        check_model(model, allow_transfer=allow_transfer)
    return apply_position_scheme(model, _as_config(config_or_profile))


def _refuse_nested(model: nn.Module) -> None:
    """One position scheme at a time: a second swap would wrap the first one's modules."""
    if getattr(getattr(model, "config", None), "_attn_implementation", None) == ATTN_IMPLEMENTATION:
        raise ValueError(
            "the model is already inside apply_lampe (or another position scheme); nested use is not "
            "supported: leave the outer `with` block first"
        )


@contextmanager
def apply_position_scheme(model: nn.Module, config: PositionScheme) -> Iterator[LampeSession]:
    """Run ``model`` with the attention swap for any ``PositionScheme`` (see ``apply_lampe``)."""
    _refuse_nested(model)
    _check_model(model)
    decoder = _decoder(model)
    _check_attention(decoder)
    rope = Rope.from_rotary_module(decoder.rotary_emb, config.attention_factor)
    session = LampeSession(config, rope, last_layer=len(decoder.layers) - 1)
    _register()
    original_impl = model.config._attn_implementation
    swapped: list[tuple[nn.Module, nn.Module]] = []
    original_generate = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        gen_config = kwargs.get("generation_config") or model.generation_config
        prompt = 0 if input_ids is None else input_ids.shape[-1]
        new = kwargs.get("max_new_tokens", gen_config.max_new_tokens)
        if new is None:
            new = kwargs.get("max_length", gen_config.max_length) - prompt
        session.planned_length = prompt + int(new)
        try:
            return original_generate(*args, **kwargs)
        finally:
            session.planned_length = None

    try:
        for layer in decoder.layers:
            swapped.append((layer, layer.self_attn))
            layer.self_attn = LampeAttention(layer.self_attn, session)
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
        model.generate = generate
        yield session
    finally:
        model.__dict__.pop("generate", None)
        model.set_attn_implementation(original_impl)
        for layer, attn in swapped:
            layer.self_attn = attn
