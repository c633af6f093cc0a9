"""Gate checks as plugins: the base class, the registry, a user's own check, and the needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tune_unlearn.config.schema import ConfigError
from tune_unlearn.hyperparameters import Param
from tune_unlearn.testing import _default_study, check_gate_check, parametrize_with_checks
from tune_unlearn.trial.study_references import load_study_values
from tune_unlearn.validation import (
    CHECKS,
    Candidate,
    CheckInput,
    CheckResult,
    GateCheck,
    ValidationContext,
    load_suite,
    validate,
)
from tune_unlearn.validation._gate_checks import Need


class ForgetCeiling(GateCheck):
    """A user's check: the forget set's score on every target task at most ``max_score``."""

    name = "forget_ceiling"
    parameters: ClassVar[dict[str, Param]] = {"max_score": Param(0.5, ge=0.0, le=1.0)}

    def run(self, given: CheckInput, settings: dict[str, Any]) -> list[CheckResult]:
        tasks = given.ctx.inputs.request.target_tasks
        worst = max(given.metrics[f"score/unlearned/forget/{task}"] for task in tasks)
        status = "pass" if worst <= settings["max_score"] else "fail"
        return [CheckResult(self.name, status, f"forget score {worst:.3f}", worst, settings["max_score"])]


class NeedsItsConfiguration(ForgetCeiling):
    name = "needs_configuration"
    needs: ClassVar[frozenset[Need]] = frozenset({"configuration"})


@parametrize_with_checks([*(CHECKS.get(name) for name in CHECKS.ordered()), ForgetCeiling])
def test_every_built_in_check_and_a_plugin_pass_the_contract(check) -> None:  # type: ignore[no-untyped-def]
    check()


def test_a_check_that_gives_other_results_than_it_declares_is_told_why() -> None:
    class Misnamed(ForgetCeiling):
        name = "misnamed"

        def result_names(self, settings: Any) -> list[str]:
            return ["misnamed/a", "misnamed/b"]

    with pytest.raises(AssertionError, match="not the declared"):
        check_gate_check(Misnamed)


def test_the_built_in_order_is_the_reports_order() -> None:
    assert CHECKS.ordered()[:7] == [
        "forget_quality",
        "forget_score",
        "uis_budget",
        "compute_budget",
        "robustness",
        "relearning",
        "quantization",
    ]


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    CHECKS._load_plugins()
    monkeypatch.setitem(CHECKS._entries, ForgetCeiling.name, ForgetCeiling)
    monkeypatch.setitem(CHECKS._entries, NeedsItsConfiguration.name, NeedsItsConfiguration)


def _suite(tmp_path: Path, **body: Any) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "mine", **body}))
    return path


def test_a_suite_runs_a_registered_plugin_check_by_name(tmp_path: Path, registered: None) -> None:
    experiment = _default_study()
    original = Candidate(experiment.references.original_model(), "original")
    ctx = ValidationContext(*experiment)
    for ceiling, status in ((0.0, "fail"), (1.0, "pass")):  # the original scores in between
        suite = load_suite(_suite(tmp_path, checks={"forget_ceiling": {"max_score": ceiling}}))
        (result,) = validate(ctx, original, suite).results
        assert (result.name, result.status, result.threshold) == ("forget_ceiling", status, ceiling)
        assert result.value is not None and 0.0 < result.value < 1.0
    builtin = load_suite(_suite(tmp_path, uis_budget={}))
    assert [r.name for r in validate(ctx, original, builtin).results] == ["uis_budget"]
    unmet = load_suite(_suite(tmp_path, checks={"needs_configuration": {}}))
    (error,) = validate(ctx, original, unmet).results
    assert error.status == "error" and "needs the candidate's configuration" in error.message


def test_a_suite_naming_a_check_wrongly_is_refused_with_its_path(tmp_path: Path, registered: None) -> None:
    body = {
        "checks": {"forget_cieling": {}, "forget_ceiling": {"max_score": 2.0, "typo": 1}, "uis_budget": {}}
    }
    with pytest.raises(ConfigError) as caught:
        load_suite(_suite(tmp_path, **body))
    paths = {issue.path: issue.message for issue in caught.value.issues}
    assert "forget_ceiling" in paths["checks.forget_cieling"]  # did you mean
    assert "checks.forget_ceiling.max_score" in paths and "checks.forget_ceiling.typo" in paths
    assert "uis_budget" in paths["checks.uis_budget"] and "built-in" in paths["checks.uis_budget"]


def test_robustness_perturbs_every_searched_rate_of_a_loss_defined_method(tmp_path: Path) -> None:
    from tests.helpers import tiny_study
    from tune_unlearn.validation._checks import robustness_check
    from tune_unlearn.validation._suite import RobustnessSpec

    method = {
        "name": "random_label",
        "fixed": {"steps": 4, "batch_size": 16},
        "search": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
    }
    experiment = load_study_values(tiny_study(tmp_path, method=method))
    model = experiment.references.original_model()
    candidate = Candidate(model, "c", params={"lr": 0.01}, seed=0)
    result = robustness_check(ValidationContext(*experiment), candidate, RobustnessSpec(seeds=1))
    assert result.details["perturbed_rates"] == ["lr"]  # before: only ascent_lr/retain_lr, so none
    assert len(result.details["outcomes"]["forget_efficacy"]) == 1 + 2 + 1  # a seed, lr ×0.8 and ×1.2, itself
    assert "rates perturbed: lr" in result.message


def test_a_check_the_reference_mode_cannot_judge_is_not_applicable_and_fails_the_gate_closed(
    tmp_path: Path,
) -> None:
    """Reference-free (a random share of a group: a request it accepts) has no retrains for the
    attacks to compare with: they are not applicable, with the reason and the modes that judge
    them, a skipped JUnit case, and the verdict fails even where every judged check passes."""
    import xml.etree.ElementTree as ET

    from tune_unlearn.config.study_config import parse_study
    from tune_unlearn.validation import write_reports

    raw = {
        "name": "free",
        "problem": {"name": "digits", "params": {"hidden": 8, "epochs": 2}},
        "forget": {"mode": "full", "where": {"digit": 3}, "fraction": 0.5},
        "method": {"name": "graddiff"},
        "references": {"cache_dir": str(tmp_path / "cache"), "retrain": False},
        "tracking": {"enabled": False},
        "device": "cpu",
    }
    ctx = ValidationContext(*load_study_values(parse_study(raw)))
    original = Candidate(ctx.references.original_model(), "original")
    suite = load_suite(_suite(tmp_path, uis_budget={"max_uis": 1.0}, attacks={"quantization": {"bits": [8]}}))
    report = validate(ctx, original, suite)
    statuses = {r.name: r.status for r in report.results}
    assert statuses == {"uis_budget": "pass", "attack/quantization_8bit": "skipped"}
    (attack,) = report.unjudged
    assert "not applicable in reference mode reference-free" in attack.message and "bank" in attack.message
    assert not report.passed and report.verdict == "fail"
    write_reports(report, tmp_path / "gate.json", tmp_path / "gate.xml", tmp_path / "gate.md")
    junit = ET.parse(tmp_path / "gate.xml").getroot()
    skipped = junit.find(".//testcase[@name='attack/quantization_8bit']/skipped")
    assert skipped is not None and "not applicable" in skipped.attrib["message"]
    assert "Not judged in this reference mode" in (tmp_path / "gate.md").read_text()
