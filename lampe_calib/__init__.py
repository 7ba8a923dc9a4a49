"""lampe-calib: length-aware multi-grained position encoding (LaMPE) for RoPE language models.

Public API (DESIGN §4)::

    from lampe_calib import load_model, load_profile, LampeConfig, apply_lampe

The implementation lives in private modules, one paper concept each; this module re-exports
what users and other code rely on, lazily (PEP 562): ``import lampe_calib`` loads none of torch,
transformers, optuna, scipy, matplotlib or datasets until a name that needs them is used, so the
command-line entry points start fast and can configure those libraries before they load.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the private module that defines it.
_EXPORTS = {
    "SUPPORTED_MODEL_TYPES": "_apply",
    "SUPPORTED_TRANSFORMERS": "_apply",
    "apply_lampe": "_apply",
    "apply_position_scheme": "_apply",
    "calibrate_model": "_calibrate",
    "LampeConfig": "_config",
    "SigmoidMapping": "_config",
    "sigmoid_mapping_length": "_config",
    "DualChunkConfig": "_dca",
    "dual_chunk_attention": "_dca",
    "fit_sigmoid": "_fit",
    "METHODS": "_methods",
    "method_context": "_methods",
    "MODELS": "_models",
    "ModelInfo": "_models",
    "ModelSpec": "_models",
    "load_model": "_models",
    "model_info": "_models",
    "PasskeyResult": "_passkey",
    "evaluate_passkey": "_passkey",
    "passkey_prompts": "_passkey",
    "PerplexityResult": "_perplexity",
    "evaluate_perplexity": "_perplexity",
    "LampePlan": "_positions",
    "position_encoding": "_positions",
    "region_of": "_positions",
    "SCHEMA_VERSION": "_profiles",
    "Profile": "_profiles",
    "load_profile": "_profiles",
    "save_profile": "_profiles",
    "ReRopeConfig": "_rerope",
    "RulerResult": "_ruler",
    "RulerSources": "_ruler",
    "evaluate_ruler": "_ruler",
    "ruler_samples": "_ruler",
    "score_answer": "_ruler",
    "rerope_attention": "_rerope",
    "SelfExtendConfig": "_selfextend",
    "self_extend": "_selfextend",
    "StringConfig": "_string",
    "string_attention": "_string",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__

