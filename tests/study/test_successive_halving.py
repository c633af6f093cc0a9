"""Successive halving over the step budget: the rungs, the rung score, the ASHA rule, and a
study that prunes with it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tune_unlearn.config.study_config import Constraint
from tune_unlearn.report import trial_record as record
from tune_unlearn.report.request_cost import request_cost
from tune_unlearn.report.trial_record import RUNG_SCORES
from tune_unlearn.study.runner import run_study
from tune_unlearn.study.successive_halving import rung_score, rung_steps, survives

from ..helpers import tiny_study


def test_rungs_sit_at_the_budget_divided_by_powers_of_the_reduction_on_the_monitoring_period() -> None:
    assert rung_steps(60, every=10, reduction=3, rungs=2) == [10, 20]  # 6.7 → 10, 20 → 20
    assert rung_steps(100, every=5, reduction=3, rungs=3) == [5, 15, 35]  # 3.7, 11.1, 33.3 rounded up
    assert rung_steps(100, every=1, reduction=2, rungs=1) == [50]
    assert rung_steps(10, every=10, reduction=3, rungs=2) == []  # no rung below the budget
    assert rung_steps(12, every=4, reduction=3, rungs=3) == [4]  # 0.4, 1.3, 4 → one rung
    # a method not monitored before step 50 (shrink_perturb's monitor_from 0.5 of 100 steps)
    assert rung_steps(100, every=10, reduction=2, rungs=2, first=50) == [50]  # 30 dropped
    assert rung_steps(100, every=5, reduction=3, rungs=3, first=50) == []


def test_the_rung_score_is_the_violation_then_the_distance_to_the_ideal_point() -> None:
    constraints = [
        Constraint(metric="forget_efficacy", op=">=", bound=0.9),
        Constraint(metric="relearn_recovery", op="<=", bound=0.1),
    ]
    metrics = {"forget_efficacy": 0.6, "retained_utility": 0.8, "uis": 0.3, "compute_cost": float("nan")}
    violation, distance = rung_score(
        metrics, ["forget_efficacy", "retained_utility", "uis", "compute_cost"], constraints
    )
    # 0.9 − 0.6 violated; relearn_recovery not measured at a rung; compute_cost neither
    assert violation == pytest.approx(0.3)
    # the box maps efficacy and utility 1 → 0 and uis 0 → 0: (0.4, 0.2, 0.3)
    assert distance == pytest.approx((0.4**2 + 0.2**2 + 0.3**2) ** 0.5)
    assert rung_score({"forget_efficacy": 0.95}, ["forget_efficacy"], constraints) == pytest.approx(
        (0.0, 0.05)
    )


def test_a_trial_survives_a_rung_only_among_the_best_share_of_those_that_reached_it() -> None:
    others = [(0.0, 0.1), (0.0, 0.3), (0.2, 0.0)]
    # four reached the rung, ⌈4/3⌉ = 2 go on: one score is better than (0, 0.2), so it goes on
    assert survives((0.0, 0.2), others, reduction=3) == (True, 4, 2)
    # a violation outranks any distance: (0, 0.1) and (0, 0.3) are both better than (0.1, 0)
    assert survives((0.1, 0.0), others, reduction=3) == (False, 4, 2)
    # a tie goes to the trial being judged
    assert survives((0.0, 0.1), [(0.0, 0.1), (0.0, 0.1), (0.0, 0.05)], reduction=2)[0]
    # fewer than `reduction` trials at the rung: no judgement yet
    assert survives((9.0, 9.0), [(0.0, 0.0)], reduction=3) == (True, 2, 2)


def test_a_study_with_successive_halving_prunes_at_the_rung_and_counts_the_steps_run(tmp_path: Path) -> None:
    config = tiny_study(
        tmp_path,
        method={
            "name": "graddiff",
            "fixed": {"steps": 8, "batch_size": 16},
            "search": {
                "ascent_lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                "retain_lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
            },
        },
        collapse_guard={"every": 4},
        successive_halving={"reduction": 2, "rungs": 1},
        constraints=["forget_efficacy >= 0.9"],
        n_trials=8,
    )
    run = run_study(config, progress=False)
    trials = run.study.trials
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and complete
    for trial in trials:  # every trial was scored at its one rung, step 4 of 8
        assert set(trial.user_attrs[RUNG_SCORES]) == {"4"}
    for trial in pruned:
        assert trial.user_attrs[record.PRUNED_AT_STEP] == 4
        assert trial.user_attrs[record.STEPS_SAVED] == 4
        assert "successive halving at step 4" in trial.user_attrs[record.PRUNED_REASON]
        # the ASHA rule held when it was judged: not among the best half of those before it
        own = tuple(trial.user_attrs[RUNG_SCORES]["4"])
        before = [tuple(t.user_attrs[RUNG_SCORES]["4"]) for t in trials if t.number < trial.number]
        assert not survives(own, before, 2)[0]  # type: ignore[arg-type]
    # the all-in cost charges a pruned trial half of a complete one's compute
    cost = request_cost(config.references, trials, 8)
    typical = complete[0].user_attrs[record.METRICS]["compute_cost"]
    assert cost.pruned == pytest.approx(len(pruned) * typical * 0.5, rel=1e-6)


def test_check_says_where_the_rungs_are(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tune_unlearn.cli import main

    from ..helpers import write_study

    config = tiny_study(
        tmp_path,
        method={"name": "graddiff", "fixed": {"steps": 60, "batch_size": 16}, "search": {}},
        successive_halving={"reduction": 3, "rungs": 2},
    )
    assert main(["check", str(write_study(tmp_path, config))]) == 0
    assert "successive halving: trials judged at steps 10, 20 of 60; the best 1/3" in capsys.readouterr().out


def test_check_names_the_rungs_a_repairing_method_is_not_judged_at(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """shrink_perturb's models are judged from half its budget on (``monitor_from``): a rung
    before that is never reached, and check says so rather than list it."""
    from tune_unlearn.cli import main

    from ..helpers import write_study

    config = tiny_study(
        tmp_path,
        method={"name": "shrink_perturb", "fixed": {"steps": 100, "batch_size": 16}},
        successive_halving={"reduction": 2, "rungs": 2},
    )
    assert main(["check", str(write_study(tmp_path, config))]) == 0
    assert (
        "successive halving: trials judged at steps 50 of 100 (step(s) 30 dropped: shrink_perturb is "
        "not judged before step 50, its monitor_from 0.5 of the budget); the best 1/2"
    ) in capsys.readouterr().out


def test_a_bad_successive_halving_section_is_refused_with_its_path(tmp_path: Path) -> None:
    from tune_unlearn.config.schema import ConfigError

    with pytest.raises(ConfigError, match=r"successive_halving\.reduction: Input should be greater"):
        tiny_study(tmp_path, successive_halving={"reduction": 1})
    with pytest.raises(ConfigError, match=r"successive_halving\.eta"):
        tiny_study(tmp_path, successive_halving={"eta": 3})
