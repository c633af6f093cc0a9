"""The recovery attacks: one implementation behind the gate's ``attack/*`` checks and the
``relearn_recovery`` / ``quantization_recovery`` metrics a study may search on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tune_unlearn.cli import main
from tune_unlearn.config.schema import ConfigError
from tune_unlearn.config.study_config import parse_study
from tune_unlearn.references.attacks import RecoveryMeasures
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.inputs import load_inputs
from tune_unlearn.trial.study_references import LoadedStudy, load_study_values
from tune_unlearn.validation import CheckResult, ValidationContext
from tune_unlearn.validation._attacks import quantization_checks, relearning_checks

from ..helpers import tiny_study

PARAMS = {"ascent_lr": 0.004, "retain_lr": 0.05}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> LoadedStudy:
    tmp = tmp_path_factory.mktemp("attacks")
    config = tiny_study(
        tmp,
        objectives=["forget_efficacy", "relearn_recovery", "quantization_recovery"],
        references={"retrain": {"seeds": 3}, "cache_dir": str(tmp / "cache")},
    )
    return load_study_values(config)


@pytest.fixture(scope="module")
def recovery(experiment: LoadedStudy) -> RecoveryMeasures:
    """The study's recovery attacks, as a study process holds them: one for every trial."""
    return configuration_run.recovery_measures(*experiment)


def test_a_trial_metric_is_the_gate_checks_excess(
    experiment: LoadedStudy, recovery: RecoveryMeasures
) -> None:
    """``relearn_recovery`` is the worse relearning check's value minus its seed band, and
    ``quantization_recovery`` the worse bit width's: a constraint ``≤ margin`` on the metric
    asks what the check asks."""
    result = configuration_run.run(*experiment, PARAMS, seed=0, recovery=recovery)
    ctx = ValidationContext(*experiment)
    evaluation = experiment.inputs.config.evaluation
    relearning = relearning_checks(ctx, result.model, evaluation.relearning)
    quantization = quantization_checks(ctx, result.model, evaluation.quantization)
    assert [c.name for c in relearning] == ["attack/relearn_forget", "attack/relearn_retain"]

    def worst_excess(checks: list[CheckResult]) -> float:
        return max(float(c.value) - float(c.details["seed_band"]) for c in checks)

    assert result.metrics["relearn_recovery"] == pytest.approx(worst_excess(relearning), abs=1e-9)
    assert result.metrics["quantization_recovery"] == pytest.approx(worst_excess(quantization), abs=1e-9)

    # And where the figure is far from zero: a class suppressed in the head comes back.
    suppressed = experiment.references.original_model()
    with torch.no_grad():
        suppressed.heads["digit"].bias[3] -= 3.0
    measured, _ = recovery.measure(suppressed, ["relearn_recovery"])
    checks = relearning_checks(ctx, suppressed, evaluation.relearning)
    assert worst_excess(checks) > 0.5
    assert measured["relearn_recovery"] == pytest.approx(worst_excess(checks), abs=1e-9)


def test_the_attack_compute_is_counted_and_the_retrains_side_once(tmp_path: Path) -> None:
    config = tiny_study(
        tmp_path,
        objectives=["forget_efficacy", "relearn_recovery"],
        references={"retrain": {"seeds": 3}, "cache_dir": str(tmp_path / "cache")},
    )
    experiment = load_study_values(config)
    recovery = configuration_run.recovery_measures(*experiment)
    first = configuration_run.run(*experiment, PARAMS, seed=0, recovery=recovery).metrics["robustness_cost"]
    second = configuration_run.run(*experiment, PARAMS, seed=1, recovery=recovery).metrics["robustness_cost"]
    attack = recovery.relearning
    spec = config.evaluation.relearning
    unit = experiment.inputs.retrain_sample_gradients
    candidate = sum(attack.steps(v) * len(s) for v, s in attack.samples.items())
    honest = 2 * 3 * spec.steps * spec.sample_size  # two variants, three retrains, every step
    assert second == pytest.approx(candidate / unit)
    assert first == pytest.approx((candidate + honest) / unit)
    assert "quantization" not in recovery.__dict__  # not named: not built


def test_suppressed_knowledge_scores_a_high_recovery_and_a_retrain_none(
    experiment: LoadedStudy, recovery: RecoveryMeasures
) -> None:
    """The original with the 3s pushed down in the digit head looks forgotten (this tiny
    model scores 0 on them), and ten steps on sixteen 3s bring them back; a retrain of the
    ensemble comes back no further than its peers."""
    original = experiment.references.original_model()
    with torch.no_grad():
        original.heads["digit"].bias[3] -= 3.0
    assert recovery.ground.forget_score(original, recovery.ground.forget) == 0.0
    names = ["relearn_recovery"]
    suppressed, _ = recovery.measure(original, names)
    honest, _ = recovery.measure(recovery.ground.retrains[0], names)
    margin = experiment.inputs.config.evaluation.relearning.margin
    assert suppressed["relearn_recovery"] > margin
    assert honest["relearn_recovery"] <= margin


def test_a_recovery_metric_without_retrains_is_refused_before_anything_runs(tmp_path: Path) -> None:
    raw = tiny_study(tmp_path).model_dump(mode="json")
    raw["objectives"] = ["forget_efficacy", "relearn_recovery"]
    raw["references"] = {"retrain": False}
    with pytest.raises(ConfigError) as info:
        parse_study(raw)
    messages = " ".join(issue.message for issue in info.value.issues)
    assert "reference-free mode cannot judge it" in messages
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 2
    assert main([str(path)]) == 2
    assert not (tmp_path / "out").exists()


def test_an_attack_sample_as_large_as_the_forget_set_is_refused_before_any_trial(tmp_path: Path) -> None:
    raw = tiny_study(tmp_path).model_dump(mode="json")
    raw["objectives"] = ["forget_efficacy", "relearn_recovery"]
    raw["evaluation"] = {"relearning": {"sample_size": 100_000}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 2
    assert main([str(path)]) == 2
    assert not (tmp_path / "out").exists()


def test_check_states_what_the_attack_costs_a_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_study(
        tmp_path,
        objectives=["forget_efficacy", "relearn_recovery"],
        references={"retrain": {"seeds": 3}, "cache_dir": str(tmp_path / "cache")},
    )
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert main(["check", str(path)]) == 0
    unit = load_inputs(config).retrain_sample_gradients
    per_trial, once = 2 * 10 * 16 / unit, 3 * 2 * 10 * 16 / unit  # release.yaml's defaults, K = 3
    assert (
        f"relearn_recovery: at most {per_trial:.3g} retrain(s) of attack per trial, "
        f"and {once:.3g} once for the retrains' side"
    ) in capsys.readouterr().out


def test_the_relearning_attack_fine_tunes_at_the_problem_s_rate_unless_its_spec_names_one(
    experiment: LoadedStudy,
) -> None:
    """The attack's default rate is ``Problem.finetune_lr``: the recipe's for digits, a tenth
    of the training rate for scenes (whose training rate wrecks a trained network in one step)."""
    from tune_unlearn.problems import ScenesProblem

    inputs, references = experiment
    assert inputs.problem.finetune_lr() == inputs.problem.recipe().lr
    ground = configuration_run.attack_ground(
        inputs, references, original=references.original_model(), retrains=[]
    )
    assert ground.recipe_lr == inputs.problem.finetune_lr()
    scenes = ScenesProblem(num_samples=20, image_size=8, channels=4)
    assert scenes.finetune_lr() == pytest.approx(scenes.recipe().lr / 10)
