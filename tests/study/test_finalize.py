"""The gate in the loop: the recommendation is the first front trial, in the rule's order, that
passes the study's validation suite; none passing recommends nothing, and says why."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from tune_unlearn.config.study_config import StudyConfig
from tune_unlearn.report.summary import StudySummary, summarise
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.study.finalize import finalize
from tune_unlearn.study.runner import run_study
from tune_unlearn.trial.study_references import load_study_values

from ..helpers import tiny_study


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, session_tmp: Path) -> tuple[Path, optuna.Study]:
    """A finished study with no suite, whose front the rule orders (seed 1: three trials).
    References from the session's cache: the tiny study's are trained once per test run."""
    tmp = tmp_path_factory.mktemp("gated")
    (session_tmp / "cache").mkdir(exist_ok=True)
    (tmp / "cache").symlink_to(session_tmp / "cache", target_is_directory=True)
    return tmp, run_study(study_config(tmp), progress=False).study


def study_config(tmp: Path, n_trials: int = 6, **more: object) -> StudyConfig:
    return tiny_study(
        tmp,
        n_trials=n_trials,
        sampler={"name": "random", "seed": 1},
        objectives=["forget_efficacy", "retained_utility"],
        **more,
    )


def uis(trial: optuna.trial.FrozenTrial) -> float:
    value = TrialRecord.of(trial).metric("uis")
    assert value is not None
    return value


def finalize_with(tmp: Path, study: optuna.Study, max_uis: float, name: str) -> tuple[StudySummary, Path]:
    """Finalize the study again, now with a suite whose one check is a UIS budget."""
    suite = tmp / f"{name}.yaml"
    suite.write_text(yaml.safe_dump({"name": name, "uis_budget": {"max_uis": max_uis}}))
    config = study_config(tmp, validation={"suite": str(suite)})
    return finalize(study, *load_study_values(config), None), config.output_dir()


def test_the_first_front_trial_that_passes_the_suite_is_recommended(
    finished: tuple[Path, optuna.Study],
) -> None:
    tmp, study = finished
    ranked = summarise(study, study_config(tmp)).ranked
    assert len(ranked) >= 2 and uis(ranked[1]) < uis(ranked[0])  # so a budget can split them
    first, second = ranked[0].number, ranked[1].number
    summary, output = finalize_with(tmp, study, (uis(ranked[0]) + uis(ranked[1])) / 2, "split")

    assert summary.recommended is not None and summary.recommended.number == second
    assert f"trial {first} fails it (uis_budget)" in summary.recommendation_note
    document = json.loads((output / "pareto.json").read_text())
    assert document["recommended"] == second
    verdicts = {t["number"]: t["validation"] for t in document["trials"] if t["validation"]}
    assert verdicts[first]["passed"] is False and verdicts[second]["passed"] is True
    assert set(verdicts) == {first, second}  # validated in the rule's order, until one passed
    sidecar = json.loads((output / "models" / "candidate.json").read_text())
    assert sidecar["trial"] == second
    rows = (output / "trials.csv").read_text().splitlines()
    assert rows[0].split(",")[5] == "validation"
    assert "trial" in (output / "report.md").read_text() and "fails it" in (output / "report.md").read_text()


def test_nothing_is_recommended_when_no_front_trial_passes(finished: tuple[Path, optuna.Study]) -> None:
    tmp, study = finished
    summary, output = finalize_with(tmp, study, 1e-9, "strict")
    assert summary.recommended is None
    note = summary.recommendation_note
    assert note.startswith("no configuration is recommended: no front trial passes the validation suite")
    front = summary.ranked
    assert all(f"trial {t.number} fails it (uis_budget)" in note for t in front)
    document = json.loads((output / "pareto.json").read_text())
    assert document["recommended"] is None and document["recommendation_note"] == note
    assert not (output / "models" / "candidate.pt").exists()  # the earlier candidate is gone
    assert "no front trial passes" in (output / "report.md").read_text()


def test_a_finished_study_run_again_with_a_suite_is_finalized_again(
    tmp_path: Path, session_tmp: Path
) -> None:
    # Same trials, new validation settings: the outputs the first run wrote are stale.
    (session_tmp / "cache").mkdir(exist_ok=True)
    (tmp_path / "cache").symlink_to(session_tmp / "cache", target_is_directory=True)
    first = run_study(study_config(tmp_path, n_trials=2), progress=False)
    assert first.finalized and first.summary.recommended is not None
    suite = tmp_path / "strict.yaml"
    suite.write_text(yaml.safe_dump({"name": "strict", "uis_budget": {"max_uis": 1e-9}}))
    again = run_study(study_config(tmp_path, n_trials=2, validation={"suite": str(suite)}), progress=False)
    assert again.finalized and again.summary.recommended is None
    assert json.loads((again.output / "pareto.json").read_text())["recommended"] is None
    third = run_study(study_config(tmp_path, n_trials=2, validation={"suite": str(suite)}), progress=False)
    assert not third.finalized  # nothing changed since: the outputs are current
