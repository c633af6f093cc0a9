"""The per-example forgetting score against known answers and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta

from tune_unlearn.scoring.forget_score import (
    RULES,
    binned_score,
    example_epsilons,
    forgetting_quality,
    logit_confidence,
    resolution,
)


def _rules(u: list[float], r: list[float]) -> list[tuple[list[bool], list[bool]]]:
    """Every decision rule, one at a time, as (called unlearned?) per unlearned run and per
    retrain: each threshold in both directions, and each interval around the tighter side's
    median (both orientations)."""
    rules = []
    for t in [-math.inf, *sorted(set(u) | set(r))]:
        above = ([x > t for x in u], [x > t for x in r])
        rules += [above, ([not c for c in above[0]], [not c for c in above[1]])]
    tighter_u = np.std(u) <= np.std(r)
    centre = float(np.median(u if tighter_u else r))
    for d in sorted({abs(x - centre) for x in u + r}):
        inside = ([abs(x - centre) <= d for x in u], [abs(x - centre) <= d for x in r])
        rules += [inside, ([not c for c in inside[0]], [not c for c in inside[1]])]
    return rules


def brute_force_epsilon(u: list[float], r: list[float], delta: float = 1e-5, c: float = 0.95) -> float:
    """The bounded rule written out one decision rule at a time."""

    def upper(k: int, n: int) -> float:
        return 1.0 if k == n else float(beta.ppf(c, k + 1, n - k))

    best = 0.0
    for called_u, called_r in _rules(u, r):
        fpr, fnr = upper(sum(called_r), len(r)), upper(len(u) - sum(called_u), len(u))
        for num, den in ((1 - delta - fpr, fnr), (1 - delta - fnr, fpr)):
            if num > 0:
                best = max(best, math.inf if den == 0 else math.log(num / den))
    return best


def test_epsilon_matches_the_brute_force_reference() -> None:
    rng = np.random.default_rng(1)
    unlearned = rng.normal(0.8, 1.0, size=(12, 6))
    unlearned[:, 3:] = rng.normal(0.0, 0.2, size=(12, 3))  # tighter than the retrains
    retrained = rng.normal(0.0, 1.0, size=(9, 6))
    fast = example_epsilons(unlearned, retrained)
    slow = [brute_force_epsilon(unlearned[:, i].tolist(), retrained[:, i].tolist()) for i in range(6)]
    assert fast == pytest.approx(slow)


def test_identical_distributions_score_as_forgotten() -> None:
    rng = np.random.default_rng(0)
    same = rng.normal(size=(32, 300))
    for rule in RULES:
        assert forgetting_quality(same, same.copy(), rule=rule) == 1.0
    # Independent draws of one distribution: the bounds rarely show a difference; observed
    # rates (the challenge's) show noise as ε ≈ 1–2 on most examples.
    u, r = rng.normal(size=(32, 300)), rng.normal(size=(32, 300))
    assert forgetting_quality(u, r) > 0.97
    assert forgetting_quality(u, r, rule="challenge") < 0.5


def test_runs_tighter_than_the_retrains_are_told_apart() -> None:
    # The same centre on every seed while the retrains vary: no single threshold separates
    # them, the two-threshold rule does (before it, 10 runs against 10 retrains scored 1.0).
    rng = np.random.default_rng(3)
    tight, spread = 0.1 * rng.normal(size=(20, 200)), rng.normal(size=(20, 200))
    assert forgetting_quality(tight, spread) < 0.5
    assert forgetting_quality(tight, spread, rule="challenge") < 0.1


# Hand-worked cases of the challenge's rule (observed rates, δ = 1e-5).


def test_challenge_identical_runs_give_epsilon_zero() -> None:
    # Equal samples: every rule calls the same share p of each side unlearned, FPR = p and
    # FNR = 1 − p, and both bounds log(1 − δ − p) − log(1 − p), log(p − δ) − log p are < 0.
    u = np.array([[1.0], [2.0], [3.0], [4.0]])
    assert example_epsilons(u, u.copy(), rule="challenge").tolist() == [0.0]
    assert forgetting_quality(u, u.copy(), rule="challenge") == 1.0


def test_challenge_disjoint_runs_fall_in_the_last_bin() -> None:
    # "above 2 → unlearned" has FPR = FNR = 0: ε = ∞. With 10 models a side the bin edges
    # 0, 0.5, …, 2.5 stop below ⌈log 9⌉ = 3, so ∞ is bin 6: score 2^(1 − 6).
    u = np.arange(10.0, 20.0)[:, None]
    r = np.arange(0.0, 10.0)[:, None] / 5
    assert example_epsilons(u, r, rule="challenge").tolist() == [math.inf]
    assert forgetting_quality(u, r, rule="challenge") == 2.0**-5 == resolution(10, 10, rule="challenge")
    assert resolution(512, 512, rule="challenge") == 2.0**-13  # 14 bins at the challenge's 512


def test_challenge_lower_variance_is_caught_by_the_interval() -> None:
    # U = ±0.1 around 0, R = ±1..3 around 0 (K = 6): the medians tie, so the single threshold
    # calls "above t" unlearned; its best is t = −0.1: U 4 of 5 above, R 3 of 6 (FNR 0.2,
    # FPR 0.5; ε = log(0.8/0.5) or log(0.5/0.2)). The interval |x| ≤ 0.1 holds every U and no
    # R: FPR = FNR = 0, ε = ∞, the last bin of N = 5: edges 0 … 1.5 below ⌈log 4⌉ = 2, bin 4.
    u = np.array([[-0.1], [-0.05], [0.0], [0.05], [0.1]])
    r = np.array([[-3.0], [-2.0], [-1.0], [1.0], [2.0], [3.0]])
    assert example_epsilons(u, r, rule="challenge").tolist() == [math.inf]
    assert forgetting_quality(u, r, rule="challenge") == 2.0**-3


def test_challenge_drops_a_rule_with_exactly_one_zero_rate() -> None:
    # U = 1, 2, 3 and R = 0, 0.5, 2.5; U's median is higher, so "above t → unlearned".
    # t = 0.5 calls every U and one R unlearned: FNR = 0, FPR = 1/3, whose bound
    # log(1 − δ − 1/3) − log 0 is infinite only through the zero: dropped. The best kept rule
    # is t = 1: FPR = FNR = 1/3, ε = log(2/3 − δ) − log(1/3) ≈ log 2.
    u = np.array([[1.0], [2.0], [3.0]])
    r = np.array([[0.0], [0.5], [2.5]])
    eps = example_epsilons(u, r, rule="challenge")
    assert eps.tolist() == pytest.approx([math.log((2 / 3 - 1e-5) / (1 / 3))])


def test_challenge_a_side_that_barely_varies_is_capped() -> None:
    # U's range (2e-4) is under 1% of R's (2): ε = ∞ even where a retrain sits among the runs.
    u = np.array([[0.0], [1e-4], [2e-4], [1e-4]])
    r = np.array([[-1.0], [1e-4], [1.0], [0.5]])
    assert example_epsilons(u, r, rule="challenge").tolist() == [math.inf]


def test_disjoint_distributions_score_as_not_forgotten() -> None:
    rng = np.random.default_rng(0)
    unlearned = rng.normal(size=(64, 100)) + 20.0
    retrained = rng.normal(size=(64, 100))
    quality = forgetting_quality(unlearned, retrained)
    assert quality == resolution(64, 64) < 0.02


def test_the_bins() -> None:
    # n = 1 + ⌊ε/0.5⌋, score 2^(1 − n); ∞ scores 0, or falls in the last bin where bins stop
    assert binned_score(np.array([0.0, 0.49, 0.5, 1.2, math.inf])).tolist() == [1.0, 1.0, 0.5, 0.25, 0.0]
    assert binned_score(np.array([0.0, 1.2, 9.0, math.inf]), 4).tolist() == [1.0, 0.25, 0.125, 0.125]


def test_too_few_models_cannot_show_a_difference() -> None:
    # Five against five: even perfectly separated runs give a score of 1, so a gate must
    # treat such counts as unable to decide, not as a pass.
    assert resolution(5, 5) == 1.0
    assert resolution(16, 16) == 0.125


def test_logit_confidence_from_the_loss() -> None:
    p = np.array([0.5, 0.9, 0.999999])
    assert logit_confidence(-np.log(p), "classification") == pytest.approx(np.log(p / (1 - p)), rel=1e-6)
    assert logit_confidence(np.array([0.25]), "regression").tolist() == [-0.25]
