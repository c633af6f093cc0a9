"""Everything a finished study leaves behind: output files, the recommended trial's model,
its validation, and the MLflow parent run's artifacts, summary metrics and tags.

Called by exactly one process per finished state of a study (under the study's lock), from one
snapshot of its trials, so the files agree with the storage and with each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial

from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.references.attacks import RecoveryMeasures
from tune_unlearn.references.training import save_state_dict
from tune_unlearn.report import study_record
from tune_unlearn.report.outputs import write_outputs
from tune_unlearn.report.study_record import StudyRecord, Verdict, store_verdicts
from tune_unlearn.report.summary import StudySummary, summarise
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.study.publish import publish
from tune_unlearn.tracking.model_file import save_model
from tune_unlearn.tracking.runs import Tracker
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.configuration_run import RunResult
from tune_unlearn.trial.inputs import StudyInputs
from tune_unlearn.trial.study_references import StudyReferences

if TYPE_CHECKING:
    from tune_unlearn.validation import SuiteConfig, ValidationContext

#: Bumped when what finalize decides changes (2: the gate in the loop picks the recommendation),
#: so outputs an older version wrote for the same trials are written again once.
FINALIZE_VERSION = 2


def study_fingerprint(trials: Sequence[FrozenTrial], validation: object = None) -> str:
    """Which trials exist in which state, under which validation settings and finalize
    version: outputs written for one fingerprint are current."""
    text = ",".join(f"{t.number}:{t.state.name}" for t in sorted(trials, key=lambda t: t.number))
    text += f"|{validation!r}|v{FINALIZE_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def finalize(
    study: optuna.Study,
    inputs: StudyInputs,
    references: StudyReferences,
    tracker: Tracker | None,
    *,
    recovery: RecoveryMeasures | None = None,
) -> StudySummary:
    """Every output of a finished study: validation, files, candidate, the MLflow parent run.

    With a validation suite the gate is in the loop: front trials are validated in the
    recommendation rule's order until one passes (every front trial with ``validation.trials:
    pareto``), and the recommendation is the first that passed (:func:`gated_recommendation`).
    ``recovery``: the study's recovery attacks (the trials'), for the re-run models' metrics."""
    config = inputs.config
    output = config.output_dir()
    summary = summarise(study, config)
    models: dict[int, RunResult] = {}
    if config.validation.suite is not None and summary.ranked:
        models = validate_trials(
            inputs, references, study, summary, output, config.validation.suite, recovery
        )
        summary = summarise(study, config)
    write_outputs(summary, output)
    candidate = write_models(inputs, references, summary, output, models, recovery)
    # For optuna-dashboard, which shows study attributes: the analysed state of the study.
    study.set_user_attr(study_record.PARETO_TRIALS, [t.number for t in summary.front])
    study.set_user_attr(
        study_record.RECOMMENDED_TRIAL, summary.recommended.number if summary.recommended else None
    )
    if tracker is not None:
        example = inputs.data.inputs[inputs.val[:4].to(inputs.device)]
        publish(tracker, summary, output, candidate, example)
        tracker.finish_study()
    return summary


def save_run(result: RunResult, path: Path, trial: int | None = None) -> None:
    """An unlearned model and its sidecar (:mod:`tune_unlearn.tracking.model_file`)."""
    save_model(result.model, path, result.params, result.seed, result.metrics, trial)


def write_models(
    inputs: StudyInputs,
    references: StudyReferences,
    summary: StudySummary,
    output: Path,
    validated: dict[int, RunResult] | None = None,
    recovery: RecoveryMeasures | None = None,
) -> MultiTaskModel | None:
    """The references, and the recommended configuration's model re-run from its seed (the
    very model the validation suite judged, when it did)."""
    models = output / "models"
    models.mkdir(parents=True, exist_ok=True)
    for kind, reference in references.by_kind().items():
        save_state_dict(reference.state_dict, models / f"{kind}.pt")
    trial = summary.recommended
    if trial is None:  # no candidate: an earlier one of this study must not stay as if it were
        for stale in (models / "candidate.pt", models / "candidate.json"):
            stale.unlink(missing_ok=True)
        return None
    result = (validated or {}).get(trial.number)  # the very model the suite judged
    if result is None:
        seed = int(TrialRecord.of(trial).seed or 0)
        result = configuration_run.run(inputs, references, trial.params, seed=seed, recovery=recovery)
    save_run(result, models / "candidate.pt", trial=trial.number)
    return result.model


def judge_trial(
    inputs: StudyInputs,
    references: StudyReferences,
    context: ValidationContext,
    suite: SuiteConfig,
    trial: FrozenTrial,
    output: Path,
    recovery: RecoveryMeasures | None = None,
) -> tuple[Verdict, RunResult]:
    """Re-run one trial's configuration with its seed and judge the model with ``suite``;
    the reports go to ``validation/trial_N.{json,xml,md}``."""
    from tune_unlearn.validation import Candidate, validate, write_reports

    record = TrialRecord.of(trial)
    seed = int(record.seed or 0)
    result = configuration_run.run(inputs, references, trial.params, seed=seed, recovery=recovery)
    metrics = {k: v for k, v in record.metrics.items() if v is not None}
    report = validate(
        context, Candidate(result.model, f"trial {trial.number}", metrics, trial.params, seed), suite
    )
    stem = output / "validation" / f"trial_{trial.number}"
    write_reports(report, stem.with_suffix(".json"), stem.with_suffix(".xml"), stem.with_suffix(".md"))
    verdict = Verdict(
        suite=suite.name,
        verdict=report.verdict,
        passed=report.passed,
        # not applicable (skipped) checks neither pass nor fail, unless the suite demands what
        # the reference mode cannot judge (fail closed)
        failed=[r.name for r in report.judged if not r.passed] + [r.name for r in report.unjudged],
    )
    return verdict, result


def validate_trials(
    inputs: StudyInputs,
    references: StudyReferences,
    study: optuna.Study,
    summary: StudySummary,
    output: Path,
    suite_path: Path,
    recovery: RecoveryMeasures | None = None,
) -> dict[int, RunResult]:
    """Run the study file's suite on front trials in the rule's order until one passes (on
    every front trial with ``validation.trials: pareto``); reports go to ``validation/`` and
    the verdicts into the storage, so ``report`` shows them too. A trial already judged by a
    suite of the same name keeps its verdict. Returns the models it judged, by trial."""
    from tune_unlearn.validation import ValidationContext, load_suite

    settings = inputs.config.validation
    suite = load_suite(suite_path)
    context = ValidationContext(inputs, references, recovery)
    rest = [t for t in summary.front if all(t.number != r.number for r in summary.ranked)]
    trials = summary.ranked + (rest if settings.trials == "pareto" else [])
    verdicts = dict(StudyRecord.of(study).verdicts)
    models: dict[int, RunResult] = {}
    for trial in trials:
        known = verdicts.get(trial.number)
        if known is None or known.suite != suite.name:
            known, models[trial.number] = judge_trial(
                inputs, references, context, suite, trial, output, recovery
            )
            verdicts[trial.number] = known
            store_verdicts(study, verdicts)  # each verdict kept as soon as it is known
        if known.passed and settings.trials == "recommended":
            break
    store_verdicts(study, verdicts)
    return models
