"""The per-example forgetting score of the NeurIPS 2023 machine unlearning challenge.

For each forget example, an attacker sees the example's logit-scaled confidence
``log p_y − log(1 − p_y)`` under N unlearned models (one configuration, N seeds) and under K
honest retrains, and tries to tell the two apart with a threshold. Every threshold and both
directions give a false positive rate (a retrain called unlearned) and a false negative rate;
for ``(ε, δ)``-unlearning each pair bounds

    ε ≥ max(log(1 − δ − FPR) − log FNR,  log(1 − δ − FNR) − log FPR).

ε of the example is the largest such bound (0 at least). It is binned in steps of 0.5 and
scored ``2^(1 − n)`` for bin ``n = 1 + ⌊ε / 0.5⌋`` (1 for ε < 0.5, ½ below 1, …, 0 for ε = ∞),
and averaged over the forget set.

One deviation from the challenge, stated because it changes numbers: the challenge ran 512
models on each side and used the observed rates. With the tens of models a user can afford,
an observed rate of 0 is common even for identical distributions and makes ε infinite, so the
rates here are one-sided Clopper–Pearson upper bounds at ``confidence``: ε is then a bound
the data supports, and too few models can only fail to show a difference (see
:func:`resolution`), never invent one.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta

BIN_WIDTH = 0.5
DELTA = 1e-5


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


def example_epsilons(
    unlearned: np.ndarray, retrained: np.ndarray, *, delta: float = DELTA, confidence: float = 0.95
) -> np.ndarray:
    """ε per example from ``unlearned`` ``[N, n]`` and ``retrained`` ``[K, n]`` confidences."""
    unlearned = np.asarray(unlearned, dtype=np.float64)
    retrained = np.asarray(retrained, dtype=np.float64)
    n_runs, n_members = unlearned.shape[0], retrained.shape[0]
    if n_runs < 1 or n_members < 1 or unlearned.shape[1] != retrained.shape[1]:
        raise ValueError("need [N, n] unlearned and [K, n] retrained confidences with the same n")
    pooled = np.concatenate([unlearned, retrained], axis=0)  # thresholds: every observed value
    # Rule "confidence > threshold → unlearned": counts of each side above each threshold.
    above_u = (unlearned[:, None, :] > pooled[None, :, :]).sum(axis=0)  # [N+K, n]
    above_r = (retrained[:, None, :] > pooled[None, :, :]).sum(axis=0)
    # Plus the thresholds below everything (every sample called unlearned).
    above_u = np.concatenate([above_u, np.full((1, above_u.shape[1]), n_runs)], axis=0)
    above_r = np.concatenate([above_r, np.full((1, above_r.shape[1]), n_members)], axis=0)
    epsilons = np.zeros(unlearned.shape[1])
    for called_u, called_r in ((above_u, above_r), (n_runs - above_u, n_members - above_r)):
        fpr = _upper(called_r, n_members, confidence)  # retrains called unlearned
        fnr = _upper(n_runs - called_u, n_runs, confidence)  # unlearned runs called retrains
        epsilons = np.maximum(epsilons, _epsilon_from_rates(fpr, fnr, delta).max(axis=0))
    return np.maximum(epsilons, 0.0)


def binned_score(epsilons: np.ndarray) -> np.ndarray:
    """``2^(1 − n)`` with ``n = 1 + ⌊ε / 0.5⌋``; 0 for an infinite ε."""
    epsilons = np.asarray(epsilons, dtype=np.float64)
    finite = np.isfinite(epsilons)
    bins = 1 + np.floor(np.where(finite, epsilons, 0.0) / BIN_WIDTH)
    return np.where(finite, 2.0 ** (1 - bins), 0.0)


def forgetting_quality(
    unlearned: np.ndarray, retrained: np.ndarray, *, delta: float = DELTA, confidence: float = 0.95
) -> float:
    """The mean binned score over the forget set: 1 = indistinguishable from the retrains."""
    return float(
        binned_score(example_epsilons(unlearned, retrained, delta=delta, confidence=confidence)).mean()
    )


def resolution(n_runs: int, n_members: int, *, delta: float = DELTA, confidence: float = 0.95) -> float:
    """The lowest forgetting quality these counts can show: the score of two sets of models
    that a threshold separates perfectly. With too few models it stays near 1, and no
    threshold on the score can then tell forgotten from not."""
    fpr = _upper(np.array([0.0]), n_members, confidence)
    fnr = _upper(np.array([0.0]), n_runs, confidence)
    epsilon = float(_epsilon_from_rates(fpr, fnr, delta)[0])
    return float(binned_score(np.array([max(epsilon, 0.0) if math.isfinite(epsilon) else epsilon]))[0])
