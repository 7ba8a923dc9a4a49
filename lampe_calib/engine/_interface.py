"""The transformers extension points of the attention swap: the ``"lampe"`` attention and mask
implementations registered through ``AttentionInterface`` and ``AttentionMaskInterface``, and the
checks that refuse an interface the swap does not know (keywords, attention signatures)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import transformers
from torch import nn

__all__ = [
    "ATTN_IMPLEMENTATION",
    "SUPPORTED_TRANSFORMERS",
    "check_attention",
    "padding_mask",
    "refuse_unknown",
    "register",
]

# The transformers releases whose attention modules this swap is tested against (both ends in
# CI); pyproject.toml declares the same range.
SUPPORTED_TRANSFORMERS = ">=5.0,<6"
# Parameters a supported attention module's forward may have: the ones LampeAttention.forward
# names. A stock module with any other parameter has an interface this swap does not know.
_KNOWN_ATTENTION_PARAMETERS = frozenset(
    {
        "hidden_states",
        "position_embeddings",
        "attention_mask",
        "cache",
        "past_key_values",
        "position_ids",
        "cache_position",
        "use_cache",
    }
)
ATTN_IMPLEMENTATION = "lampe"


def _unused_attention(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("the 'lampe' attention implementation only runs inside `with apply_lampe(model, ...)`")


def refuse_unknown(where: str, unknown: dict[str, Any]) -> None:
    """A TypeError naming keywords a transformers hook received but does not understand."""
    if unknown:
        raise TypeError(
            f"{where} got keyword(s) it does not know: {', '.join(sorted(unknown))} "
            f"(transformers {transformers.__version__}; lampe-calib supports transformers "
            f"{SUPPORTED_TRANSFORMERS})"
        )


def padding_mask(
    *,
    batch_size: int,
    kv_length: int,
    attention_mask: torch.Tensor | None = None,
    q_length: int | None = None,
    q_offset: int = 0,
    kv_offset: int = 0,
    cache_position: torch.Tensor | None = None,
    mask_function: Any = None,
    local_size: int | None = None,
    allow_is_causal_skip: bool = True,
    allow_is_bidirectional_skip: bool = False,
    dtype: torch.dtype | None = None,
    config: Any = None,
    use_vmap: bool = False,
    device: Any = None,
    **unknown: Any,
) -> torch.Tensor | None:
    """Mask hook: the ``(B, T)`` bool padding mask of the keys, or None when nothing is padded.

    The engine builds causality and its regions itself, so of what transformers describes
    (``q_length``/``q_offset`` from 5.24 on, ``cache_position`` before; the mask function, dtype
    and device of a dense mask) it needs only the padding of all T tokens: a sliding layer's
    cache holds its last keys only (``kv_offset`` of them dropped), but token positions count
    from the first, so its mask keeps them too; the engine applies the window itself
    (``_window``). Any keyword this hook does not know is refused.
    """
    refuse_unknown("the 'lampe' mask hook", unknown)
    if attention_mask is None:
        return None
    attention_mask = attention_mask[:, -(kv_offset + kv_length) :]
    return None if bool(attention_mask.all()) else attention_mask


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, _unused_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, padding_mask)


def check_attention(decoder: nn.Module) -> None:
    """Refuse a decoder whose attention modules take arguments the swap does not know."""
    attn = decoder.layers[0].self_attn
    parameters = inspect.signature(type(attn).forward).parameters
    named = {n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
    problems = sorted(named - _KNOWN_ATTENTION_PARAMETERS)
    if not {"hidden_states", "position_embeddings", "attention_mask"} <= named:
        problems.append("no hidden_states/position_embeddings/attention_mask")
    if not named & {"cache", "past_key_values"}:
        problems.append("no cache or past_key_values")
    if problems:
        raise ValueError(
            f"{type(attn).__name__}.forward in transformers {transformers.__version__} has an interface "
            f"apply_lampe does not know ({'; '.join(problems)}); "
            f"supported: transformers {SUPPORTED_TRANSFORMERS}"
        )
