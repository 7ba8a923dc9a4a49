"""``apply_position_scheme``: run a transformers RoPE model under any position scheme (a
``PositionScheme``: the methods layer's LaMPE and baselines), for prefill and ``generate()``.

Stock attention rotates q and k before its attention function and caches rotated keys, and a
scheme's key may need several rotations (LaMPE: stock for the head and tail, α·j for the
middle). So, inside the context manager and on this model instance only:

- each decoder layer's ``self_attn`` is swapped for a ``LampeAttention`` that reuses the layer's
  own projections (and q/k norms, biases), read through the model's family entry (``_family``:
  projections, logit scale and soft-cap, sliding windows, per-layer rotary tables); layers that
  see the whole input run the scheme, sliding-window layers their exact window (``_window``);
  each caches every key rotation side by side in the last dim of the cache's key tensor
  ``(B, Hkv, T, V·D)``; with l fixed for a sequence, a cached key never needs a new rotation
  (docs/design.md §1 "Decoding");
- the model's attention implementation is set to ``"lampe"``, registered through transformers'
  ``AttentionInterface`` and ``AttentionMaskInterface`` so the model hands attention a 2D padding
  mask instead of building an ``S × T`` one;
- ``generate`` gets an instance-level wrapper that fixes l = prompt + max_new_tokens for the call.

On exit every swapped module, the attention implementation and ``generate`` are restored.
No transformers class attribute is touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._attention import dense_region_attention, fused_attention
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
from ._kernels import Kernels
from ._plan import PositionPlan
from ._rope import Rope, rotate_many
from ._session import LampeSession, PositionScheme, Step
from ._window import WindowScheme

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "SUPPORTED_TRANSFORMERS",
    "LampeAttention",
    "LampeSession",
    "PositionScheme",
    "apply_position_scheme",
    "refuse_nested",
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
    its weights (``project_qkv``: projections, q/k norms, biases) and ``o_proj``.

    ``forward`` is five steps, each with what it needs passed in: ``project`` (q, k, v),
    ``positions`` (the pass's plan, token positions and rotation tables), ``rotate`` (q and k by
    those tables), ``cache`` (store the new keys, get the ones to attend), ``attend`` (the plan's
    regions over those keys, at their positions).
    """

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
        kv_cache = _one_cache(cache, past_key_values)
        key_valid = _padding(attention_mask)  # (B, T) bool, or None
        B, S, _ = hidden_states.shape
        q, k, v = self.project(hidden_states)  # (B, H, S, D), (B, Hkv, S, D) twice
        forward_key = position_embeddings[0] if position_embeddings is not None else None
        step = self.positions(forward_key, kv_cache, key_valid, q, position_ids, cache_position)
        queries, keys = self.rotate(q, k, step.query_tables, step.key_tables)
        del q, k  # only the rotated copies are used from here on
        keys, values = self.cache(keys, v, kv_cache)
        out = self.attend(queries, keys, values, step.plan, step.positions, key_valid, step.kernels)
        return self.inner.o_proj(out.transpose(1, 2).reshape(B, S, -1)), None

    def project(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, S, hidden)`` -> q ``(B, H, S, D)``, k and v ``(B, Hkv, S, D)`` (the layer's own
        projections, q/k norms and biases, read through its family)."""
        return project_qkv(self.setup.family, self.inner, hidden_states, self.setup.head_dim)

    def positions(
        self,
        forward_key: Any,
        kv_cache: Any,
        key_valid: torch.Tensor | None,
        q: torch.Tensor,
        position_ids: torch.Tensor | None,
        cache_position: torch.Tensor | None,
    ) -> Step:
        """The pass's plan, token positions and rotation tables (``LampeSession.step``, shared by
        every layer of the pass), checked once per pass against what transformers passed.

        ``forward_key`` marks the pass (the model hands every layer the same rotary tuple); q
        ``(B, H, S, D)`` gives the pass's size, dtype and device.
        """
        B, _, S, _ = q.shape
        past = kv_cache.get_seq_length(self.layer_idx) if kv_cache is not None else 0
        order, session = self.setup.order, self.session
        step = session.step(forward_key, kv_cache, key_valid, past, S, B, order, q.dtype, q.device)
        if step.query_positions is not self._checked:
            _check_positions(step.query_positions, key_valid, past, position_ids, cache_position)
            self._checked = step.query_positions
        if order == session.last_layer:
            session.end_forward()  # drop the tables before the LM head allocates its logits
        return step

    @staticmethod
    def rotate(
        q: torch.Tensor,
        k: torch.Tensor,
        query_tables: list[tuple[torch.Tensor, torch.Tensor]],
        key_tables: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q rotated per region ``(R, B, H, S, D)`` and k per key rotation ``(V, B, Hkv, S, D)``,
        by the cos/sin tables of the pass's positions (``Step``)."""
        return rotate_many(q, query_tables), rotate_many(k, key_tables)

    def cache(self, keys: torch.Tensor, v: torch.Tensor, kv_cache: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this pass's keys ``(V, B, Hkv, S, D)`` and values ``(B, Hkv, S, D)`` and return
        the last n keys and values to attend, ``(V, B, Hkv, n, D)`` and ``(B, Hkv, n, D)``.

        Every key rotation sits side by side in the last dim of the cache's key tensor,
        ``(B, Hkv, T, V·D)``, so a cached key never needs another rotation; a sliding layer's
        cache hands back only its last keys (n <= T), enough for its window.
        """
        if kv_cache is None:
            return keys, v
        V, B, _, S, D = keys.shape
        packed = keys.permute(1, 2, 3, 0, 4).reshape(B, -1, S, V * D)
        packed, values = kv_cache.update(packed, v, self.layer_idx)
        if packed.shape[2] != S:
            keys = packed.view(B, -1, packed.shape[2], V, D).permute(3, 0, 1, 2, 4)
        return keys, values

    def attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        plan: PositionPlan,
        positions: torch.Tensor,
        key_valid: torch.Tensor | None,
        kernels: Kernels,
    ) -> torch.Tensor:
        """``(R, B, H, S, D)`` queries (the last S of the T tokens) over the last n keys
        ``(V, B, Hkv, n, D)``, the T tokens at ``positions`` ``(B, T)`` with padding ``key_valid``
        ``(B, T)``: fused kernels for distance pieces and chunks (prefill, left padding, decode
        steps); the blocked dense path for anything else (other padding, soft-capped logits).
        Returns ``(B, H, S, D)``."""
        setup = self.setup
        offset = positions.shape[1] - keys.shape[3]  # tokens the cache no longer holds
        valid = key_valid[:, offset:] if key_valid is not None else None
        if setup.softcap is None and (valid is None or _left_padded(valid)):
            out = fused_attention(queries, keys, values, plan, valid, setup.scale, kernels)
            if out is not None:
                return out
        query_positions = positions[:, positions.shape[1] - queries.shape[3] :]  # (B, S)
        out, _ = dense_region_attention(
            queries,
            keys,
            values,
            plan,
            query_positions,
            positions[:, offset:],
            valid,
            setup.scale,
            softcap=setup.softcap,
        )
        return out


def _one_cache(cache: Any, past_key_values: Any) -> Any:
    """The KV cache, passed as ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise TypeError("LampeAttention got two different caches, as `cache` and as `past_key_values`")
    return cache if cache is not None else past_key_values


def _padding(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The ``(B, T)`` bool padding mask of all T tokens (the ``"lampe"`` mask hook's), or None."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise ValueError(
            "apply_lampe takes a 2D padding mask, got an attention mask of shape "
            f"{tuple(attention_mask.shape)}"
        )
    return attention_mask.to(torch.bool)


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


def refuse_nested(model: nn.Module) -> None:
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
    """Run ``model`` with the attention swap for any ``PositionScheme`` (see the module docstring;
    ``methods._lampe.apply_lampe`` is LaMPE's entry).

    Layers that see the whole input run under ``config``, with the rotary table of
    ``global_rotary`` (a rescaled rotary module of the model's class; default the model's own);
    sliding-window layers keep their exact window with the model's own table (``_window``).
    Yields the scheme's session."""
    refuse_nested(model)
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
