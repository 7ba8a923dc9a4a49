"""``apply_lampe``: run a transformers RoPE model under LaMPE, for prefill and ``generate()``.

Stock attention rotates q and k before its attention function and caches rotated keys, and a
LaMPE key needs two rotations (stock for the head and tail, α·j for the middle). So, inside the
context manager and on this model instance only:

- each decoder layer's ``self_attn`` is swapped for a ``LampeAttention`` that reuses the layer's
  own projections (and q/k norms, biases), read through the model's family entry (``_family``:
  projections, logit scale and soft-cap, sliding windows, per-layer rotary tables); layers that
  see the whole input run the scheme, sliding-window layers their exact window (``_window``);
  each caches both key rotations side by side in the last
  dim of the cache's key tensor ``(B, Hkv, T, 2·D)``; with l fixed for a sequence, a cached key
  never needs a new rotation (docs/design.md §1 "Decoding");
- the model's attention implementation is set to ``"lampe"``, registered through transformers'
  ``AttentionInterface`` and ``AttentionMaskInterface`` so the model hands attention a 2D padding
  mask instead of building an ``S × T`` one;
- ``generate`` gets an instance-level wrapper that fixes l = prompt + max_new_tokens for the call.

On exit every swapped module, the attention implementation and ``generate`` are restored.
No transformers class attribute is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._attention import dense_region_attention, fused_attention
from ._config import LampeConfig
from ._family import (
    FAMILIES,
    FULL,
    Family,
    LayerSpan,
    attention_scale,
    decoder_of,
    family_of,
    global_rope_parameters,
    head_dim_of,
    layer_spans,
    logit_softcap,
    pretraining_window,
    project_qkv,
    rotary_table,
)
from ._interface import (
    ATTN_IMPLEMENTATION,
    SUPPORTED_TRANSFORMERS,
    check_attention,
    refuse_unknown,
    register,
)
from ._rope import Rope, rotate_many
from ._session import LampeSession, PositionScheme, Step
from ._window import WindowScheme

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "SUPPORTED_TRANSFORMERS",
    "LampeAttention",
    "LampeSession",
    "PositionScheme",
    "apply_lampe",
    "apply_position_scheme",
]

SUPPORTED_MODEL_TYPES = tuple(FAMILIES)


@dataclass(frozen=True)
class LayerSetup:
    """What one swapped layer reads from its family, settled once on entry.

    Args:
        family: the model's family entry.
        head_dim: D.
        scale: the logit scale (``attention_scale``).
        softcap: the logit soft-cap c, or None.
        order: the layer's index among the layers of its session (0 starts a sequence's plan).
    """

    family: Family
    head_dim: int
    scale: float
    softcap: float | None
    order: int


class LampeAttention(nn.Module):
    """A decoder layer's attention under a position scheme; holds the original module and reuses
    its weights (``project_qkv``: projections, q/k norms, biases) and ``o_proj``."""

    def __init__(self, inner: nn.Module, session: LampeSession, setup: LayerSetup) -> None:
        super().__init__()
        self.inner = inner
        self.session = session
        self.setup = setup
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
        refuse_unknown("LampeAttention", unknown)
        if cache is not None and past_key_values is not None and cache is not past_key_values:
            raise TypeError("LampeAttention got two different caches, as `cache` and as `past_key_values`")
        past_key_values = cache if cache is not None else past_key_values
        setup, session = self.setup, self.session
        B, S, _ = hidden_states.shape
        q, k, v = project_qkv(setup.family, self.inner, hidden_states, setup.head_dim)  # (B, H, S, D)
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(
                "apply_lampe takes a 2D padding mask, got an attention mask of shape "
                f"{tuple(attention_mask.shape)}"
            )
        past = past_key_values.get_seq_length(self.layer_idx) if past_key_values is not None else 0
        key_valid = attention_mask.to(torch.bool) if attention_mask is not None else None  # (B, T)
        forward_key = position_embeddings[0] if position_embeddings is not None else None
        step = session.step(
            forward_key, past_key_values, key_valid, past, S, B, setup.order, q.dtype, q.device
        )
        if step.query_positions is not self._checked:
            _check_positions(step.query_positions, key_valid, past, position_ids, cache_position)
            self._checked = step.query_positions
        if setup.order == session.last_layer:
            session.end_forward()  # drop the tables before the LM head allocates its logits
        queries = rotate_many(q, step.query_tables)  # (R, B, H, S, D)
        keys = rotate_many(k, step.key_tables)  # (V, B, Hkv, S, D)
        del q, k  # only the rotated copies are used from here on
        V, D = keys.shape[0], setup.head_dim
        values = v
        if past_key_values is not None:
            # Both rotations side by side in the last dim: (B, Hkv, S, V·D). A sliding layer's
            # cache hands back only its last keys (n <= T), enough for its window.
            packed = keys.permute(1, 2, 3, 0, 4).reshape(B, -1, S, V * D)
            packed, values = past_key_values.update(packed, v, self.layer_idx)
            if packed.shape[2] != S:
                keys = packed.view(B, -1, packed.shape[2], V, D).permute(3, 0, 1, 2, 4)
        out = self._attend(queries, keys, values, step, key_valid)
        out = out.transpose(1, 2).reshape(B, S, -1)  # (B, S, H·D)
        return self.inner.o_proj(out), None

    def _attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        step: Step,
        key_valid: torch.Tensor | None,
    ) -> torch.Tensor:
        """``(R, B, H, S, D)`` queries over the last n keys ``(V, B, Hkv, n, D)`` of the T tokens:
        fused kernels for distance pieces and DCA chunks (prefill, left padding, decode steps);
        the blocked dense path for anything else (other padding, soft-capped logits)."""
        setup = self.setup
        offset = step.positions.shape[1] - keys.shape[3]  # tokens the cache no longer holds
        positions = step.positions[:, offset:]
        valid = key_valid[:, offset:] if key_valid is not None else None
        out = None
        if setup.softcap is None and (valid is None or _left_padded(valid)):
            out = fused_attention(queries, keys, values, step.plan, valid, setup.scale, step.kernels)
        if out is None:
            out, _ = dense_region_attention(
                queries,
                keys,
                values,
                step.plan,
                step.query_positions,
                positions,
                valid,
                setup.scale,
                softcap=setup.softcap,
            )
        return out


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
        model: a transformers causal LM of a supported family (``SUPPORTED_MODEL_TYPES``: Llama,
            Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3, Phi-3).
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


def _sessions(
    model: nn.Module, family: Family, config: PositionScheme, global_rotary: nn.Module
) -> tuple[LampeSession, list[tuple[LampeSession, LayerSetup]]]:
    """The scheme's session for the layers that see the whole input (their table read from
    ``global_rotary``), one stock session per sliding window (its table from the model's own
    rotary), and each layer's session and setup."""
    spans = layer_spans(model.config)
    window = pretraining_window(model.config.max_position_embeddings, global_rope_parameters(model.config))
    for span in spans:
        if span.window is not None and span.window > window:
            raise ValueError(
                f"sliding window {span.window} exceeds the pretraining window W = {window}; "
                "apply_lampe keeps sliding layers exact and supports windows up to W only"
            )
    groups: dict[LayerSpan, list[int]] = {}
    for index, span in enumerate(spans):
        groups.setdefault(span, []).append(index)
    head_dim, scale = head_dim_of(model.config), attention_scale(model.config)
    softcap = logit_softcap(model.config)
    sessions: dict[LayerSpan, LampeSession] = {}
    full = LayerSpan(None, FULL)
    for span in {full, *groups}:
        scheme: PositionScheme = config if span.window is None else WindowScheme(span.window)
        rotary = global_rotary if span.window is None else decoder_of(model).rotary_emb
        inv_freq, scaling = rotary_table(rotary, span.layer_type)
        rope = Rope(inv_freq=inv_freq, scale=scaling * scheme.attention_factor)
        sessions[span] = LampeSession(scheme, rope, last_layer=len(groups.get(span, ())) - 1)
    layers = [
        (sessions[span], LayerSetup(family, head_dim, scale, softcap, groups[span].index(index)))
        for index, span in enumerate(spans)
    ]
    return sessions[full], layers


