from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tune_unlearn.scoring.metrics import (
    METRICS,
    MetricContext,
    compute_metrics,
    forget_band,
    mia_auc,
    reference_retained_utility,
    score_key,
    spread_key,
    trainable_vector,
)
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.inputs import score
from tune_unlearn.trial.study_references import LoadedStudy

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
        "retrain_members": 4,
        "forget_size": 100,
        "val_size": 400,
    }
    base.update(changes)
    return MetricContext(**base)  # type: ignore[arg-type]


def metric(name: str, ctx: MetricContext) -> float:
    return METRICS.get(name)().compute(ctx)


# The band by hand: F^r = 0.2 with a seed spread of 0.05 over K = 4 retrains, n = 100 forget
# instances: seed term 0.05²·(1 + 1/4) = 0.003125, sampling term 0.2·0.8/100 = 0.0016, total
# 0.004725; Welch–Satterthwaite ν = 3·(0.004725/0.003125)² = 6.8584, whose t quantile lies
# between the tables' t(0.975; 7) = 2.3646 and t(0.975; 6) = 2.4469: 2.374555.
BAND = 2.374555 * math.sqrt(0.004725)
SPREAD = {**SCORES, spread_key("retrain", "forget", "a"): 0.05}


def with_forget(value: float, original: float = 1.0) -> dict[str, float]:
    return {
        **SPREAD,
        score_key("unlearned", "forget", "a"): value,
        score_key("original", "forget", "a"): original,
    }


def test_the_band_by_hand() -> None:
    band = forget_band(context(scores=SPREAD), "a")
    assert band.band == pytest.approx(0.163224, abs=1e-6)
    assert band.band == pytest.approx(BAND, abs=1e-6)
    assert 2.3646 * math.sqrt(0.004725) < band.band < 2.4469 * math.sqrt(0.004725)
    assert band.reference == 0.2 and band.original_gap == pytest.approx(0.8)
    assert not band.nothing_to_forget


def test_forget_efficacy_inside_the_band_counts_as_forgotten() -> None:
    assert metric("forget_efficacy", context(scores=with_forget(0.3))) == 1.0  # 0.1 < b
    assert metric("forget_efficacy", context(scores=with_forget(0.2 - 0.13))) == 1.0


def test_forget_efficacy_beyond_the_band_in_units_of_the_gap() -> None:
    # |0.5 − 0.2| = 0.3, beyond the band by 0.3 − b, in units of |1.0 − 0.2|
    expected = 1 - (0.3 - BAND) / 0.8
    assert metric("forget_efficacy", context(scores=with_forget(0.5))) == pytest.approx(expected)
    assert expected == pytest.approx(0.829030, abs=1e-6)


def test_forget_efficacy_penalises_over_forgetting_like_under_forgetting() -> None:
    below = metric("forget_efficacy", context(scores=with_forget(0.2 - 0.3)))
    above = metric("forget_efficacy", context(scores=with_forget(0.2 + 0.3)))
    assert below == pytest.approx(above)
    assert below < 1.0
    # Doing nothing (the original's score) leaves the part of the gap inside the band: b / gap.
    assert metric("forget_efficacy", context(scores=with_forget(1.0))) == pytest.approx(BAND / 0.8)


def test_no_knife_edge_when_the_original_sits_inside_the_band() -> None:
    # Original and retrain 0.02 apart, far inside b ≈ 0.163: nothing detectable to forget.
    scores = with_forget(0.22, original=0.22)
    assert forget_band(context(scores=scores), "a").nothing_to_forget
    values = compute_metrics(context(scores=scores))
    assert values["nothing_to_forget/a"] == 1.0 and values["forget_efficacy"] == 1.0
    # Beyond the band, in units of the band (not of the 0.02 gap): a 0.015 overshoot costs
    # about 0.09, where the old 0.01 floor made 0.001 cost 0.1.
    nudged = metric("forget_efficacy", context(scores=with_forget(0.2 + BAND + 0.015, original=0.22)))
    assert nudged == pytest.approx(1 - 0.015 / BAND)


def test_a_single_retrain_has_only_the_sampling_error() -> None:
    band = forget_band(context(scores=SCORES, retrain_members=1), "a")
    assert band.band == pytest.approx(1.959964 * math.sqrt(0.2 * 0.8 / 100))


