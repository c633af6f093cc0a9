"""The per-example forgetting score of the NeurIPS 2023 machine unlearning challenge.

For each forget example, an attacker sees the example's logit-scaled confidence
``log p_y − log(1 − p_y)`` under N unlearned models (one configuration, N seeds) and under K
honest retrains, and tries to tell the two apart with a decision rule. Two families of rules:

- **single threshold**: "confidence above t → unlearned" (or below);
- **two thresholds**: "confidence within d of c → unlearned" (or outside), c the median of
  the side with the smaller spread and d every observed distance from it: it catches
  unlearned runs that land in nearly the same place on every seed while retrains vary.

Each rule gives a false positive rate (a retrain called unlearned) and a false negative rate;
for ``(ε, δ)``-unlearning each pair bounds

    ε ≥ max(log(1 − δ − FPR) − log FNR,  log(1 − δ − FNR) − log FPR).

ε of the example is the largest such bound (0 at least). It is binned in steps of 0.5 and
scored ``2^(1 − n)`` for bin ``n = 1 + ⌊ε / 0.5⌋`` (1 for ε < 0.5, ½ below 1, …), and
averaged over the forget set.

Two rules turn counts into rates (``evaluation.forget_score_rule``):

``challenge``
    The challenge's published definition, for comparison with its figures: observed rates;
    one direction per example (single threshold: the side of the higher median is called
    unlearned; two thresholds: the side with the smaller spread is the inside); a rule where
    exactly one rate is 0 is dropped (its bound is infinite only through the zero), both 0
    give ε = ∞; a side whose range is under 1% of the other's gives ε = ∞; the bin edges stop
    below ``⌈log(N − 1)⌉`` (N models a side, about the largest finite ε they can show: 14
    bins at 512, 6 at 10) and ε past the last edge, ∞ included, falls in the last bin.
``bounded`` (default)
    Both directions of both families, with one-sided Clopper–Pearson upper bounds at
    ``confidence`` in place of the observed rates, and no cap. With the tens of models a user
    can afford, observed rates of two *identical* distributions already give ε ≈ 1–2 (the
    challenge's score of two identical distributions is ≈ 0.2 even at 512 models a side), so
    a gate threshold on that score would refuse honest models; with bounds ε is one the data
    supports, and too few models can only fail to show a difference (:func:`resolution`),
    never invent one. The price: bounds do not converge to the observed-rate ε as models are
    added, so bounded scores sit above challenge scores (``benchmarks/forget_score_rules.py``).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy.stats import beta

BIN_WIDTH = 0.5
DELTA = 1e-5
Rule = Literal["bounded", "challenge"]
RULES: tuple[Rule, ...] = ("bounded", "challenge")
#: A side whose range is under this share of the other's is told apart at the cap (challenge).
_DEGENERATE_RANGE = 0.01


def logit_confidence(loss: np.ndarray, kind: str) -> np.ndarray:
    """``log p_y − log(1 − p_y)`` from a classification loss ``−log p_y`` (stable for tiny
    losses); for a regression task the negative squared error, which ranks the same way."""
    loss = np.asarray(loss, dtype=np.float64)
    if kind != "classification":
        return -loss
    loss = np.clip(loss, 1e-12, None)
    confidence: np.ndarray = -loss - np.log(-np.expm1(-loss))
    return confidence


def _upper(count: np.ndarray, total: int, confidence: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound of a rate from ``count`` of ``total``."""
    count = np.asarray(count, dtype=np.float64)
    bound = np.asarray(beta.ppf(confidence, count + 1, np.maximum(total - count, 1e-12)))
    out: np.ndarray = np.where(count >= total, 1.0, bound)
    return out


def _epsilon_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(
            1 - delta - fpr > 0, np.log(np.clip(1 - delta - fpr, 1e-300, None)) - np.log(fnr), -np.inf
        )
        b = np.where(
            1 - delta - fnr > 0, np.log(np.clip(1 - delta - fnr, 1e-300, None)) - np.log(fpr), -np.inf
        )
    return np.maximum(a, b)


