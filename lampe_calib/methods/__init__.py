"""Context-extension methods, each a position scheme on the engine or a rotary rescaling, and
the registry that names them for the CLIs (``METHODS``, ``method_context``)."""

from __future__ import annotations

from .._lazy import lazy_exports

# Module -> the public names it defines.
_MODULES = {
    "._registry": (
        "BASES METHODS RESCALED_BASE_FACTOR STOCK MethodFactory method_context profile_base rescaled_base"
    ),
    "._lampe": "FIXED_MAPPING_FRACTION MODES LampeConfig SigmoidMapping sigmoid_mapping_length",
    "._selfextend": "SelfExtendConfig self_extend",
    "._dca": "DualChunkConfig dual_chunk_attention",
    "._string": "StringConfig string_attention",
    "._rerope": "ReRopeConfig rerope_attention",
    "._knobs": "Knob",
    "._tuning": "TUNABLE Tunable tuned_context",
    "._rope_scaling": "ntk_rope_parameters pi_rope_parameters swap_rope_parameters yarn_rope_parameters",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