@contextmanager
def apply_position_scheme(
    model: nn.Module, config: PositionScheme, global_rotary: nn.Module | None = None
) -> Iterator[LampeSession]:
    """Run ``model`` with the attention swap for any ``PositionScheme`` (see ``apply_lampe``).

    Layers that see the whole input run under ``config``, with the rotary table of
    ``global_rotary`` (a rescaled rotary module of the model's class; default the model's own);
    sliding-window layers keep their exact window with the model's own table (``_window``).
    Yields the scheme's session."""
    _refuse_nested(model)
    family = family_of(model)
    decoder = decoder_of(model)
    main, layers = _sessions(model, family, config, global_rotary or decoder.rotary_emb)
    check_attention(decoder)
    register()
    original_impl = model.config._attn_implementation
    swapped: list[tuple[nn.Module, nn.Module]] = []
    original_generate = model.generate
    every = {id(s): s for s, _ in layers} | {id(main): main}

    def generate(*args: Any, **kwargs: Any) -> Any:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        gen_config = kwargs.get("generation_config") or model.generation_config
        prompt = 0 if input_ids is None else input_ids.shape[-1]
        new = kwargs.get("max_new_tokens", gen_config.max_new_tokens)
        if new is None:
            new = kwargs.get("max_length", gen_config.max_length) - prompt
        for session in every.values():
            session.planned_length = prompt + int(new)
        try:
            return original_generate(*args, **kwargs)
        finally:
            for session in every.values():
                session.planned_length = None

    try:
        for layer, (session, setup) in zip(decoder.layers, layers, strict=True):
            swapped.append((layer, layer.self_attn))
            layer.self_attn = LampeAttention(layer.self_attn, session, setup)
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
        model.generate = generate
        yield main
    finally:
        model.__dict__.pop("generate", None)
        model.set_attn_implementation(original_impl)
        for layer, attn in swapped:
            layer.self_attn = attn
