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

__all__ = ["merge_into"]


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
