"""LaMPE as a method: its configuration, the sigmoid mapping m(L), the one conversion of a
profile into a config, and ``apply_lampe``.

The mapping length ``m`` is either one number for every input (``mapping_length``) or the
length-aware sigmoid of the paper, ``m(L) = c / (1 + exp(-(a·L + b)))`` (``sigmoid``). The
positions it gives each batch are the plans of ``_lampe_plan``; the engine runs them like any
other position scheme (``engine._hook.apply_position_scheme``). This module loads neither torch
nor transformers until a plan is built or ``apply_lampe`` is called, so profiles (which hold a
``LampeConfig``) load light.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._checks import check_attention_factor, check_finite, check_integer

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..engine._session import LampeSession
    from ._lampe_plan import LampePlan

__all__ = [
    "FIXED_MAPPING_FRACTION",
    "MODES",
    "LampeConfig",
    "SigmoidMapping",
    "apply_lampe",
    "as_lampe_config",
    "sigmoid_mapping_length",
]

# exact: the paper's real-valued positions; floor: the official release's integer grouping.
MODES = ("exact", "floor")
# The paper fixes the sigmoid's ceiling at c = 3/4·W (§3.2); the fixed-m ablation uses that m
# for every input length.
FIXED_MAPPING_FRACTION = 0.75


def sigmoid_mapping_length(length: float, a: float, b: float, c: float) -> float:
    """The length-aware mapping length ``m(L) = c / (1 + exp(-(a·L + b)))`` (paper §3.2).

    Example: ``sigmoid_mapping_length(8192, 1.0493e-4, -2.4666, 6204.4)`` -> ``1036.1…``
    (the official llama3-8b fit at L = 8192).
    """
    z = a * length + b
    # exp(-z) overflows for very negative z; the limit there is 0.
    if z < -700:
        return 0.0
    return c / (1.0 + math.exp(-z))


@dataclass(frozen=True)
class SigmoidMapping:
    """Parameters of ``m(L) = c / (1 + exp(-(a·L + b)))``; ``a > 0`` makes m grow with L."""

    a: float
    b: float
    c: float

    def __post_init__(self) -> None:
        for name in ("a", "b", "c"):
            check_finite(f"sigmoid.{name}", getattr(self, name))
        if self.a <= 0:
            raise ValueError(f"sigmoid.a must be > 0 (m grows with L), got {self.a!r}")
        if self.c <= 0:
            raise ValueError(f"sigmoid.c must be > 0, got {self.c!r}")

    def __call__(self, length: float) -> float:
        return sigmoid_mapping_length(length, self.a, self.b, self.c)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SigmoidMapping:
        return cls(a=data["a"], b=data["b"], c=data["c"])


@dataclass(frozen=True)
class LampeConfig:
    """How LaMPE maps relative positions (docs/design.md §1).

    Args:
        head: s1, size of the exact local band (relative positions ``d <= head`` are kept).
        tail: s2, size of the restored tail (``d >= l - tail`` keeps its spacing, shifted).
        mapping_length: a fixed m for every input length; exclusive with ``sigmoid``.
        sigmoid: the length-aware ``m(L)``; exclusive with ``mapping_length``.
        mode: ``"exact"`` (the paper's real-valued positions) or ``"floor"`` (the official
            release's integer grouping, for parity with published numbers).
        attention_factor: multiplies RoPE's cos and sin of every rotation, so attention
            logits scale by its square (the official code uses 0.1·ln 2 + 1; 1.0 is neutral).

    Example: ``LampeConfig(head=32, tail=16, mapping_length=192).mapping_length_for(1024)`` -> 192.0
    """

    # 32 and 16 are small against any window we target (W >= 256) and keep the closest tokens
    # and the first tokens (attention sinks) at their trained spacing.
    head: int = 32
    tail: int = 16
    mapping_length: float | None = None
    sigmoid: SigmoidMapping | None = None
    mode: Literal["exact", "floor"] = "exact"
    attention_factor: float = 1.0

    def __post_init__(self) -> None:
        for name in ("head", "tail"):
            check_integer(name, getattr(self, name), 0)
        if (self.mapping_length is None) == (self.sigmoid is None):
            raise ValueError(
                "exactly one of mapping_length and sigmoid must be set, got "
                f"mapping_length={self.mapping_length!r}, sigmoid={self.sigmoid!r}"
            )
        if self.mapping_length is not None:
            m = check_finite("mapping_length", self.mapping_length)
            if m <= self.head + self.tail:
                raise ValueError(
                    f"mapping_length must exceed head + tail = {self.head + self.tail}, got {m!r}"
                )
        if self.sigmoid is not None and not isinstance(self.sigmoid, SigmoidMapping):
            raise ValueError(f"sigmoid must be a SigmoidMapping, got {self.sigmoid!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        check_attention_factor(self.attention_factor)

    def mapping_length_for(self, length: int) -> float:
        """The mapping length m used for an input of ``length`` tokens.

        A sigmoid value at or below ``head + tail`` (very short inputs under a small fit)
        is raised to ``head + tail + 1``, the smallest m with a non-empty middle region.
        """
        if self.mapping_length is not None:
            return float(self.mapping_length)
        assert self.sigmoid is not None
        return max(self.sigmoid(length), float(self.head + self.tail + 1))

    def plan(self, lengths: torch.Tensor) -> LampePlan:
        """The plan of a batch whose rows have ``lengths`` tokens (``(B,)`` int64): a
        ``LampePlan`` (``LampeFloorPlan`` in floor mode) with m from ``mapping_length_for``."""
        # Imported here: torch loads only when a plan is built, so profiles load without it.
        import torch

        from ._lampe_plan import PLANS

        lengths = lengths.to(torch.float64).cpu()
        mapping = torch.tensor([self.mapping_length_for(int(n)) for n in lengths], dtype=torch.float64)
        return PLANS[self.mode](length=lengths, mapping=mapping, head=self.head, tail=self.tail)

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "tail": self.tail,
            "mapping_length": self.mapping_length,
            "sigmoid": None if self.sigmoid is None else self.sigmoid.to_dict(),
            "mode": self.mode,
            "attention_factor": self.attention_factor,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LampeConfig:
        sigmoid = data.get("sigmoid")
        return cls(
            head=data.get("head", 32),
            tail=data.get("tail", 16),
            mapping_length=data.get("mapping_length"),
            sigmoid=None if sigmoid is None else SigmoidMapping.from_dict(sigmoid),
            mode=data.get("mode", "exact"),
            attention_factor=data.get("attention_factor", 1.0),
        )


def as_lampe_config(config_or_profile: Any, user: str = "apply_lampe") -> LampeConfig:
    """The ``LampeConfig`` of a config (itself) or of a profile (its ``to_lampe_config()``);
    ``ValueError`` naming ``user`` for anything else.

    Example: ``as_lampe_config(object(), "method 'lampe'")`` -> ``ValueError: method 'lampe'
    takes a LampeConfig or a profile, got object``.
    """
    if isinstance(config_or_profile, LampeConfig):
        return config_or_profile
    to_config = getattr(config_or_profile, "to_lampe_config", None)
    if to_config is None:
        raise ValueError(f"{user} takes a LampeConfig or a profile, got {type(config_or_profile).__name__}")
    return to_config()


def apply_lampe(
    model: nn.Module, config_or_profile: Any, *, allow_transfer: bool = False
) -> contextlib.AbstractContextManager[LampeSession]:
    """Run ``model`` under LaMPE inside the ``with`` block; restore it exactly on exit.

    Args:
        model: a transformers causal LM of a supported family (``SUPPORTED_MODEL_TYPES``: Llama,
            Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3, Phi-3).
        config_or_profile: a ``LampeConfig`` (fixed m or a sigmoid m(L)) or a loaded profile
            (anything with ``to_lampe_config()``).
        allow_transfer: apply a profile to a model whose position facts (family, window, RoPE
            type/base/scaling, head size) differ from the one it was fitted on; without it such a
            profile is refused (``Profile.check_model``). A ``LampeConfig`` is never checked.

    Raises:
        ValueError: the profile was fitted on a model with other facts, the model is already
            inside ``apply_lampe`` (or another position scheme), or it is not supported.

    Yields:
        The session (its ``config`` and ``rope``), mostly for inspection.

    The input length l is each row's number of real tokens for a plain forward, and prompt +
    ``max_new_tokens`` in ``generate()``; rows with l <= m keep their positions.

    Example::

        with apply_lampe(model, LampeConfig(head=32, tail=16, mapping_length=192)):
            logits = model(input_ids).logits
    """
    from ..engine._hook import apply_position_scheme, refuse_nested

    refuse_nested(model)
    check_model = getattr(config_or_profile, "check_model", None)
    if check_model is not None:  # a profile: it must belong to this model (or be a stated transfer)
        check_model(model, allow_transfer=allow_transfer)
    return apply_position_scheme(model, as_lampe_config(config_or_profile))
