"""The LSE merge equals one softmax over all keys; no key is counted twice."""

from __future__ import annotations

import pytest
import torch

from lampe_calib.engine import merge_attention


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


def test_inplace_merge_equals_merge():
    g = torch.Generator().manual_seed(3)
    outs = [torch.randn(1, 2, 5, 4, generator=g) for _ in range(2)]
    lses = [torch.randn(1, 2, 5, generator=g) for _ in range(2)]
    want, want_lse = merge_attention([o.clone() for o in outs], lses)
    first = outs[0].clone()
    got, got_lse = merge_attention([first, outs[1]], lses, inplace=True)
    assert got.data_ptr() == first.data_ptr()
    assert (got - want).abs().max().item() < 1e-6 and torch.equal(got_lse, want_lse)
