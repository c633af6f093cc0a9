from __future__ import annotations

import math

import numpy as np
import pytest

from tune_unlearn.experiment import Experiment
from tune_unlearn.metrics import METRICS, MetricContext, mia_auc, score_key

SCORES = {
    score_key("original", "val", "a"): 0.8,
    score_key("original", "val", "b"): 0.9,
    score_key("unlearned", "val", "a"): 0.6,
    score_key("unlearned", "val", "b"): 0.81,
    score_key("retrain", "val", "a"): 0.7,
    score_key("retrain", "val", "b"): 0.9,
    score_key("original", "forget", "a"): 1.0,
    score_key("unlearned", "forget", "a"): 0.3,
    score_key("retrain", "forget", "a"): 0.2,
    score_key("original", "kept", "b"): 1.0,
    score_key("unlearned", "kept", "b"): 0.5,
}


def context(**changes: object) -> MetricContext:
    base: dict[str, object] = {
        "scores": SCORES,
        "tasks": ("a", "b"),
        "target_tasks": ("a",),
        "mode": "partial",
        "has_retrain": True,
    }
    base.update(changes)
    return MetricContext(**base)  # type: ignore[arg-type]


def metric(name: str, ctx: MetricContext) -> float:
    return METRICS.get(name)().compute(ctx)


def test_forget_efficacy_by_hand() -> None:
    # 1 − |0.3 − 0.2| / max(|1.0 − 0.2|, 0.01)
    assert metric("forget_efficacy", context()) == pytest.approx(0.875)


def test_forget_efficacy_penalises_over_forgetting() -> None:
    over = {**SCORES, score_key("unlearned", "forget", "a"): 0.0}
    # below the retrain score by 0.2: 1 − 0.2 / 0.8
    assert metric("forget_efficacy", context(scores=over)) == pytest.approx(0.75)
    far = {**SCORES, score_key("unlearned", "forget", "a"): 1.0}
    assert metric("forget_efficacy", context(scores=far)) == 0.0


def test_forget_efficacy_without_retrain_uses_the_unlearned_val_score() -> None:
    # F^r := U_a = 0.6 → 1 − |0.3 − 0.6| / |1.0 − 0.6|
    assert metric("forget_efficacy", context(has_retrain=False)) == pytest.approx(0.25)


def test_retained_utility_by_hand() -> None:
    # partial: mean(0.6/0.8, 0.81/0.9, 0.5/1.0); full: the first two only
    assert metric("retained_utility", context()) == pytest.approx((0.75 + 0.9 + 0.5) / 3)
    assert metric("retained_utility", context(mode="full")) == pytest.approx((0.75 + 0.9) / 2)


def test_uis_by_hand() -> None:
    # ½·mean(|0.8−0.6|/0.8, |0.9−0.81|/0.9) + ½·|0.8−0.3|/0.8
    assert metric("uis", context()) == pytest.approx(0.5 * (0.25 + 0.1) / 2 + 0.5 * 0.625)


def test_mia_auc_separable_and_indistinguishable() -> None:
    members = np.linspace(0.0, 0.1, 40)
    nonmembers = np.linspace(1.0, 2.0, 40)
    assert mia_auc(members, nonmembers) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    same = mia_auc(rng.exponential(size=400), rng.exponential(size=400))
    assert abs(same - 0.5) < 0.08
    assert math.isnan(mia_auc(np.array([0.1]), nonmembers))
    assert METRICS.get("mia_auc")().objective(0.7) == pytest.approx(0.2)


def test_param_shift_and_scores_from_a_real_model(tiny_experiment: Experiment) -> None:
    original = tiny_experiment.model_from(tiny_experiment.references["original"].state_dict)
    unchanged = tiny_experiment.measure(original)
    assert unchanged["param_shift"] == pytest.approx(0.0, abs=1e-7)
    assert unchanged["retained_utility"] == pytest.approx(1.0)
    for key, value in tiny_experiment.reference_scores.items():
        if key.startswith("score/original/"):
            assert unchanged[key.replace("/original/", "/unlearned/")] == pytest.approx(value)
    doubled = tiny_experiment.model_from({k: 2 * v for k, v in original.state_dict().items()})
    assert tiny_experiment.measure(doubled)["param_shift"] == pytest.approx(1.0, rel=1e-5)


def test_every_metric_recomputes_from_the_flat_scores(tiny_experiment: Experiment) -> None:
    result = tiny_experiment.run({"ascent_lr": 0.01, "retain_lr": 0.05}, seed=3)
    scores = {k: v for k, v in result.metrics.items() if k.startswith("score/")}
    ctx = MetricContext(
        scores=scores,
        tasks=tuple(tiny_experiment.task_names),
        target_tasks=("digit",),
        mode="partial",
        has_retrain=True,
    )
    for name in ("forget_efficacy", "retained_utility", "uis"):
        assert METRICS.get(name)().compute(ctx) == pytest.approx(result.metrics[name])
