"""LaMPE as a method: its configuration, the sigmoid mapping m(L) and its plan.

(Being moved here from ``engine/_config.py`` and ``engine/_positions.py``; callers outside the
engine import these names from ``lampe_calib.methods``.)"""

from __future__ import annotations

from ..engine._config import MODES, LampeConfig, SigmoidMapping, sigmoid_mapping_length
from ..engine._hook import apply_lampe

__all__ = [
    "FIXED_MAPPING_FRACTION",
    "MODES",
    "LampeConfig",
    "SigmoidMapping",
    "apply_lampe",
    "sigmoid_mapping_length",
]

# The paper fixes the sigmoid's ceiling at c = 3/4·W (§3.2); the fixed-m ablation uses that m
# for every input length.
FIXED_MAPPING_FRACTION = 0.75
