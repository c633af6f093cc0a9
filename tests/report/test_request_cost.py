"""The all-in cost of a request, in retrain units, stated in report.md beside the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
