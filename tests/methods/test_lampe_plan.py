"""PE(d) properties (hypothesis), region ids, per-token positions, and the floor mode."""

from __future__ import annotations

import torch
from dense_reference import pe_matrix
from hypothesis import given, settings
from hypothesis import strategies as st

from lampe_calib import position_encoding, region_of
from lampe_calib.methods._lampe_plan import LampeFloorPlan, LampePlan, floor_group, floor_grouping


@st.composite
def mappings(draw):
    head = draw(st.integers(0, 64))
    tail = draw(st.integers(0, 64))
    m = draw(st.integers(head + tail + 1, head + tail + 400))
    length = draw(st.integers(m + 1, m + 3000))
    return length, m, head, tail


@settings(max_examples=200, deadline=None)
@given(mappings())
def test_pe_is_continuous_monotone_and_bounded(args):
    length, m, head, tail = args
    d = torch.arange(length)
    pe = position_encoding(d, length, m, head, tail)
    alpha = (m - head - tail) / (length - head - tail)
    steps = pe[1:] - pe[:-1]
    assert bool((steps >= 0).all())  # non-decreasing
    # Continuity: no step larger than the larger of the two region slopes (1).
    assert bool((steps <= 1 + 1e-9).all())
    assert abs(float(pe[head]) - head) < 1e-9  # head/middle boundary s1 -> s1
    if tail >= 1:
        assert abs(float(pe[length - tail]) - (m - tail)) < 1e-9  # middle/tail boundary -> m - s2
        assert abs(float(pe.max()) - (m - 1)) < 1e-9  # largest value m - 1 at d = l - 1
    else:
        # No tail: the middle runs to d = l - 1 and tops out at m - α, inside (m - 1, m).
        assert m - 1 < float(pe.max()) < m
        assert abs(float(pe.max()) - (m - alpha)) < 1e-9


@settings(max_examples=100, deadline=None)
@given(mappings())
def test_region_positions_reproduce_pe(args):
    # P_q(i) - P_k(j) of the pair's region equals PE(i - j) for every causal pair.
    length, m, head, tail = args
    length = min(length, 400)
    if length <= m:
        return
    plan = LampePlan(torch.tensor([float(length)]), torch.tensor([float(m)]), head, tail)
    pos = torch.arange(length)[None]
    q = plan.query_positions(pos).double()  # (3, 1, L)
    k = plan.key_positions(pos).double()  # (2, 1, L)
    region = plan.regions(pos, pos)[0]  # (L, L)
    version = torch.tensor(plan.region_key_version)[region]
    rel = q[region, 0, torch.arange(length)[:, None]] - k[version, 0, torch.arange(length)[None, :]]
    want = pe_matrix(length, m, head, tail)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    assert (rel - want)[causal].abs().max().item() < 1e-3  # float32 positions


def test_identity_when_input_fits():
    d = torch.arange(100)
    assert torch.equal(position_encoding(d, 100, 100, 4, 2), d.double())


def test_region_of_example():
    got = region_of(torch.arange(12), length=12, head=2, tail=2).tolist()
    assert got == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2]


def test_floor_grouping_matches_the_official_worked_example():
    # l = 12, m = 8, s1 = s2 = 2, as the official release computes it (docs/official_code_differences.md).
    assert floor_group(torch.arange(12), 8 / 11).tolist() == [0, 0, 1, 2, 2, 3, 4, 5, 5, 6, 7, 8]
    ratio, t, bias1, bias2 = floor_grouping(12, 8, 2, 2)
    assert (t, bias1, bias2) == (2, 0.0, 3.0)
    plan = LampeFloorPlan(torch.tensor([12.0]), torch.tensor([8.0]), 2, 2)
    q = plan.query_positions(torch.arange(12)[None])
    assert q[1, 0, 2:].tolist() == [1, 2, 2, 3, 4, 5, 5, 6, 7, 8]  # middle P_q(2..11)
    assert q[2, 0, 10:].tolist() == [7, 8]  # tail P_q(10), P_q(11)
    assert plan.key_positions(torch.arange(12)[None])[1, 0, :10].tolist() == [0, 0, 1, 2, 2, 3, 4, 5, 5, 6]
    assert float(plan.tail_start[0]) == 10  # the tail starts at d = l - t


def test_floor_mode_uses_float32_rounding():
    # At l = 32768, m = 4501 float32 grouping differs from exact integer division at a few indices.
    j = torch.arange(32768)
    exact = (4501 * j) // 32767
    got = floor_group(j, 4501 / 32767).long()
    assert 0 < int((got != exact).sum()) <= 10