def test_forget_efficacy_without_retrain_uses_the_originals_score_on_the_groups_peers() -> None:
    # F^r := the original on held-out peers = 0.6, b = 1.96·sqrt(0.6·0.4·(1/100 + 1/50));
    # |0.3 − 0.6| beyond b over |1.0 − 0.6|
    scores = {**SCORES, score_key("original", "peers", "a"): 0.6}
    band = 1.959964 * math.sqrt(0.24 * (1 / 100 + 1 / 50))
    expected = 1 - (0.3 - band) / 0.4
    free = context(scores=scores, has_retrain=False, peers_size=50)
    assert metric("forget_efficacy", free) == pytest.approx(expected)


def test_the_reference_free_stand_in_does_not_move_with_the_unlearned_models_damage() -> None:
    # The old stand-in, the unlearned model's own val score, followed its damage: a model that
    # lost its val accuracy and over-forgot looked perfect. The original's peers score stays.
    damaged = {**SCORES, score_key("unlearned", "val", "a"): 0.3, score_key("original", "peers", "a"): 0.8}
    free = context(scores=damaged, has_retrain=False, peers_size=50)
    assert forget_band(free, "a").reference == pytest.approx(0.8)
    assert metric("forget_efficacy", free) < 0.5


def test_retained_utility_by_hand() -> None:
    # partial: mean(0.6/0.8, 0.81/0.9, 0.5/1.0); full: the first two only
    assert metric("retained_utility", context()) == pytest.approx((0.75 + 0.9 + 0.5) / 3)
    assert metric("retained_utility", context(mode="full")) == pytest.approx((0.75 + 0.9) / 2)


def test_what_honest_deletion_keeps_is_retained_utility_on_the_retrain_s_scores() -> None:
    # val: 0.7/0.8 and 0.9/0.9; kept (partial mode records it): 0.95/1.0
    scores = {**SCORES, score_key("retrain", "kept", "b"): 0.95}
    assert reference_retained_utility(scores) == pytest.approx((0.875 + 1.0 + 0.95) / 3)
    # the forget set's scores do not enter it; without a retrain there is none
    assert reference_retained_utility(SCORES) == pytest.approx((0.875 + 1.0) / 2)
    assert reference_retained_utility({k: v for k, v in SCORES.items() if "/retrain/" not in k}) is None
    # a task the original scores 0 and the retrain does not: no finite figure, so none
    unscored = {**SCORES, score_key("original", "val", "c"): 0.0, score_key("retrain", "val", "c"): 0.2}
    assert reference_retained_utility(unscored) is None


def test_impact_score_by_hand_and_zero_for_a_perfect_class_deletion() -> None:
    # ½·mean(|0.8−0.6|/0.8, |0.9−0.81|/0.9) + ½·|0.2−0.3|/0.8
    assert metric("impact_score", context()) == pytest.approx(0.5 * (0.25 + 0.1) / 2 + 0.5 * 0.125)
    perfect = {
        **SCORES,
        score_key("unlearned", "val", "a"): 0.8,
        score_key("unlearned", "val", "b"): 0.9,
        score_key("retrain", "forget", "a"): 0.0,  # the class is gone from the retrain too
        score_key("unlearned", "forget", "a"): 0.0,
    }
    assert metric("impact_score", context(scores=perfect)) == 0.0


def test_uis_is_the_shift_the_caller_measured() -> None:
    assert metric("uis", context(shift=0.25)) == 0.25


def test_mia_auc_separable_and_indistinguishable() -> None:
    members = np.linspace(0.0, 0.1, 40)
    nonmembers = np.linspace(1.0, 2.0, 40)
    assert mia_auc(members, nonmembers) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    same = mia_auc(rng.exponential(size=400), rng.exponential(size=400))
    assert abs(same - 0.5) < 0.08
    assert math.isnan(mia_auc(np.array([0.1]), nonmembers))
    assert METRICS.get("mia_auc")().objective(0.7) == pytest.approx(0.2)


