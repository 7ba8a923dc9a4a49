"""Models: the registry of aliases (``MODELS``), the facts the engine needs from a config
(``model_info``), and loading from the hub, a directory or a GGUF file (``load_model``)."""

from __future__ import annotations

from .._lazy import lazy_exports

# Public name -> the private module that defines it.
_EXPORTS = {
    "MODELS": "._registry",
    "ModelInfo": "._registry",
    "ModelSpec": "._registry",
    "load_model": "._loading",
    "model_info": "._registry",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
