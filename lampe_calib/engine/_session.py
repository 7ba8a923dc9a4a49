"""One context under a position scheme: the scheme, the RoPE table, the attention kernels, and
the plan of each live sequence, keyed by its cache so that l stays fixed while it decodes
(docs/design.md §1 "Decoding"); and the per-forward step that all layers of one pass share (positions,
rotation tables, kernels)."""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ._kernels import Kernels, choose_kernels
from ._plan import PositionPlan
from ._rope import Rope
from ._window import stock_if_identity

__all__ = ["LampeSession", "PositionScheme", "Step"]

logger = logging.getLogger(__name__)


class PositionScheme(Protocol):
    """What the attention swap needs from a position scheme (the methods layer's LaMPE and
    baselines, ``_window.WindowScheme``): a temperature and a per-batch plan.

    ``plan(lengths)`` takes each row's input length l, ``(B,)`` int64, and returns the batch's
    ``PositionPlan`` (``_plan``).
    """

    attention_factor: float

    def plan(self, lengths: torch.Tensor) -> PositionPlan: ...


@dataclass(frozen=True)
class Step:
    """What every layer of one forward pass shares."""

    plan: PositionPlan
    positions: torch.Tensor  # (B, T) positions of all keys
    query_positions: torch.Tensor  # (B, S) positions of this pass's tokens
    query_tables: list[tuple[torch.Tensor, torch.Tensor]]  # per region: cos, sin (B, S, D/2)
    key_tables: list[tuple[torch.Tensor, torch.Tensor]]  # per key version: cos, sin (B, S, D/2)
    kernels: Kernels  # the session's attention kernels


class LampeSession:
    """State of one context: the scheme, the RoPE table, the attention kernels, and each live
    sequence's plan, keyed by its cache object (so l stays fixed while the sequence decodes).

    ``kernels`` (``_kernels.Kernels``) is chosen once, at the first forward pass, for the
    device and dtype of its activations (``choose_kernels``; logged at debug level), and
    passed to every layer; it is chosen again only if a later pass runs on another device
    type or dtype. Setting it before the first pass imposes a choice.
    """

    def __init__(self, config: PositionScheme, rope: Rope, last_layer: int) -> None:
        self.config = config
        self.rope = rope
        self.last_layer = last_layer
        self.planned_length: int | None = None  # set by the generate() wrapper for one call
        self._plans: weakref.WeakKeyDictionary[Any, PositionPlan] = weakref.WeakKeyDictionary()
        self.kernels: Kernels | None = None
        # The last forward pass's step, reused by all its layers (see `step`).
        self._last_step: tuple[Any, Step] | None = None

    def end_forward(self) -> None:
        """Forget the current forward pass's tables (called by the last layer)."""
        self._last_step = None

    def step(
        self,
        forward_key: Any,
        cache: Any,
        key_valid: torch.Tensor | None,
        past: int,
        new: int,
        batch: int,
        layer: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> Step:
        """Plan, positions and rotation tables of the current forward pass.

        Every layer of one forward receives the same ``position_embeddings`` tuple from the
        model, so its identity (``forward_key``) marks the pass: layers after the first reuse
        the tables instead of recomputing cos and sin.
        """
        if self._last_step is not None and self._last_step[0] is forward_key and forward_key is not None:
            return self._last_step[1]
        plan = self.plan_for(cache, key_valid, past, new, batch, layer)
        kernels = self.kernels_for(device, dtype)
        total = past + new
        # Positions follow the padding exactly like generate() builds position_ids.
        if key_valid is None:
            positions = torch.arange(total, device=device).expand(batch, total)
        else:
            positions = (key_valid.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        q_positions = positions[:, past:]  # (B, S)
        step = Step(
            plan=plan,
            positions=positions,
            query_positions=q_positions,
            query_tables=[self.rope.cos_sin(p, dtype) for p in plan.query_positions(q_positions)],
            key_tables=[self.rope.cos_sin(p, dtype) for p in plan.key_positions(q_positions)],
            kernels=kernels,
        )
        self._last_step = (forward_key, step)
        return step

    def kernels_for(self, device: torch.device, dtype: torch.dtype) -> Kernels:
        """The session's kernels, chosen at the first call (again if device type or dtype change)."""
        kernels = self.kernels
        if kernels is None or (kernels.device, kernels.dtype) != (device.type, dtype):
            kernels = self.kernels = choose_kernels(device, dtype)
            logger.debug("attention kernels: %s (%s, %s)", kernels.name, device.type, dtype)
        return kernels

    def plan_for(
        self, cache: Any, key_valid: torch.Tensor | None, past: int, new: int, batch: int, layer: int
    ) -> PositionPlan:
        """The plan of the sequence that ``cache`` holds; a new one at the start of a sequence
        (the stock plan when the scheme remaps no pair of it)."""
        if cache is not None and not (past == 0 and layer == 0):
            plan = self._plans.get(cache)
            if plan is None:
                raise ValueError(
                    "past_key_values was not filled under apply_lampe: start the sequence inside the context"
                )
            if past + new > int(plan.length.max()) and layer == 0:
                logger.warning(
                    "sequence grew to %d tokens, past the planned length %d; use generate() under "
                    "apply_lampe so l covers the new tokens",
                    past + new,
                    int(plan.length.max()),
                )
            return plan
        total = past + new
        real = key_valid.sum(-1) if key_valid is not None else torch.full((batch,), total)
        extra = max(0, (self.planned_length or 0) - total)
        plan = stock_if_identity(self.config.plan(real.cpu() + extra))
        if cache is not None:
            self._plans[cache] = plan
        return plan
