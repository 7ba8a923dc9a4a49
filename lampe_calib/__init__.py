"""lampe-calib: length-aware multi-grained position encoding (LaMPE) for RoPE language models.

Public API (docs/design.md §4)::

    from lampe_calib import load_model, load_profile, LampeConfig, apply_lampe

The code lives in one subpackage per concept, layered bottom up: ``engine`` (a generic
position-scheme engine: plans, rotations, fused attention, the transformers hook) <-
``methods`` (LaMPE and the baselines, each a position scheme or a rotary rescaling) <-
``models`` <- ``evaluation`` <- ``calibration`` (with its ``sweep``) <- ``cli``. This module
re-exports what users and other code rely on, lazily (PEP 562): ``import lampe_calib`` loads
none of torch, transformers, optuna, scipy, matplotlib or datasets until a name that needs them
is used, so the command-line entry points start fast and can configure those libraries before
they load.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

# Subpackage -> the public names it exports.
_MODULES = {
    ".engine": "SUPPORTED_MODEL_TYPES SUPPORTED_TRANSFORMERS apply_position_scheme",
    ".methods._lampe": "apply_lampe LampeConfig SigmoidMapping sigmoid_mapping_length",
    ".methods._lampe_plan": "LampeFloorPlan LampePlan position_encoding region_of",
    ".calibration": "calibrate_model fit_sigmoid SCHEMA_VERSION Profile load_profile save_profile",
    ".methods": (
        "DualChunkConfig dual_chunk_attention METHODS method_context ReRopeConfig rerope_attention "
        "SelfExtendConfig self_extend StringConfig string_attention"
    ),
    ".models": "MODELS ModelInfo ModelSpec load_model model_info",
    "._quiet": "quiet_libraries",
    ".evaluation": (
        "PasskeyResult evaluate_passkey passkey_prompts PerplexityResult evaluate_perplexity "
        "RulerResult RulerSources evaluate_ruler ruler_samples score_answer"
    ),
}

_names, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
__all__ = [*_names, "__version__"]
