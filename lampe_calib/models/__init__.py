"""Models: the registry of aliases (``MODELS``), the facts the engine needs from a config
(``model_info``), and loading from the hub, a directory or a GGUF file (``load_model``)."""

from __future__ import annotations

from .._lazy import lazy_exports

# Module -> the public names it defines.
_MODULES = {
    "._registry": "MODELS ModelInfo ModelSpec model_info",
    "._loading": "load_model",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
