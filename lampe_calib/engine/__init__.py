"""The attention engine (docs/design.md §1): a generic position-scheme attention engine. A
scheme (``PositionScheme``: a temperature and ``plan(lengths)``) gives each batch a plan
(``PositionPlan``: per-region query and key positions, the region of each pair, and its layout
as distance pieces or chunks); the engine rotates queries and keys once per region, runs fused
attentions over disjoint key sets merged through their LSE, and swaps the attention of a
transformers model for one that does this. It knows no scheme: LaMPE and the baselines live in
``lampe_calib.methods``.

Layers, bottom up: ``_plan`` (the plan protocol, distance pieces, band regions), ``_rope``,
``_merge``, ``_windows`` (one causal windowed call with LSE on flash-attn or FlexAttention: a
piece on CUDA), ``_kernels`` (attention with LSE per backend, and the kernels a session
chooses), ``_pieces`` and ``_chunked`` (fused paths), ``_attention`` (dispatch and the dense
reference path), ``_window`` (sliding-window layers and the stock plan), ``_session`` (a
context's scheme, kernels and plans), ``_family`` (what each model family's layers look like),
``_interface`` (the transformers registration), ``_hook`` (``apply_position_scheme``)."""

from __future__ import annotations

from .._lazy import lazy_exports

# Module -> the public names it defines.
_MODULES = {
    "._plan": "Piece PositionPlan",
    "._rope": "Rope",
    "._family": "FAMILIES Family",
    "._kernels": "BACKENDS attention_with_lse",
    "._attention": "dense_region_attention fused_attention",
    "._hook": "SUPPORTED_MODEL_TYPES SUPPORTED_TRANSFORMERS apply_position_scheme",
    "._session": "LampeSession PositionScheme",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
