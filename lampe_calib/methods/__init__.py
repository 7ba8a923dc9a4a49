"""Context-extension methods, each a position scheme on the engine or a rotary rescaling, and
the registry of their entries (``METHOD_ENTRIES``: one ``Method`` each) from which ``METHODS``,
``TUNABLE``, ``BASES`` and the command lines' choices (``method_names`` ...) are derived."""

from __future__ import annotations

from .._lazy import lazy_exports

# Module -> the public names it defines.
_MODULES = {
    "._registry": (
        "BASES METHODS METHOD_ENTRIES TUNABLE calibrated_method_names knob_method_names method_context "
        "method_names profile_base profile_method_names rescaled_base tuned_context"
    ),
    "._names": "LAMPE STOCK",
    "._method": "RESCALED_BASE_FACTOR Method MethodFactory ProfileUse on_base",
    "._lampe": "FIXED_MAPPING_FRACTION MODES LampeConfig SigmoidMapping sigmoid_mapping_length",
    "._selfextend": "SelfExtendConfig self_extend",
    "._dca": "DualChunkConfig dual_chunk_attention",
    "._string": "StringConfig string_attention",
    "._rerope": "ReRopeConfig rerope_attention",
    "._knobs": "Knob Tunable",
    "._rope_scaling": (
        "Rescaling ntk_rescaling ntk_rope_parameters pi_rescaling pi_rope_parameters swap_rope_parameters "
        "yarn_rescaling yarn_rope_parameters"
    ),
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
