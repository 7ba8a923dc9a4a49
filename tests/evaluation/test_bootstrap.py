"""The paired bootstrap of a PPL ratio (lampe_calib/evaluation/_bootstrap.py): exact values where
the answer is known, and ~95 % coverage of the true ratio on synthetic paired data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lampe_calib.evaluation._bootstrap import paired_ratio, paired_ratio_interval


def _experiment(rng, n_books, log_ratio, book_sd, block_sd, tokens=1024):
    """Paired per-block NLL sums: each book shifts the method's NLL per token by a book effect
    around ``log_ratio``, each block adds its own noise; the reference's NLL varies freely."""
    nll, reference, counts = [], [], []
    for _ in range(n_books):
        blocks = int(rng.integers(2, 9))
        effect = rng.normal(log_ratio, book_sd)
        base = rng.normal(3.0, 0.3, size=blocks) * tokens
        diff = (effect + rng.normal(0.0, block_sd, size=blocks)) * tokens
        reference.append(list(base))
        nll.append(list(base + diff))
        counts.append([tokens] * blocks)
    return nll, reference, counts


def test_ratio_is_the_ppl_ratio():
    nll, reference, tokens = [[10.0, 12.0], [5.0]], [[9.0, 9.0], [6.0]], [[10, 10], [4]]
    ppl = math.exp(27.0 / 24)
    ppl_reference = math.exp(24.0 / 24)
    assert paired_ratio(nll, reference, tokens) == pytest.approx(ppl / ppl_reference)


def test_interval_is_a_point_without_variation_and_seeded():
    same = [[2.0, 4.0], [3.0]]
    assert paired_ratio_interval(same, same, [[2, 4], [3]]) == (1.0, 1.0)
    data = _experiment(np.random.default_rng(0), 5, 0.02, 0.01, 0.02)
    first = paired_ratio_interval(*data, seed=3, resamples=300)
    assert first == paired_ratio_interval(*data, seed=3, resamples=300)
    assert first != paired_ratio_interval(*data, seed=4, resamples=300)
    assert first[0] < paired_ratio(*data) < first[1]


def test_coverage_near_95_percent():
    rng = np.random.default_rng(1)
    truth = math.exp(0.02)
    hits = 0
    for i in range(200):
        low, high = paired_ratio_interval(*_experiment(rng, 8, 0.02, 0.02, 0.02), resamples=400, seed=i)
        hits += low <= truth <= high
    assert 0.90 <= hits / 200 <= 0.99


@pytest.mark.parametrize(
    "nll, reference, tokens, message",
    [
        ([[1.0]], [[1.0, 2.0]], [[1]], "same books and blocks"),
        ([], [], [], "same books and blocks"),
        ([[]], [[]], [[]], "at least one block"),
        ([[1.0]], [[1.0]], [[0]], "token counts must be > 0"),
    ],
)
def test_bad_input(nll, reference, tokens, message):
    with pytest.raises(ValueError, match=message):
        paired_ratio_interval(nll, reference, tokens)
    with pytest.raises(ValueError, match="level must be in"):
        paired_ratio_interval([[1.0]], [[1.0]], [[1]], level=1.0)