def test_uis_and_scores_from_a_real_model(tiny_values: LoadedStudy) -> None:
    original = tiny_values.references.original_model()
    unchanged = configuration_run.measure(*tiny_values, original)
    assert unchanged["uis"] == pytest.approx(0.0, abs=1e-7)
    assert unchanged["retained_utility"] == pytest.approx(1.0)
    for key, value in tiny_values.references.scores.items():
        if key.startswith("score/original/"):
            assert unchanged[key.replace("/original/", "/unlearned/")] == pytest.approx(value)
    doubled = tiny_values.references.model_from({k: 2 * v for k, v in original.state_dict().items()})
    assert configuration_run.measure(*tiny_values, doubled)["uis"] == pytest.approx(1.0, rel=1e-5)


def test_uis_leaves_buffers_out() -> None:
    from torch import nn

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    vector = trainable_vector(model)  # type: ignore[arg-type]
    assert len(vector) == 3 * 4 + 4 + 4 + 4  # weights and biases; not running mean/var
    assert len(vector) < sum(v.numel() for v in model.state_dict().values())


def test_the_ensemble_mean_and_spread_are_recorded(tiny_values: LoadedStudy) -> None:
    members = tiny_values.references.retrain_results
    assert len(members) == 5  # the default ensemble
    scores = [score(tiny_values.inputs, "retrain", r)["score/retrain/val/parity"] for r in members]
    recorded = tiny_values.references.scores
    assert recorded["score/retrain/val/parity"] == pytest.approx(np.mean(scores))
    assert recorded["spread/retrain/val/parity"] == pytest.approx(np.std(scores, ddof=1))


def test_every_metric_recomputes_from_the_flat_scores(tiny_values: LoadedStudy) -> None:
    result = configuration_run.run(*tiny_values, {"ascent_lr": 0.01, "retain_lr": 0.05}, seed=3)
    scores = {k: v for k, v in result.metrics.items() if k.startswith("score/")}
    spreads = {k: v for k, v in result.metrics.items() if k.startswith("spread/")}
    ctx = MetricContext(
        scores={**scores, **spreads},
        tasks=tuple(tiny_values.inputs.task_names),
        target_tasks=("digit",),
        mode="partial",
        has_retrain=True,
        retrain_members=5,
        forget_size=len(tiny_values.inputs.sets.forget),
    )
    for name in ("forget_efficacy", "retained_utility", "impact_score"):
        assert METRICS.get(name)().compute(ctx) == pytest.approx(result.metrics[name])


def test_the_guard_and_the_metric_share_one_zero_denominator_rule() -> None:
    """A task the original scores 0 on: 0/0 counts as fully retained, x/0 as infinite; the
    guard's tensor form agrees with the metric's elementwise."""
    import math

    import torch

    from tune_unlearn.scoring.metrics import _ratio, score_ratios

    pairs = [(0.0, 0.0), (0.4, 0.0), (0.3, 0.6), (0.0, 0.5)]
    on_device = score_ratios(torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs]))
    expected = [_ratio(u, o) for u, o in pairs]
    assert expected == [1.0, math.inf, 0.5, 0.0]
    assert on_device.tolist() == pytest.approx(expected)


def test_retain_damage_is_the_worst_task_s_drop_below_the_retrains_on_the_retain_sample() -> None:
    retain = {
        score_key("retrain", "retain", "a"): 0.95,
        score_key("unlearned", "retain", "a"): 0.90,  # 0.05 below the retrains
        score_key("retrain", "retain", "b"): 0.80,
        score_key("unlearned", "retain", "b"): 0.85,  # above them: no damage
    }
    assert metric("retain_damage", context(scores={**SCORES, **retain})) == pytest.approx(0.05)
    assert math.isnan(metric("retain_damage", context(scores={**SCORES, **retain}, has_retrain=False)))


def test_a_reference_free_study_may_not_search_on_retain_damage(tmp_path: Path) -> None:
    from tune_unlearn.config.schema import ConfigError
    from tune_unlearn.config.study_config import parse_study

    from ..helpers import tiny_study

    raw = tiny_study(tmp_path).model_dump(mode="json")
    raw["constraints"] = ["retain_damage <= 0.02"]
    raw["references"] = {"retrain": False}
    with pytest.raises(ConfigError, match="damage beyond what honest retrains score"):
        parse_study(raw)
