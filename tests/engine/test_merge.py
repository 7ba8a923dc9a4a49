"""The LSE merge equals one softmax over all keys; no key is counted twice."""

from __future__ import annotations

import pytest
import torch

from lampe_calib.engine._merge import merge_into


def merge_attention(outputs, lses):
    """The engine's merge of partial attentions: each set folded into a running result that
    starts empty (out 0, lse -inf), as the fused paths do."""
    out = torch.zeros_like(outputs[0], dtype=torch.float32)
    lse = torch.full(lses[0].shape, float("-inf"))
    for part, part_lse in zip(outputs, lses, strict=True):
        merge_into(out, lse, part, part_lse)
    return out, lse


def _partial(q, k, v, keep):
    scores = (q @ k.transpose(-1, -2)).masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(scores, -1)
    probs = torch.exp(scores - torch.where(torch.isfinite(lse), lse, 0)[..., None])
    return probs @ v, lse


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_merge_of_disjoint_sets_equals_one_softmax(parts):
    g = torch.Generator().manual_seed(parts)
    q, k, v = (
        torch.randn(2, 3, 9, 4, generator=g),
        torch.randn(2, 3, 20, 4, generator=g),
        torch.randn(2, 3, 20, 4, generator=g),
    )
    owner = torch.randint(0, parts, (9, 20), generator=g)  # each (query, key) pair in one set
    outs, lses = zip(*[_partial(q, k, v, owner == r) for r in range(parts)], strict=False)
    out, lse = merge_attention(list(outs), list(lses))
    full = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    assert (out - full).abs().max().item() < 1e-5
    assert (lse - torch.logsumexp(q @ k.transpose(-1, -2), -1)).abs().max().item() < 1e-5


def test_counting_a_key_twice_changes_the_result():
    # The merge is exact only for disjoint sets: overlapping sets (the official code's boundary
    # keys) give a different answer, which is why the engine keeps the regions disjoint.
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, 1, 4, 4, generator=g),
        torch.randn(1, 1, 6, 4, generator=g),
        torch.randn(1, 1, 6, 4, generator=g),
    )
    a = torch.zeros(4, 6, dtype=torch.bool)
    a[:, :4] = True
    b = ~a
    b[:, 3] = True  # key 3 in both
    out, _ = merge_attention(*map(list, zip(_partial(q, k, v, a), _partial(q, k, v, b), strict=False)))
    full = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    assert (out - full).abs().max().item() > 1e-3


def test_empty_set_and_empty_query():
    out1, lse1 = torch.ones(1, 1, 2, 3), torch.tensor([[[0.0, float("-inf")]]])
    out2, lse2 = torch.zeros(1, 1, 2, 3), torch.full((1, 1, 2), float("-inf"))
    out, lse = merge_attention([out1, out2], [lse1, lse2])
    assert torch.equal(out[0, 0, 0], torch.ones(3)) and torch.equal(out[0, 0, 1], torch.zeros(3))
    assert lse[0, 0, 0] == 0 and lse[0, 0, 1] == float("-inf")


def test_merge_into_a_half_precision_view_rounds_once():
    # The running output may be a bf16 strided view of a larger buffer (a piece's rows): the
    # weights and the sum are formed in float32, so the result is the float32 merge rounded once.
    g = torch.Generator().manual_seed(3)
    outs = [torch.randn(1, 2, 5, 4, generator=g) for _ in range(2)]
    lses = [torch.randn(1, 2, 5, generator=g) for _ in range(2)]
    want, want_lse = merge_attention(outs, lses)
    buffer = torch.zeros(1, 2, 9, 4, dtype=torch.bfloat16)
    view, lse = buffer[:, :, 2:7], torch.full((1, 2, 5), float("-inf"))
    for part, part_lse in zip(outs, lses, strict=True):
        merge_into(view, lse, part.bfloat16(), part_lse)
    assert torch.equal(buffer[:, :, :2], torch.zeros(1, 2, 2, 4, dtype=torch.bfloat16))
    assert (view.float() - want).abs().max().item() <= 2e-2 and (lse - want_lse).abs().max().item() < 1e-6


def test_flash_attn_empty_row_is_an_empty_set():
    # flash-attn reports a query without key as out 0, lse +inf: the merge must skip it.
    out, lse = torch.ones(1, 1, 2, 3), torch.zeros(1, 1, 2)
    merge_into(out, lse, torch.zeros(1, 1, 2, 3), torch.full((1, 1, 2), float("inf")))
    assert torch.equal(out, torch.ones(1, 1, 2, 3)) and torch.equal(lse, torch.zeros(1, 1, 2))
