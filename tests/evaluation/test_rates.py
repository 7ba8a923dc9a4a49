"""Rates of generation cells: the Wilson score interval against its formula, its coverage on
simulated binomials, and the JSON fields of a cell."""

from __future__ import annotations

import math
import random

import pytest

from lampe_calib.evaluation._rates import binomial_counts, rate_fields, rate_interval, wilson_interval

Z = 1.959963984540054  # the normal quantile of 0.975


def _by_formula(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(0, 8), (8, 8), (4, 8), (1, 2), (3, 20), (1, 1)])
def test_wilson_interval_is_its_formula(k, n):
    low, high = wilson_interval(k, n)
    want = _by_formula(k, n)
    assert low == pytest.approx(max(0.0, want[0]), abs=1e-12) and high == pytest.approx(
        min(1.0, want[1]), abs=1e-12
    )
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_interval_known_values():
    # 0/8 and 8/8: one bound at the edge, the other z²/(n + z²) from it; 4/8 symmetric about 1/2.
    assert wilson_interval(0, 8) == (0.0, pytest.approx(Z**2 / (8 + Z**2)))
    assert wilson_interval(8, 8) == (pytest.approx(8 / (8 + Z**2)), 1.0)
    low, high = wilson_interval(4, 8)
    assert low == pytest.approx(0.2152, abs=1e-4) and high == pytest.approx(1 - low)
    assert wilson_interval(4, 8, level=0.5)[1] - wilson_interval(4, 8, level=0.5)[0] < high - low


@pytest.mark.parametrize("bad", [(1, 0), (-1, 4), (5, 4), (1.0, 4)])
def test_wilson_interval_refuses_bad_counts(bad):
    with pytest.raises(ValueError, match="trials|successes"):
        wilson_interval(*bad)


def test_wilson_coverage_on_simulated_binomials_is_near_95_percent():
    rng = random.Random(0)
    covered, draws = 0, 4000
    for _ in range(draws):
        n, p = rng.choice((8, 20, 50)), rng.uniform(0.05, 0.95)
        k = sum(rng.random() < p for _ in range(n))
        low, high = wilson_interval(k, n)
        covered += low <= p <= high
    assert 0.935 <= covered / draws <= 0.965  # 0.95 ± about 4 standard errors
    # At 8 prompts, the size of a cell of issue-sized runs, no rate is covered much less often.
    for p in (0.1, 0.3, 0.5, 0.9):
        hits = sum(
            wilson_interval(k, 8)[0] <= p <= wilson_interval(k, 8)[1]
            for k in (sum(rng.random() < p for _ in range(8)) for _ in range(2000))
        )
        assert hits / 2000 >= 0.90


def test_rate_fields_and_counts():
    fields = rate_fields([1.0, 0.0, 1.0, 1.0])
    assert fields["accuracy"] == 0.75 and fields["scores"] == [1.0, 0.0, 1.0, 1.0]
    assert fields["ci"] == list(wilson_interval(3, 4))
    partial = rate_fields([0.6, 0.2])
    assert partial["accuracy"] == pytest.approx(0.4) and "ci" not in partial
    assert binomial_counts(partial) is None and rate_interval(partial) is None
    assert binomial_counts({"correct": 1, "trials": 2}) == (1, 2)  # a row of an earlier version
    assert rate_interval({"correct": 0, "trials": 8}) == wilson_interval(0, 8)
    assert binomial_counts({"accuracy": 0.5, "samples": 2}) is None  # RULER rows without scores
    with pytest.raises(ValueError, match="at least one prompt"):
        rate_fields([])
