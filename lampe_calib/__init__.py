"""lampe-calib: length-aware multi-grained position encoding (LaMPE) for RoPE language models.

Public API (DESIGN §4)::

    from lampe_calib import load_model, load_profile, LampeConfig, apply_lampe
"""

from ._apply import SUPPORTED_MODEL_TYPES, apply_lampe
from ._config import LampeConfig, SigmoidMapping, sigmoid_mapping_length
from ._models import MODELS, ModelInfo, ModelSpec, load_model, model_info
from ._positions import LampePlan, position_encoding, region_of

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "SUPPORTED_MODEL_TYPES",
    "LampeConfig",
    "LampePlan",
    "ModelInfo",
    "ModelSpec",
    "SigmoidMapping",
    "__version__",
    "apply_lampe",
    "load_model",
    "model_info",
    "position_encoding",
    "region_of",
    "sigmoid_mapping_length",
]
