"""lampe-calib: length-aware multi-grained position encoding (LaMPE) for RoPE language models.

Public API (DESIGN §4)::

    from lampe_calib import load_model, load_profile, LampeConfig, apply_lampe

The code lives in one subpackage per concept, layered bottom up: ``engine`` (positions, rotations,
fused attention, the transformers hook) <- ``methods`` <- ``models`` <- ``evaluation`` <-
``calibration`` (with its ``sweep``) <- ``cli``. This module re-exports what users and other
code rely on, lazily (PEP 562): ``import lampe_calib`` loads none of torch,
transformers, optuna, scipy, matplotlib or datasets until a name that needs them is used, so the
command-line entry points start fast and can configure those libraries before they load.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> the subpackage that exports it.
_EXPORTS = {
    "SUPPORTED_MODEL_TYPES": ".engine",
    "SUPPORTED_TRANSFORMERS": ".engine",
    "apply_lampe": ".engine",
    "apply_position_scheme": ".engine",
    "calibrate_model": ".calibration",
    "LampeConfig": ".engine",
    "SigmoidMapping": ".engine",
    "sigmoid_mapping_length": ".engine",
    "DualChunkConfig": ".methods",
    "dual_chunk_attention": ".methods",
    "fit_sigmoid": ".calibration",
    "METHODS": ".methods",
    "method_context": ".methods",
    "MODELS": ".models",
    "ModelInfo": ".models",
    "ModelSpec": ".models",
    "load_model": ".models",
    "model_info": ".models",
    "PasskeyResult": ".evaluation",
    "evaluate_passkey": ".evaluation",
    "passkey_prompts": ".evaluation",
    "PerplexityResult": ".evaluation",
    "evaluate_perplexity": ".evaluation",
    "LampePlan": ".engine",
    "position_encoding": ".engine",
    "region_of": ".engine",
    "SCHEMA_VERSION": ".calibration",
    "Profile": ".calibration",
    "load_profile": ".calibration",
    "save_profile": ".calibration",
    "ReRopeConfig": ".methods",
    "RulerResult": ".evaluation",
    "RulerSources": ".evaluation",
    "evaluate_ruler": ".evaluation",
    "ruler_samples": ".evaluation",
    "score_answer": ".evaluation",
    "rerope_attention": ".methods",
    "SelfExtendConfig": ".methods",
    "self_extend": ".methods",
    "StringConfig": ".methods",
    "string_attention": ".methods",
}

__all__ = sorted([*_EXPORTS, "__version__"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
