"""What a model's positions depend on, and where it came from, as a profile records them.

A calibrated m(L) is a statement about one model's positions: it holds for another model only
if the facts positions depend on are the same, namely the family (which attention the engine
swaps), the pretraining window W, the RoPE type, base and scaling, and the head size (the
rotary's dimension). ``ModelFacts`` holds them, read through ``model_info`` (so W follows the
registry's and the family adapter's rule), and says how two sets differ. ``portable_source``
names where a model came from without a machine path: an alias, a hub id, or the last part of
a local path.

Example:
    >>> from transformers import LlamaConfig
    >>> ModelFacts.from_config(LlamaConfig(max_position_embeddings=256, head_dim=16)).describe()
    'llama, W 256, RoPE default θ 10000, head size 16'
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = ["ModelFacts", "check_transfer", "portable_source"]

logger = logging.getLogger(__name__)

_FIELDS = ("family", "window", "rope_type", "rope_theta", "rope_scaling", "head_dim")


def _same(a: Any, b: Any) -> bool:
    """Equal, numbers to a relative 1e-9 (a base read back from JSON as 1e4 or 10000.0)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    numbers = (int, float)
    if (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


@dataclass(frozen=True)
class ModelFacts:
    """The facts a model's positions depend on.

    Args:
        family: transformers ``model_type`` ("llama", "mistral", ...); None: not recorded (a
            profile written before the facts were), then not compared.
        window: W, the pretraining window (``model_info``).
        rope_type: transformers rope type ("default", "llama3", "yarn", ...).
        rope_theta: RoPE base.
        rope_scaling: the other RoPE parameters (factor, original window, ...).
        head_dim: head size, the rotary's dimension; None: not recorded, not compared.
    """

    family: str | None
    window: int
    rope_type: str
    rope_theta: float
    rope_scaling: Mapping[str, Any] = field(default_factory=dict, hash=False)
    head_dim: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rope_scaling", MappingProxyType(dict(self.rope_scaling)))
        object.__setattr__(self, "rope_theta", float(self.rope_theta))

    @classmethod
    def from_info(cls, info: Any) -> ModelFacts:
        """From a ``ModelInfo``."""
        return cls(
            info.family, info.window, info.rope_type, info.rope_theta, info.rope_scaling, info.head_dim
        )

    @classmethod
    def from_model(cls, model: Any) -> ModelFacts:
        """From a loaded transformers model (``model_info``)."""
        from ._registry import model_info

        return cls.from_info(model_info(model))

    from_config = from_model  # model_info reads a model or its config alike

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "window": self.window,
            "rope_type": self.rope_type,
            "rope_theta": self.rope_theta,
            "rope_scaling": dict(self.rope_scaling),
            "head_dim": self.head_dim,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelFacts:
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown model facts {unknown}; known: {list(_FIELDS)}")
        return cls(**data)

    def differences(self, other: ModelFacts) -> list[tuple[str, Any, Any]]:
        """``(name, self's value, other's value)`` of each fact that differs; a fact one side
        did not record (None) is not compared."""
        out = []
        for name in _FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is None or theirs is None:
                continue
            if not _same(mine, theirs):
                out.append((name, dict(mine) if name == "rope_scaling" else mine, theirs))
        return out

    def describe(self) -> str:
        """One line, e.g. ``"llama, W 8192, RoPE llama3 θ 500000 {factor: 8.0}, head size 128"``."""
        scaling = ", ".join(f"{k}: {v}" for k, v in sorted(self.rope_scaling.items()))
        head = f", head size {self.head_dim}" if self.head_dim is not None else ""
        rope = f"RoPE {self.rope_type} θ {self.rope_theta:g}" + (f" {{{scaling}}}" if scaling else "")
        return f"{self.family or 'family not recorded'}, W {self.window}, {rope}{head}"


def portable_source(info: Any) -> str | None:
    """Where a model came from, the same on every machine: its registry alias, else its hub id,
    else the last part of its local path (a directory; for a ``.gguf`` file transformers records
    its directory). None for a model built in memory.

    Example: a model loaded from ``/home/me/models/my-llama`` -> ``"my-llama"``;
    ``load_model("smollm2-135m")`` -> ``"smollm2-135m"`` wherever the wheel is installed.
    """
    if info.alias:
        return info.alias
    source = (info.source or "").rstrip("/" + os.sep)
    if not source:
        return None
    from ._registry import HUB_ID_PATTERN

    if not os.path.isabs(source) and HUB_ID_PATTERN.fullmatch(source) and not Path(source).exists():
        return source
    return Path(source).name or None


def check_transfer(
    made: str,
    ours: tuple[str, ModelFacts],
    theirs: tuple[str, ModelFacts],
    *,
    allow_transfer: bool,
    same_source: bool,
    opt_in: str,
) -> None:
    """Refuse to use what was ``made`` ("profile 'x' was fitted", "study 'x' was run") on the
    model ``ours`` = (source, facts) for the model ``theirs`` when a fact differs, unless
    ``allow_transfer``; log an explicit transfer, and a model of another source (not
    ``same_source``) whose facts are the same (a local copy, a fine-tune of the same base).

    Raises:
        ValueError: one line naming both sides, what differs and ``opt_in`` (how to allow it).
    """
    (mine, our_facts), (source, their_facts) = ours, theirs
    differ = our_facts.differences(their_facts)
    if differ and not allow_transfer:
        what = "; ".join(f"{name} {a!r} vs {b!r}" for name, a, b in differ)
        raise ValueError(
            f"{made} on {mine} ({our_facts.describe()}), this model is {source} "
            f"({their_facts.describe()}): {what}; {opt_in}"
        )
    if differ:
        logger.warning(
            "%s on %s (%s); used on %s (%s) as an explicit transfer",
            *(made, mine, our_facts.describe(), source, their_facts.describe()),
        )
    elif not same_source:
        logger.warning(
            "%s on %s; using it on %s, whose position facts are the same (%s)",
            *(made, mine, source, their_facts.describe()),
        )