def _observed_epsilon(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """The challenge's ε of one rule from observed rates: both 0 → ∞; exactly one 0 → the
    rule is dropped (−∞); else the formula."""
    both = (fpr == 0) & (fnr == 0)
    one = (fpr == 0) ^ (fnr == 0)
    eps = _epsilon_from_rates(fpr, fnr, delta)
    return np.where(both, np.inf, np.where(one, -np.inf, eps))


def _single_threshold_counts(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of each side above each threshold ``[N + K + 1, n]``: every observed value, plus
    one below everything (every sample called unlearned)."""
    pooled = np.concatenate([unlearned, retrained], axis=0)
    above_u = (unlearned[:, None, :] > pooled[None, :, :]).sum(axis=0)
    above_r = (retrained[:, None, :] > pooled[None, :, :]).sum(axis=0)
    above_u = np.concatenate([above_u, np.full((1, above_u.shape[1]), unlearned.shape[0])], axis=0)
    above_r = np.concatenate([above_r, np.full((1, above_r.shape[1]), retrained.shape[0])], axis=0)
    return above_u, above_r


def _interval_counts(
    unlearned: np.ndarray, retrained: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of each side inside ``[c − d, c + d]`` ``[N + K, n]``: ``c`` the median of the
    side with the smaller spread (``tighter``: the unlearned runs, per example), ``d`` every
    observed distance from it."""
    tighter = unlearned.std(axis=0) <= retrained.std(axis=0)
    centre = np.where(tighter, np.median(unlearned, axis=0), np.median(retrained, axis=0))
    widths = np.abs(np.concatenate([unlearned, retrained], axis=0) - centre)
    inside_u = (np.abs(unlearned - centre)[:, None, :] <= widths[None, :, :]).sum(axis=0)
    inside_r = (np.abs(retrained - centre)[:, None, :] <= widths[None, :, :]).sum(axis=0)
    return tighter, inside_u, inside_r


def _cap_bin(n_runs: int, n_members: int) -> int:
    """The challenge's last bin: the bin edges 0, 0.5, … stop below ``⌈log(N − 1)⌉`` (N the
    smaller side; near the largest finite ε that N models can show), and every ε past the
    last edge, ∞ included, falls in the bin after it."""
    smaller = min(n_runs, n_members)
    return max(1, int(2 * math.ceil(math.log(smaller - 1)))) if smaller > 2 else 1


def _bounded_epsilons(
    unlearned: np.ndarray, retrained: np.ndarray, delta: float, confidence: float
) -> np.ndarray:
    n_runs, n_members = unlearned.shape[0], retrained.shape[0]

    def best(called_u: np.ndarray, called_r: np.ndarray) -> np.ndarray:
        fpr = _upper(called_r, n_members, confidence)  # retrains called unlearned
        fnr = _upper(n_runs - called_u, n_runs, confidence)  # unlearned runs called retrains
        return _epsilon_from_rates(fpr, fnr, delta)

    above_u, above_r = _single_threshold_counts(unlearned, retrained)
    epsilons = np.zeros(unlearned.shape[1])
    for called_u, called_r in ((above_u, above_r), (n_runs - above_u, n_members - above_r)):
        epsilons = np.maximum(epsilons, best(called_u, called_r).max(axis=0))
    _, in_u, in_r = _interval_counts(unlearned, retrained)
    for called_u, called_r in ((in_u, in_r), (n_runs - in_u, n_members - in_r)):
        epsilons = np.maximum(epsilons, best(called_u, called_r).max(axis=0))
    return epsilons


def _challenge_epsilons(unlearned: np.ndarray, retrained: np.ndarray, delta: float) -> np.ndarray:
    n_runs, n_members = unlearned.shape[0], retrained.shape[0]

    def best(called_u: np.ndarray, called_r: np.ndarray) -> np.ndarray:
        return _observed_epsilon(called_r / n_members, (n_runs - called_u) / n_runs, delta)

    # Single threshold: the side of the higher median is the one called unlearned.
    above_u, above_r = _single_threshold_counts(unlearned, retrained)
    higher = np.median(unlearned, axis=0) >= np.median(retrained, axis=0)
    called_u = np.where(higher, above_u, n_runs - above_u)
    called_r = np.where(higher, above_r, n_members - above_r)
    epsilons = np.maximum(0.0, best(called_u, called_r).max(axis=0))
    # Two thresholds: the side with the smaller spread is the inside.
    tighter, in_u, in_r = _interval_counts(unlearned, retrained)
    called_u = np.where(tighter, in_u, n_runs - in_u)
    called_r = np.where(tighter, in_r, n_members - in_r)
    epsilons = np.maximum(epsilons, best(called_u, called_r).max(axis=0))
    # A side that barely varies against one that does is told apart at the cap.
    range_u = np.ptp(unlearned, axis=0)
    range_r = np.ptp(retrained, axis=0)
    degenerate = (range_u < _DEGENERATE_RANGE * range_r) | (range_r < _DEGENERATE_RANGE * range_u)
    out: np.ndarray = np.where(degenerate, np.inf, epsilons)
    return out


def example_epsilons(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    *,
    rule: Rule = "bounded",
    delta: float = DELTA,
    confidence: float = 0.95,
) -> np.ndarray:
    """ε per example from ``unlearned`` ``[N, n]`` and ``retrained`` ``[K, n]`` confidences."""
    unlearned = np.asarray(unlearned, dtype=np.float64)
    retrained = np.asarray(retrained, dtype=np.float64)
    if unlearned.ndim != 2 or retrained.ndim != 2:
        raise ValueError("need [N, n] unlearned and [K, n] retrained confidences")
    if unlearned.shape[0] < 1 or retrained.shape[0] < 1 or unlearned.shape[1] != retrained.shape[1]:
        raise ValueError("need [N, n] unlearned and [K, n] retrained confidences with the same n")
    if rule == "challenge":
        return _challenge_epsilons(unlearned, retrained, delta)
    if rule == "bounded":
        return _bounded_epsilons(unlearned, retrained, delta, confidence)
    raise ValueError(f"unknown forget-score rule {rule!r}; one of {', '.join(RULES)}")


def binned_score(epsilons: np.ndarray, cap_bin: int | None = None) -> np.ndarray:
    """``2^(1 − n)`` with ``n = 1 + ⌊ε / 0.5⌋``; with ``cap_bin`` the bins stop there (an
    infinite ε falls in the last one), without it an infinite ε scores 0."""
    epsilons = np.asarray(epsilons, dtype=np.float64)
    finite = np.isfinite(epsilons)
    bins = 1 + np.floor(np.where(finite, epsilons, 0.0) / BIN_WIDTH)
    if cap_bin is not None:
        return 2.0 ** (1 - np.where(finite, np.minimum(bins, cap_bin), cap_bin))
    return np.where(finite, 2.0 ** (1 - bins), 0.0)


def forgetting_quality(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    *,
    rule: Rule = "bounded",
    delta: float = DELTA,
    confidence: float = 0.95,
) -> float:
    """The mean binned score over the forget set: 1 = indistinguishable from the retrains."""
    epsilons = example_epsilons(unlearned, retrained, rule=rule, delta=delta, confidence=confidence)
    cap = _cap_bin(len(unlearned), len(retrained)) if rule == "challenge" else None
    return float(binned_score(epsilons, cap).mean())


def resolution(
    n_runs: int, n_members: int, *, rule: Rule = "bounded", delta: float = DELTA, confidence: float = 0.95
) -> float:
    """The lowest forgetting quality these counts can show: the score of two sets of models
    that a threshold separates perfectly. With too few models it stays near 1, and no
    threshold on the score can then tell forgotten from not."""
    if rule == "challenge":
        return float(2.0 ** (1 - _cap_bin(n_runs, n_members)))
    fpr = _upper(np.array([0.0]), n_members, confidence)
    fnr = _upper(np.array([0.0]), n_runs, confidence)
    epsilon = float(_epsilon_from_rates(fpr, fnr, delta)[0])
    return float(binned_score(np.array([max(epsilon, 0.0) if math.isfinite(epsilon) else epsilon]))[0])
