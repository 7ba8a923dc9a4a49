"""Context-extension methods, each a position scheme on the engine or a rotary rescaling, and
the registry that names them for the CLIs (``METHODS``, ``method_context``)."""

from __future__ import annotations

from .._lazy import lazy_exports

# Public name -> the private module that defines it.
_EXPORTS = {
    "BASES": "._registry",
    "FIXED_MAPPING_FRACTION": "._registry",
    "METHODS": "._registry",
    "RESCALED_BASE_FACTOR": "._registry",
    "MethodFactory": "._registry",
    "method_context": "._registry",
    "profile_base": "._registry",
    "rescaled_base": "._registry",
    "SelfExtendConfig": "._selfextend",
    "self_extend": "._selfextend",
    "DualChunkConfig": "._dca",
    "dual_chunk_attention": "._dca",
    "StringConfig": "._string",
    "string_attention": "._string",
    "ReRopeConfig": "._rerope",
    "rerope_attention": "._rerope",
    "ntk_rope_parameters": "._rope_scaling",
    "pi_rope_parameters": "._rope_scaling",
    "swap_rope_parameters": "._rope_scaling",
    "yarn_rope_parameters": "._rope_scaling",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
