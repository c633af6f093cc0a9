from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution

from tune_unlearn.report.importances import param_importances


def _study(spans: list[tuple[float, float]]) -> optuna.Study:
    """Trials of ``y = x²`` with ``x`` drawn from each span in turn (and a noise parameter)."""
    study = optuna.create_study(directions=["minimize"])
    for index, (low, high) in enumerate(spans * 6):
        x = low + (high - low) * ((index * 7) % 11) / 10
        noise = ((index * 5) % 13) / 13
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": x, "noise": noise},
                distributions={"x": FloatDistribution(low, high), "noise": FloatDistribution(0.0, 1.0)},
                values=[x * x],
            )
        )
    return study


def test_importances_name_the_parameter_the_objective_follows() -> None:
    study = _study([(0.0, 1.0)])
    importances = param_importances(study, ["y"], study.trials)["y"]
    assert importances["x"] > importances["noise"]


def test_a_study_resumed_with_other_bounds_is_attributed_over_its_latest_space() -> None:
    """fANOVA refuses trials from two spaces ("dynamic search spaces"); a study resumed with
    other bounds still gets importances, over the trials of the bounds it runs with now."""
    study = _study([(0.0, 1.0), (0.0, 2.0)])
    with_both = param_importances(study, ["y"], study.trials)["y"]
    latest = optuna.create_study(directions=["minimize"])
    latest.add_trials([t for t in study.trials if t.distributions["x"].high == 2.0])
    assert with_both == param_importances(latest, ["y"], latest.trials)["y"]
    assert with_both["x"] > with_both["noise"]
