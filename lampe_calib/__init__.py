"""lampe-calib: length-aware multi-grained position encoding (LaMPE) for RoPE language models.

Public API (DESIGN §4)::

    from lampe_calib import load_model, load_profile, LampeConfig, apply_lampe

The implementation lives in private modules, one paper concept each; this module re-exports
what users and other code rely on.
"""

from ._apply import SUPPORTED_MODEL_TYPES, apply_lampe, apply_position_scheme
from ._calibrate import calibrate_model
from ._config import LampeConfig, SigmoidMapping, sigmoid_mapping_length
from ._dca import DualChunkConfig, dual_chunk_attention
from ._fit import fit_sigmoid
from ._methods import METHODS, method_context
from ._models import MODELS, ModelInfo, ModelSpec, load_model, model_info
from ._passkey import PasskeyResult, evaluate_passkey, passkey_prompts
from ._perplexity import PerplexityResult, evaluate_perplexity
from ._positions import LampePlan, position_encoding, region_of
from ._profiles import SCHEMA_VERSION, Profile, load_profile, save_profile
from ._rerope import ReRopeConfig, rerope_attention
from ._selfextend import SelfExtendConfig, self_extend
from ._string import StringConfig, string_attention

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "MODELS",
    "SCHEMA_VERSION",
    "SUPPORTED_MODEL_TYPES",
    "DualChunkConfig",
    "LampeConfig",
    "LampePlan",
    "ModelInfo",
    "ModelSpec",
    "PasskeyResult",
    "PerplexityResult",
    "Profile",
    "ReRopeConfig",
    "SelfExtendConfig",
    "SigmoidMapping",
    "StringConfig",
    "__version__",
    "apply_lampe",
    "apply_position_scheme",
    "calibrate_model",
    "dual_chunk_attention",
    "evaluate_passkey",
    "evaluate_perplexity",
    "fit_sigmoid",
    "load_model",
    "load_profile",
    "method_context",
    "model_info",
    "passkey_prompts",
    "position_encoding",
    "region_of",
    "rerope_attention",
    "save_profile",
    "self_extend",
    "sigmoid_mapping_length",
    "string_attention",
]
