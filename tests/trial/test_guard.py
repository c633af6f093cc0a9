from __future__ import annotations

from pathlib import Path

import optuna

from tune_unlearn.study.runner import run_study

from ..helpers import tiny_study

COLLAPSING = {
    "name": "gradient_ascent",
    "fixed": {"steps": 40, "batch_size": 16},
    "search": {"ascent_lr": {"type": "categorical", "choices": [0.5]}},
}


def test_the_guard_prunes_a_collapsing_configuration_and_records_why(tmp_path: Path) -> None:
    guard = {"enabled": True, "floor": 0.8, "every": 5, "sample_size": 64}
    config = tiny_study(tmp_path, method=COLLAPSING, n_trials=2, collapse_guard=guard)
    run = run_study(config, progress=False)
    trials = run.study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    for trial in trials:
        assert "below the floor 0.8" in trial.user_attrs["pruned_reason"]
        step = trial.user_attrs["pruned_at_step"]
        assert step % 5 == 0 and step < 40
        assert trial.user_attrs["steps_saved"] == 40 - step
        assert trial.user_attrs["seconds_saved"] > 0
    assert "pruned by the collapse guard" in (run.output / "report.md").read_text()


def test_without_the_guard_the_same_configuration_runs_to_the_end(tmp_path: Path) -> None:
    config = tiny_study(tmp_path, method=COLLAPSING, n_trials=1, collapse_guard={"enabled": False})
    run = run_study(config, progress=False)
    (trial,) = run.study.trials
    assert trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    assert "pruned_reason" not in trial.user_attrs
