"""The all-in cost of a request, in retrain units, stated in report.md beside the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from tune_unlearn.report.request_cost import request_cost, step_budget
from tune_unlearn.report.trial_record import METRICS, PRUNED_AT_STEP
from tune_unlearn.study.runner import run_study

from ..helpers import tiny_study


def test_report_states_the_all_in_cost_summed_by_hand(tmp_path: Path) -> None:
    config = tiny_study(
        tmp_path, n_trials=3, references={"retrain": {"seeds": 2}, "cache_dir": str(tmp_path / "c")}
    )
    run = run_study(config, progress=False)
    trials = json.loads((run.output / "pareto.json").read_text())["trials"]
    costs = sorted(t["metrics"]["compute_cost"] for t in trials)
    assert costs and all(c > 0 for c in costs)
    median = (
        costs[len(costs) // 2]
        if len(costs) % 2
        else (costs[len(costs) // 2 - 1] + costs[len(costs) // 2]) / 2
    )
    report = (run.output / "report.md").read_text()
    assert "Reference mode: **ensemble (K = 2)**" in report
    assert "| reference models (this request's share) | 2.000 |" in report
    assert f"| complete trials (their `compute_cost`) | {sum(costs):.3f} |" in report
    total = next(line for line in report.splitlines() if line.startswith("| **total**"))
    assert float(total.split("**")[3]) == pytest.approx(2 + sum(costs) + median, abs=2e-3)


def test_the_recovery_attacks_of_the_search_are_counted(tmp_path: Path) -> None:
    config = tiny_study(
        tmp_path,
        n_trials=2,
        objectives=["forget_efficacy", "relearn_recovery"],
        references={"retrain": {"seeds": 3}, "cache_dir": str(tmp_path / "c")},
    )
    run = run_study(config, progress=False)
    trials = json.loads((run.output / "pareto.json").read_text())["trials"]
    attacks = sum(t["metrics"]["robustness_cost"] for t in trials)
    assert attacks > 0
    report = (run.output / "report.md").read_text()
    assert f"| recovery attacks in the search (their `robustness_cost`) | {attacks:.3f} |" in report


def test_check_states_every_reference_mode_s_cost_and_refuses_reference_free_for_a_whole_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny study forgets every 3 (a whole group): reference-free is refused there, with why;
    on a random half of the 3s it costs nothing. The study's own mode is marked."""
    from tune_unlearn.cli import main

    from ..helpers import write_study

    whole = tiny_study(tmp_path, references={"retrain": {"seeds": 3}, "cache_dir": str(tmp_path / "c")})
    assert main(["check", str(write_study(tmp_path, whole, "whole.yaml"))]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert "* ensemble (K = 3): 3; judges every check" in lines
    assert (
        "bank (K = 3, shared by n requests known together): 3 / n, 0.3 at n = 10; judges every check" in lines
    )
    assert any(line.startswith("reference-free: refused: forget removes a whole group") for line in lines)

    half = tiny_study(
        tmp_path,
        forget={"mode": "full", "where": {"digit": 3}, "fraction": 0.5},
        references={"retrain": False, "cache_dir": str(tmp_path / "c")},
    )
    assert main(["check", str(write_study(tmp_path, half, "half.yaml"))]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert "ensemble (K = 5): 5; judges every check" in lines  # not this study's: unmarked
    free = next(line for line in lines if "reference-free:" in line)
    assert free.startswith("* reference-free: 0;") and "not applicable" in free


def test_a_pruned_trial_counts_its_share_of_the_budget_it_ran_under(tmp_path: Path) -> None:
    """Its share of the file's steps, of the method's default where the file leaves them out
    (shrink_perturb: 100), or of its own where the search draws them; times the median complete
    trial's cost (here 0.4)."""
    complete = [
        create_trial(state=TrialState.COMPLETE, value=1.0, user_attrs={METRICS: {"compute_cost": c}})
        for c in (0.2, 0.4, 0.6)
    ]
    at_step_50 = create_trial(state=TrialState.PRUNED, user_attrs={PRUNED_AT_STEP: 50})
    fixed = tiny_study(tmp_path)  # steps: 6, fixed in the file
    assert step_budget(fixed) == 6
    assert request_cost(
        fixed.references, [*complete, at_step_50], step_budget(fixed)
    ).pruned == pytest.approx(0.4)
    default = tiny_study(tmp_path, method={"name": "shrink_perturb"})
    assert step_budget(default) == 100
    cost = request_cost(default.references, [*complete, at_step_50], step_budget(default))
    assert cost.pruned == pytest.approx(0.2)
    searched = tiny_study(
        tmp_path,
        method={"name": "shrink_perturb", "search": {"steps": {"type": "int", "low": 10, "high": 200}}},
    )
    assert step_budget(searched) is None
    own = create_trial(
        state=TrialState.PRUNED,
        params={"steps": 200},
        distributions={"steps": IntDistribution(10, 200)},
        user_attrs={PRUNED_AT_STEP: 50},
    )
    assert request_cost(searched.references, [*complete, own], step_budget(searched)).pruned == pytest.approx(
        0.1
    )
