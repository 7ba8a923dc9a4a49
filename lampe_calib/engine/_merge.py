"""Exact merge of attentions over disjoint key sets through their log-sum-exp.

If a query's keys are split into disjoint sets r with partial results ``out_r`` (softmax over
set r only) and ``lse_r = logsumexp`` of set r's logits, then the softmax over all keys is

    lse = logsumexp_r(lse_r),    out = Σ_r exp(lse_r - lse) · out_r

(the identity behind flash-attention's split-KV decoding). A set with no key for a query has
``lse_r = -inf`` and weight 0; a query with no key at all gets output 0 and lse -inf.
flash-attn reports a query with no key as out 0 and lse +inf: an lse of +inf is read as an
empty set too (no set of real logits has an infinite sum).
"""

from __future__ import annotations

import torch

__all__ = ["merge_attention", "merge_into"]


def _empty_as_neginf(lse: torch.Tensor) -> torch.Tensor:
    """flash-attn's +inf for a query with no key -> -inf, the merge's empty set."""
    return lse.masked_fill(lse == float("inf"), float("-inf"))


def merge_attention(
    outputs: list[torch.Tensor], lses: list[torch.Tensor], inplace: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge partial attentions over disjoint key sets.

    Args:
        outputs: each ``(B, H, S, D)``, the softmax-weighted values of one key set (0 where empty).
        lses: each ``(B, H, S)`` float32, that set's log-sum-exp of logits (-inf where empty).
        inplace: accumulate into ``outputs[0]`` in its own dtype (saves a float32 buffer of
            the output's size; the weights are still computed in float32).

    Returns:
        ``(out, lse)``: ``(B, H, S, D)`` in the outputs' dtype and ``(B, H, S)`` float32.

    Example: two sets with lse 0 and 0 and outputs 1 and 3 -> lse ln 2, out 2.
    """
    assert len(outputs) == len(lses) and outputs
    stacked = _empty_as_neginf(torch.stack([x.to(torch.float32) for x in lses]))  # (R, B, H, S)
    lse = torch.logsumexp(stacked, dim=0)  # (B, H, S)
    finite = torch.isfinite(lse)
    safe = torch.where(finite, lse, torch.zeros_like(lse))
    weights = torch.exp(stacked - safe)  # (R, B, H, S); exp(-inf) = 0 for empty sets
    if inplace:
        out = outputs[0].mul_(weights[0][..., None].to(outputs[0].dtype))
        for w, o in zip(weights[1:], outputs[1:], strict=True):
            out.addcmul_(w[..., None].to(out.dtype), o)
        return out, lse
    out = outputs[0].to(torch.float32) * weights[0][..., None]
    for w, o in zip(weights[1:], outputs[1:], strict=True):
        out.addcmul_(w[..., None], o.to(torch.float32))
    return out.to(outputs[0].dtype), lse


def merge_into(out: torch.Tensor, lse: torch.Tensor, part: torch.Tensor, part_lse: torch.Tensor) -> None:
    """Merge one more disjoint key set into a running result, in place.

    Args:
        out: ``(..., S, D)`` running output (any dtype, any strides: a view of the full output).
        lse: ``(..., S)`` float32 running log-sum-exp (-inf where no key was seen yet).
        part: ``(..., S, D)`` the new set's softmax-weighted values.
        part_lse: ``(..., S)`` its log-sum-exp (-inf, or flash-attn's +inf, where the set is empty
            for a query).

    The weights and the sum are formed in float32 even for a bf16 output, so merging several
    pieces rounds once per piece, like one kernel's output.

    Example: out 1 with lse 0, part 3 with lse 0 -> out 2, lse ln 2.
    """
    empty = part_lse == float("inf")  # flash-attn's row without key: weight 0, lse unchanged
    new = torch.where(empty, lse, torch.logaddexp(lse, part_lse))
    safe = torch.where(torch.isfinite(new), new, torch.zeros_like(new))
    w_old = torch.exp(lse - safe)[..., None]  # exp(-inf) = 0 where nothing was seen
    w_new = torch.exp(part_lse.float() - safe).masked_fill_(empty, 0.0)[..., None]
    out.copy_(out.float().mul_(w_old).addcmul_(part.float(), w_new))
    lse.copy_(new)
