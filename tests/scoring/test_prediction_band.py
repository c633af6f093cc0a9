"""The prediction band against brute force: simulated ensembles and one more honest retrain."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tune_unlearn.scoring.prediction_band import prediction_band, retrain_quantile


def coverage(members: int, seed_sd: float, sampling_sd: float, draws: int = 10_000) -> float:
    """How often one more retrain lands within the band of K simulated ones. Each retrain's
    value is its seed's draw plus a sampling error of known size, which the band is told."""
    rng = np.random.default_rng(0)
    ensembles = rng.normal(0.0, seed_sd, (draws, members))
    one_more = rng.normal(0.0, seed_sd, draws) + rng.normal(0.0, sampling_sd, draws)
    spreads = ensembles.std(axis=1, ddof=1)
    bands = np.array([prediction_band(s, members, sampling_sd**2) for s in spreads])
    return float(np.mean(np.abs(one_more - ensembles.mean(axis=1)) <= bands))


def test_the_band_holds_one_more_retrain_95_percent_of_the_time() -> None:
    # the seed spread alone: Student's t makes it exact (1.96 held about 88% at K = 5)
    assert coverage(5, 0.02, 0.0) == pytest.approx(0.95, abs=0.008)
    assert coverage(3, 0.02, 0.0) == pytest.approx(0.95, abs=0.008)
    # seed spread and sampling error alike: Welch–Satterthwaite's ν keeps it near 95%
    assert coverage(5, 0.02, 0.02) == pytest.approx(0.95, abs=0.012)


def test_the_normal_quantile_would_miss_at_small_k() -> None:
    """What the band replaced: 1.96 times the same spread holds far fewer than 95%."""
    rng = np.random.default_rng(1)
    ensembles = rng.normal(0.0, 1.0, (40_000, 5))
    one_more = rng.normal(0.0, 1.0, 40_000)
    normal = 1.96 * ensembles.std(axis=1, ddof=1) * math.sqrt(1.2)
    assert float(np.mean(np.abs(one_more - ensembles.mean(axis=1)) <= normal)) < 0.90


def test_the_band_by_hand() -> None:
    # K = 5, s = 0.01, nothing known: t(0.975; 4) = 2.7764 (tables) × 0.01 × sqrt(1.2)
    assert prediction_band(0.01, 5) == pytest.approx(2.7764 * 0.01 * math.sqrt(1.2), rel=1e-4)
    # no spread: only the sampling error, at the normal quantile
    assert prediction_band(0.0, 5, 0.0004) == pytest.approx(1.96 * 0.02, rel=1e-3)
    # a single member has no spread to estimate
    assert prediction_band(0.5, 1, 0.0004) == pytest.approx(1.96 * 0.02, rel=1e-3)
    assert prediction_band(0.0, 5) == 0.0
    assert retrain_quantile(math.inf) == pytest.approx(1.95996, abs=1e-5)
