"""The attention engine (docs/design.md §1): LaMPE's position mapping, per-region rotations, fused
attentions over disjoint key sets merged through their LSE, and the transformers hook that runs
any position scheme inside a model.

Layers, bottom up: ``_config`` (LampeConfig, m(L)), ``_positions`` (PE, regions, plans),
``_plan`` (the plan protocol and distance pieces), ``_rope``, ``_merge``, ``_windows`` (one
causal windowed call with LSE on flash-attn or FlexAttention: a piece on CUDA), ``_kernels``
(attention with LSE per backend, and the kernels a session chooses), ``_pieces`` and ``_chunked``
(fused paths), ``_attention`` (dispatch and the dense reference path), ``_family`` (what each
model family's layers look like), ``_window`` (sliding-window layers), ``_hook`` (``apply_lampe``,
``apply_position_scheme``)."""

from __future__ import annotations

from .._lazy import lazy_exports

# Module -> the public names it defines.
_MODULES = {
    "._config": "MODES LampeConfig SigmoidMapping sigmoid_mapping_length",
    "._positions": "HEAD MIDDLE TAIL LampePlan position_encoding region_of",
    "._rope": "Rope",
    "._family": "FAMILIES Family",
    "._merge": "merge_attention",
    "._kernels": "BACKENDS attention_with_lse",
    "._attention": "dense_region_attention fused_attention",
    "._hook": "SUPPORTED_MODEL_TYPES SUPPORTED_TRANSFORMERS apply_lampe apply_position_scheme",
    "._session": "LampeSession PositionScheme",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
