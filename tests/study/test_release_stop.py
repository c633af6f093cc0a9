"""``validation.stop_at_releasable``: each trial a recommendation could pick is judged as it
finishes, and the search ends at the first that passes; the recommendation is then the rule's
first among the trials that passed."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import yaml

from tune_unlearn.report.study_record import StudyRecord
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.study.runner import run_study

from .test_finalize import finished, study_config, uis  # noqa: F401  (the module's fixture)


def eligible(trial: optuna.trial.FrozenTrial) -> bool:
    """What the loop judges: complete, feasible, retained utility at or above the floor 0.5."""
    utility = TrialRecord.of(trial).metric("retained_utility")
    feasible = all(v <= 0 for v in trial.constraints.values())
    return (
        trial.state == optuna.trial.TrialState.COMPLETE
        and feasible
        and utility is not None
        and utility >= 0.5
    )


def suite(tmp: Path, name: str, max_uis: float) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "uis_budget": {"max_uis": max_uis}}))
    return path


def test_the_search_stops_at_the_first_trial_the_suite_passes(
    finished: tuple[Path, optuna.Study],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The same seeded trials as the finished study, judged in trial order: a UIS budget
    between the first judged trial and a later, smaller one makes that later one the stop."""
    tmp, study = finished
    judged = [t for t in sorted(study.trials, key=lambda t: t.number) if eligible(t)]
    first = judged[0]
    later = next((t for t in judged[1:] if uis(t) < uis(first)), None)
    assert later is not None, "the seeded study needs a later eligible trial with less UIS"
    (tmp_path / "cache").symlink_to(tmp / "cache", target_is_directory=True)
    budget = (uis(first) + uis(later)) / 2  # fails the first judged trial, passes `later`
    path = suite(tmp_path, "budget", budget)
    config = study_config(tmp_path, validation={"suite": str(path), "stop_at_releasable": True})
    run = run_study(config, progress=False)

    numbers = [t.number for t in run.study.trials]
    record = StudyRecord.of(run.study)
    stop = record.releasable_trial
    assert stop is not None and numbers == list(range(stop + 1))  # nothing ran after the stop
    assert stop <= later.number
    verdicts = record.verdicts
    # every eligible trial up to the stop was judged as it finished, and only the stop passed
    assert set(verdicts) == {t.number for t in judged if t.number <= stop}
    assert verdicts[first.number].passed is False and verdicts[stop].passed is True
    assert all(not v.passed for n, v in verdicts.items() if n != stop)
    assert run.summary.recommended is not None and run.summary.recommended.number == stop
    note = run.summary.recommendation_note or ""
    assert f"the search stopped at trial {stop}" in note and f"trial {first.number} (uis_budget)" in note
    document = json.loads((run.output / "pareto.json").read_text())
    assert document["recommended"] == stop
    assert (run.output / "validation" / f"trial_{stop}.json").exists()
    assert f"the search stopped at trial {stop}" in (run.output / "report.md").read_text()

    # a rerun with more budget claims nothing: the study already holds a releasable model
    again = run_study(config.model_copy(update={"n_trials": 12}), progress=False)
    assert again.trials_run == 0 and len(again.study.trials) == stop + 1


def test_with_no_trial_passing_the_whole_budget_runs_and_nothing_is_recommended(
    finished: tuple[Path, optuna.Study],  # noqa: F811
    tmp_path: Path,
) -> None:
    tmp, _ = finished
    (tmp_path / "cache").symlink_to(tmp / "cache", target_is_directory=True)
    path = suite(tmp_path, "strict", 1e-9)
    config = study_config(tmp_path, validation={"suite": str(path), "stop_at_releasable": True})
    run = run_study(config, progress=False)
    assert len(run.study.trials) == 6
    record = StudyRecord.of(run.study)
    assert record.releasable_trial is None
    assert set(record.verdicts) == {t.number for t in run.study.trials if eligible(t)}
    assert run.summary.recommended is None
    note = run.summary.recommendation_note or ""
    assert note.startswith("no configuration is recommended: no trial judged as it finished passes")
