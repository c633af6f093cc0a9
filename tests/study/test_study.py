from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
import torch

from tune_unlearn.cli import main
from tune_unlearn.study.objective import storage_url
from tune_unlearn.study.runner import run_study

from ..helpers import tiny_study


def test_a_second_run_reuses_the_references_and_adds_trials(tmp_path: Path) -> None:
    config = tiny_study(tmp_path)
    first = run_study(config, progress=False)
    assert sorted(first.trained_references) == ["original", "retrain ×5"]  # the default ensemble
    second = run_study(config, add_trials=2, progress=False)
    assert second.trained_references == []  # the cache served both references
    study = optuna.load_study(study_name="tiny", storage=storage_url(config))
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    # a resumed sampler does not replay the first run's suggestions
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params)


def test_outputs_hold_every_complete_trial_with_recomputable_scores(tmp_path: Path) -> None:
    config = tiny_study(tmp_path)
    run = run_study(config, progress=False)
    out = run.output
    document = json.loads((out / "pareto.json").read_text())
    assert document["study"] == "tiny"
    assert document["fixed"] == {"steps": 6, "batch_size": 16}  # what every trial's params ran with
    assert [o["name"] for o in document["objectives"]] == config.objectives
    assert len(document["trials"]) == 3
    numbers_on_front = {t.number for t in run.study.best_trials}
    for trial in document["trials"]:
        assert trial["pareto"] == (trial["number"] in numbers_on_front)
        metrics = trial["metrics"]
        for task in ("digit", "parity", "magnitude", "loop"):
            for model in ("original", "unlearned", "retrain"):
                assert f"score/{model}/val/{task}" in metrics
                assert f"score/{model}/retain/{task}" in metrics
        assert "score/unlearned/forget/digit" in metrics and "score/unlearned/kept/parity" in metrics
        assert trial["values"]["forget_efficacy"] == pytest.approx(metrics["forget_efficacy"])
    assert sum(t["recommended"] for t in document["trials"]) == 1
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 3 and {r["state"] for r in rows} == {"complete"}
    for name in ("original", "retrain", "candidate"):
        state = torch.load(out / "models" / f"{name}.pt", weights_only=True)
        assert "heads.digit.weight" in state
    candidate = json.loads((out / "models" / "candidate.json").read_text())
    recommended = next(t for t in document["trials"] if t["recommended"])
    assert candidate["trial"] == recommended["number"]
    assert candidate["metrics"]["retained_utility"] == pytest.approx(
        recommended["metrics"]["retained_utility"]
    )


def test_a_diverging_configuration_fails_its_trial_and_the_study_goes_on(tmp_path: Path) -> None:
    config = tiny_study(
        tmp_path,
        method={
            "name": "gradient_ascent",
            # The step bound lifted, so that the huge rate diverges (bounded, it would not).
            "fixed": {"steps": 30, "batch_size": 16, "max_step": 1e12},
            "search": {"ascent_lr": {"type": "categorical", "choices": [1e6, 1e-3]}},
        },
        n_trials=6,
    )
    run = run_study(config, progress=False)
    states = {t.number: t.state for t in run.study.trials}
    failed = [t for t in run.study.trials if t.state == optuna.trial.TrialState.FAIL]
    complete = [t for t in run.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(states) == 6 and failed and complete
    for trial in failed:
        assert trial.params["ascent_lr"] == 1e6
        assert "diverged" in trial.user_attrs["fail_reason"]
    document = json.loads((run.output / "pareto.json").read_text())
    assert document["counts"]["fail"] == len(failed)
    assert all("diverged" in t["reason"] for t in document["not_complete"])


def test_the_command_line_runs_a_study_and_prints_the_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_study(tmp_path)
    study_file = tmp_path / "tiny.yaml"
    study_file.write_text(json.dumps(config.model_dump(mode="json")))  # JSON is YAML
    assert main([str(study_file), "--n-trials", "2", "--no-progress", "--output", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "Pareto front:" in out and "recommended" in out
    assert (tmp_path / "cli" / "pareto.json").exists()
    assert main(["report", str(study_file), "--output", str(tmp_path / "cli")]) == 0


def test_run_study_takes_a_method_object_and_a_sampler_object(tmp_path: Path) -> None:
    """Objects as well as names: an unregistered method instance (its values fixed, the file's
    search space on top) and an Optuna sampler."""
    from dataclasses import dataclass
    from typing import ClassVar

    from tune_unlearn import StepGradients, hyperparameter
    from tune_unlearn.methods import METHODS, GradDiff

    @dataclass(kw_only=True)
    class HalfAscent(GradDiff):
        damping: float = hyperparameter(0.5, gt=0.0, le=1.0)
        name: ClassVar[str] = "half_ascent"

        def forget_direction(self, grads: StepGradients, step: int) -> torch.Tensor:
            return grads.forget * self.damping

    assert "half_ascent" not in METHODS.names()
    config = tiny_study(tmp_path, n_trials=2)
    sampler = optuna.samplers.RandomSampler(seed=7)
    run = run_study(
        config, method=HalfAscent(steps=4, batch_size=8, damping=0.25), sampler=sampler, progress=False
    )
    assert run.study.sampler is sampler
    assert len(run.study.trials) == 2 and all(
        set(t.params) == {"ascent_lr", "retain_lr"} for t in run.study.trials
    )
    resolved = (run.output / "study.resolved.yaml").read_text()
    assert "half_ascent" in resolved and "damping: 0.25" in resolved


def test_optuna_s_gp_sampler_finds_its_batched_acquisition_optimiser() -> None:
    """Without ``greenlet`` Optuna's GP falls back to a sequential optimiser that suggests other
    points, so the quickstart (a GP study) would recommend another trial on a machine that
    lacks it (benchmarks/RESULTS.md). It is a declared dependency; this fails if it is dropped."""
    import importlib.util

    assert importlib.util.find_spec("greenlet") is not None
