"""The attention engine (DESIGN §1): LaMPE's position mapping, per-region rotations, fused
attentions over disjoint key sets merged through their LSE, and the transformers hook that runs
any position scheme inside a model.

Layers, bottom up: ``_config`` (LampeConfig, m(L)), ``_positions`` (PE, regions, plans),
``_plan`` (the plan protocol and distance pieces), ``_rope``, ``_merge``, ``_kernels`` (attention
with LSE per backend), ``_pieces`` and ``_chunked`` (fused paths), ``_attention`` (dispatch and
the dense reference path), ``_hook`` (``apply_lampe``, ``apply_position_scheme``)."""

from __future__ import annotations

from .._lazy import lazy_exports

# Public name -> the private module that defines it.
_EXPORTS = {
    "MODES": "._config",
    "LampeConfig": "._config",
    "SigmoidMapping": "._config",
    "sigmoid_mapping_length": "._config",
    "HEAD": "._positions",
    "MIDDLE": "._positions",
    "TAIL": "._positions",
    "LampePlan": "._positions",
    "position_encoding": "._positions",
    "region_of": "._positions",
    "Rope": "._rope",
    "merge_attention": "._merge",
    "BACKENDS": "._kernels",
    "attention_with_lse": "._kernels",
    "dense_region_attention": "._attention",
    "fused_attention": "._attention",
    "SUPPORTED_MODEL_TYPES": "._hook",
    "SUPPORTED_TRANSFORMERS": "._hook",
    "LampeSession": "._session",
    "PositionScheme": "._session",
    "apply_lampe": "._hook",
    "apply_position_scheme": "._hook",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
