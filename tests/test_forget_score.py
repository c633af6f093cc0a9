"""The per-example forgetting score against known answers and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta

from tune_unlearn.forget_score import (
    binned_score,
    example_epsilons,
    forgetting_quality,
    logit_confidence,
    resolution,
)


def brute_force_epsilon(u: np.ndarray, r: np.ndarray, delta: float = 1e-5, c: float = 0.95) -> float:
    """Every threshold, both directions, written out one at a time."""

    def upper(k: int, n: int) -> float:
        return 1.0 if k == n else float(beta.ppf(c, k + 1, n - k))

    best = 0.0
    for t in [-math.inf, *sorted(set(u) | set(r))]:
        for sign in (1, -1):
            called_u = sum((sign * x > sign * t) if sign == 1 else not (x > t) for x in u)
            called_r = sum((sign * x > sign * t) if sign == 1 else not (x > t) for x in r)
            fpr, fnr = upper(called_r, len(r)), upper(len(u) - called_u, len(u))
            for num, den in ((1 - delta - fpr, fnr), (1 - delta - fnr, fpr)):
                if num > 0:
                    best = max(best, math.inf if den == 0 else math.log(num / den))
    return best


def test_epsilon_matches_the_brute_force_reference() -> None:
    rng = np.random.default_rng(1)
    unlearned = rng.normal(0.8, 1.0, size=(12, 6))
    retrained = rng.normal(0.0, 1.0, size=(9, 6))
    fast = example_epsilons(unlearned, retrained)
    slow = [brute_force_epsilon(unlearned[:, i], retrained[:, i]) for i in range(6)]
    assert fast == pytest.approx(slow)


def test_identical_distributions_score_as_forgotten() -> None:
    rng = np.random.default_rng(0)
    same = rng.normal(size=(32, 300))
    assert forgetting_quality(same, same.copy()) == 1.0
    assert forgetting_quality(rng.normal(size=(32, 300)), rng.normal(size=(32, 300))) > 0.97


def test_disjoint_distributions_score_as_not_forgotten() -> None:
    rng = np.random.default_rng(0)
    unlearned = rng.normal(size=(64, 100)) + 20.0
    retrained = rng.normal(size=(64, 100))
    quality = forgetting_quality(unlearned, retrained)
    assert quality == resolution(64, 64) < 0.02


def test_the_bins() -> None:
    # n = 1 + ⌊ε/0.5⌋, score 2^(1 − n); ∞ scores 0
    assert binned_score(np.array([0.0, 0.49, 0.5, 1.2, math.inf])).tolist() == [1.0, 1.0, 0.5, 0.25, 0.0]


def test_too_few_models_cannot_show_a_difference() -> None:
    # Five against five: even perfectly separated runs give a score of 1, so a gate must
    # treat such counts as unable to decide, not as a pass.
    assert resolution(5, 5) == 1.0
    assert resolution(16, 16) == 0.125


def test_logit_confidence_from_the_loss() -> None:
    p = np.array([0.5, 0.9, 0.999999])
    assert logit_confidence(-np.log(p), "classification") == pytest.approx(np.log(p / (1 - p)), rel=1e-6)
    assert logit_confidence(np.array([0.25]), "regression").tolist() == [-0.25]
