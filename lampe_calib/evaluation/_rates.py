"""Rates of the generation tasks (passkey, RULER) with a 95 % Wilson score interval.

A generation cell scores each prompt in [0, 1]. Where every score is 0 or 1 (passkey, and the
RULER tasks with one answer: ``niah_single``, ``niah_multikey``), the cell is k successes in n
prompts and its rate gets the Wilson score interval (Wilson 1927), which, unlike the normal
approximation, stays inside [0, 1] and is not empty at 0/n or n/n. It treats the n prompts as n
independent draws with one success probability. Passkey prompts come in depth groups
(``--samples`` keys at each of ``--depths``): the interval is then for the rate averaged over
those depths with equal weight, and since a stratified sample varies less than an unstratified
one, it is conservative when the depths' rates differ. Cells with partial scores (``vt``,
``cwe``: the fraction of the answers found) are means, not binomial rates, and get no interval.

No torch here: ``scripts/results_table.py`` reads its tables through these functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

__all__ = ["binomial_counts", "rate_fields", "rate_interval", "wilson_interval"]


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial rate ``successes / trials``.

    With p = k/n and z the normal quantile of (1 + level)/2, the bounds are
    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``, clipped to [0, 1].

    Example: ``wilson_interval(0, 8)`` -> ``(0.0, 0.324...)``; ``wilson_interval(4, 8)``
    -> ``(0.215..., 0.785...)``.
    """
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, got {trials!r}")
    if not isinstance(successes, int) or not 0 <= successes <= trials:
        raise ValueError(f"successes must be an integer in [0, {trials}], got {successes!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    z = NormalDist().inv_cdf((1.0 + level) / 2.0)
    p, n = successes / trials, trials
    scale = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / scale
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def rate_fields(scores: Sequence[float]) -> dict[str, Any]:
    """A generation cell's JSON fields: the mean score, each prompt's score, and, when every
    score is 0 or 1, the Wilson 95 % interval of the rate (``ci``).

    Example: ``rate_fields([1.0, 0.0])`` -> ``{"accuracy": 0.5, "scores": [1.0, 0.0],
    "ci": [0.094..., 0.905...]}``; ``rate_fields([0.6])`` has no ``ci``.
    """
    if not scores:
        raise ValueError("a generation cell needs at least one prompt, got none")
    fields: dict[str, Any] = {"accuracy": sum(scores) / len(scores), "scores": [float(s) for s in scores]}
    counts = binomial_counts(fields)
    if counts is not None:
        fields["ci"] = list(wilson_interval(*counts))
    return fields


def binomial_counts(row: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(successes, prompts)`` of a generation row whose outcomes are all 0 or 1, else None.

    Rows with per-prompt ``scores`` are binomial when every score is 0 or 1; older passkey rows,
    which keep only ``correct`` and ``trials``, always are (a key is found or not).

    Example: ``binomial_counts({"scores": [1.0, 0.0, 1.0]})`` -> ``(2, 3)``;
    ``binomial_counts({"scores": [0.6]})`` -> None; ``binomial_counts({"correct": 1, "trials": 2})``
    -> ``(1, 2)``.
    """
    scores = row.get("scores")
    if scores is not None:
        if scores and all(s in (0, 1) for s in scores):
            return int(sum(scores)), len(scores)
        return None
    if "correct" in row and "trials" in row:
        return int(row["correct"]), int(row["trials"])
    return None


def rate_interval(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """The row's stored ``ci``, else the Wilson interval of its counts, else None (partial scores).

    Example: ``rate_interval({"correct": 0, "trials": 8})`` -> ``(0.0, 0.324...)``.
    """
    if "ci" in row:
        low, high = row["ci"]
        return float(low), float(high)
    counts = binomial_counts(row)
    return None if counts is None else wilson_interval(*counts)
