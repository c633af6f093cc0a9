from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

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


def test_on_collapse_infeasible_measures_the_collapsed_model_and_marks_it_infeasible(tmp_path: Path) -> None:
    """The trial a collapse stops completes, measured as it stood, with the ``collapse_guard``
    constraint violated, so that a sampler reading constraints learns the region; a trial that
    did not collapse carries the same constraint, met."""
    guard = {"enabled": True, "floor": 0.8, "every": 5, "sample_size": 64, "on_collapse": "infeasible"}
    method = {**COLLAPSING, "search": {"ascent_lr": {"type": "categorical", "choices": [0.5, 1e-6]}}}
    config = tiny_study(tmp_path, method=method, n_trials=4, collapse_guard=guard)
    run = run_study(config, progress=False)
    trials = run.study.trials
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    collapsed = [t for t in trials if t.params["ascent_lr"] == 0.5]
    mild = [t for t in trials if t.params["ascent_lr"] == 1e-6]
    assert collapsed and mild
    for trial in collapsed:
        step = trial.user_attrs["collapsed_at_step"]
        assert step % 5 == 0 and step < 40
        assert "below the floor 0.8" in trial.user_attrs["collapsed"]
        assert "pruned_reason" not in trial.user_attrs
        assert trial.user_attrs["steps_saved"] == 40 - step
        (violation,) = trial.constraints.values()
        assert violation > 0  # floor − the guard's utility where it stopped
        assert trial.user_attrs["feasible"] is False
        # charged for the steps it ran, not the budget
        ran = trial.user_attrs["metrics"]["compute_cost"]
        full = mild[0].user_attrs["metrics"]["compute_cost"]
        assert ran == pytest.approx(full * step / 40, rel=1e-6)
    for trial in mild:
        assert "collapsed" not in trial.user_attrs
        (violation,) = trial.constraints.values()
        assert violation <= 0
    document = json.loads((run.output / "pareto.json").read_text())
    assert document["constraints"] == ["collapse_guard"]
    assert document["collapse_guard"]["collapsed_infeasible"] == len(collapsed)
    entries = {e["number"]: e for e in document["trials"]}
    assert all(entries[t.number]["feasible"] is False for t in collapsed)
    assert all(not entries[t.number]["pareto"] for t in collapsed)
    assert "stopped by the collapse guard and measured" in (run.output / "report.md").read_text()
