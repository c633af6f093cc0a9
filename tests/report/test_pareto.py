from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution

from tune_unlearn.config.study_config import RecommendConfig
from tune_unlearn.report.pareto import HypervolumeBox, recommend
from tune_unlearn.report.summary import summarise

from ..helpers import tiny_study

OBJECTIVES = ["forget_efficacy", "retained_utility"]
DIRECTIONS = ["maximize", "maximize"]


def fixed_study(points: dict[str, tuple[float, float]], infeasible: set[str] = frozenset()) -> optuna.Study:
    """A study holding one complete trial per point, in the given order."""
    study = optuna.create_study(directions=DIRECTIONS)
    for i, (name, values) in enumerate(points.items()):
        study.add_trial(
            optuna.trial.create_trial(
                values=list(values),
                params={"x": float(i)},
                distributions={"x": FloatDistribution(0.0, 10.0)},
                user_attrs={"name": name, "metrics": dict(zip(OBJECTIVES, values, strict=True))},
                system_attrs={"constraints:retained_utility >= 0.5": 1.0 if name in infeasible else -1.0},
            )
        )
    return study


# Normalised over the front (0 = best): P (0, 1), Q (1, 0), D (0.5, 0.5), E (0.1, 0.8).
POINTS = {"P": (1.0, 0.80), "Q": (0.5, 1.0), "D": (0.75, 0.90), "E": (0.95, 0.84)}


def chosen(rule: RecommendConfig) -> str:
    study = fixed_study(POINTS)
    trial = recommend(study.best_trials, DIRECTIONS, rule, OBJECTIVES)
    assert trial is not None
    return str(trial.user_attrs["name"])


def test_ideal_point_picks_the_smallest_euclidean_distance() -> None:
    assert chosen(RecommendConfig()) == "D"  # √0.5 ≈ 0.71 beats E's √0.65 ≈ 0.81


def test_knee_picks_the_point_farthest_below_the_extremes_hyperplane() -> None:
    assert chosen(RecommendConfig(rule="knee")) == "E"  # sum 0.9 beats D's 1.0


def test_lexicographic_walks_the_order_within_tolerances() -> None:
    order = ["retained_utility", "forget_efficacy"]
    assert chosen(RecommendConfig(rule="lexicographic", order=order)) == "Q"
    loose = RecommendConfig(rule="lexicographic", order=order, tolerances={"retained_utility": 0.15})
    assert chosen(loose) == "D"  # Q and D are within 0.15 of the best utility; D forgets better


def test_an_infeasible_trial_is_never_on_the_front_nor_recommended(tmp_path: Path) -> None:
    # P would dominate everything it touches on efficacy, but violates the constraint
    study = fixed_study({"P": (1.0, 1.0), "D": (0.75, 0.90), "E": (0.95, 0.84)}, infeasible={"P"})
    config = tiny_study(tmp_path, objectives=OBJECTIVES, constraints=["retained_utility >= 0.5"])
    summary = summarise(study, config)
    names = {t.user_attrs["name"] for t in summary.front}
    assert names == {"D", "E"}
    assert summary.recommended is not None and summary.recommended.user_attrs["name"] != "P"


def test_a_study_with_nothing_feasible_says_so(tmp_path: Path) -> None:
    from tune_unlearn.report.markdown import render_report
    from tune_unlearn.report.outputs import pareto_table

    study = fixed_study({"P": (1.0, 1.0)}, infeasible={"P"})
    config = tiny_study(tmp_path, objectives=OBJECTIVES, constraints=["retained_utility >= 0.5"])
    summary = summarise(study, config)
    assert summary.front == [] and summary.recommended is None
    assert "no feasible trial" in pareto_table(summary)
    assert "no trial is feasible under the constraints" in render_report(summary)


def test_hypervolume_by_hand() -> None:
    box = HypervolumeBox.for_objectives(["forget_efficacy", "uis"], measured_worst=1.0)
    # normalised (0, 0.5) and (0.5, 0): two 0.5-area rectangles overlapping on 0.25
    assert box.hypervolume(np.array([[1.0, 0.5], [0.5, 0.0]])) == pytest.approx(0.75)
    assert box.hypervolume(np.array([[1.0, 0.0]])) == pytest.approx(1.0)
    assert box.hypervolume(np.empty((0, 2))) == 0.0
    seconds = HypervolumeBox.for_objectives(["gpu_seconds"], measured_worst=4.0)
    assert seconds.hypervolume(np.array([[1.0]])) == pytest.approx(0.75)  # a quarter of retraining
    assert seconds.hypervolume(np.array([[8.0]])) == 0.0  # dearer than retraining: worthless


def test_in_the_hypervolume_box_timing_noise_does_not_outweigh_a_collapse() -> None:
    objectives = ["retained_utility", "gpu_seconds"]
    directions = ["maximize", "minimize"]
    study = optuna.create_study(directions=directions)
    # Same step budget: 11.1 s against 12.3 s is noise; utility 0.81 against 0.96 is not.
    for name, values in {"collapsed": (0.81, 11.1), "healthy": (0.96, 12.3)}.items():
        study.add_trial(
            optuna.trial.create_trial(
                values=list(values),
                params={"x": 0.0},
                distributions={"x": FloatDistribution(0.0, 1.0)},
                user_attrs={"name": name},
            )
        )
    box = HypervolumeBox.for_objectives(objectives, measured_worst=74.0)  # the retrain's seconds
    for rule in (RecommendConfig(), RecommendConfig(rule="knee")):
        in_box = recommend(study.best_trials, directions, rule, objectives, box)
        over_front = recommend(study.best_trials, directions, rule, objectives)
        assert in_box is not None and in_box.user_attrs["name"] == "healthy"
        # Rescaled over the front, each is best on one objective: a tie, broken by trial order.
        assert over_front is not None and over_front.user_attrs["name"] == "collapsed"
