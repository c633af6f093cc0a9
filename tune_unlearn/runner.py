"""Run a study end to end, and rebuild its outputs from storage (the ``report`` command)."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from tune_unlearn import __version__
from tune_unlearn.config import StudyConfig
from tune_unlearn.distributed import Heartbeat, budget_lock, claim_trial
from tune_unlearn.experiment import Experiment
from tune_unlearn.methods import METHODS, DivergenceError
from tune_unlearn.outputs import StudySummary, summarise, write_json, write_outputs
from tune_unlearn.pareto import finite
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.references import save_state_dict
from tune_unlearn.study import (
    Objective,
    QuietDivergence,
    create_or_load,
    make_sampler,
    open_storage,
    refuse_old_metrics,
    storage_url,
)
from tune_unlearn.tracking import (
    Tracker,
    TrackingUnavailable,
    check_reachable,
    default_tracking_uri,
    study_tags,
)

_BUDGET_ATTR = "gpu_seconds_budget"
_ARTIFACTS = (
    "study.resolved.yaml",
    "pareto.json",
    "trials.csv",
    "report.md",
    "pareto.png",
    "hypervolume.png",
    "importance.png",
)


@dataclass(frozen=True)
class StudyRun:
    study: optuna.Study
    summary: StudySummary
    output: Path
    trained_references: list[str]


def open_tracker(config: StudyConfig, tracking_uri: str | None = None) -> Tracker | None:
    """The study's MLflow tracker; ``None`` when tracking is off, or optional and unreachable."""
    settings = config.tracking
    if not settings.enabled:
        return None
    output = config.output_dir()
    uri = tracking_uri or settings.uri or default_tracking_uri(output)
    try:
        check_reachable(uri)
        if uri.startswith("sqlite:///"):
            output.mkdir(parents=True, exist_ok=True)
        return Tracker(uri, settings.experiment or config.name, artifact_root=output / "mlartifacts")
    except Exception as error:  # MLflow raises many kinds; all mean "no tracking here"
        if settings.required:
            raise TrackingUnavailable(
                f"{error}. Start the server, pass --tracking-uri, or set tracking.required: false "
                "to run with local outputs only"
            ) from None
        print(f"warning: tracking disabled for this run: {error}", file=sys.stderr)
        return None


def run_study(
    config: StudyConfig,
    *,
    n_trials: int | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> StudyRun:
    """Prepare the references, run the trials, write every output; resuming adds trials."""
    settings = config.tracking
    if settings.enabled and settings.required:  # a server that is down: fail before anything heavy
        check_reachable(tracking_uri or settings.uri or default_tracking_uri(config.output_dir()))
    experiment = Experiment(config, progress=progress)  # refuses an over-budget ensemble: exit 2
    tracker = open_tracker(config, tracking_uri)
    url = storage_url(config, storage)
    study = create_or_load(config, open_storage(url))
    record_study(study, experiment, tracker, url, new_parent=True)
    quiet_trial_logs()
    try:
        study.optimize(
            Objective(experiment, tracker),
            n_trials=n_trials if n_trials is not None else config.n_trials,
            timeout=config.timeout,
            n_jobs=config.n_jobs,
            catch=(DivergenceError,),
            show_progress_bar=progress,
        )
        summary = finalize(study, experiment, tracker)
    except BaseException:
        if tracker is not None:
            tracker.finish_study("FAILED")
        raise
    return StudyRun(study, summary, config.output_dir(), experiment.trained_references)


@dataclass(frozen=True)
class WorkerRun:
    study: optuna.Study
    trials_run: int
    finished_study: bool
    trained_references: list[str]


def run_worker(
    config: StudyConfig,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> WorkerRun:
    """Join a distributed study: run trials until the study file's ``n_trials`` exist in the
    storage (a global budget), then, if this worker finished the study, write its outputs."""
    tracker = open_tracker(config, tracking_uri)
    experiment = Experiment(config, progress=progress)
    url = storage_url(config, storage)
    # One worker at a time creates the storage's tables, the study and its MLflow parent run:
    # workers starting together on an empty database would otherwise race to create them.
    with budget_lock(url, config.name):
        study = create_or_load(config, open_storage(url))
        # Workers seeded alike would replay each other's suggestions: offset by the process.
        study.sampler = make_sampler(
            config.sampler.model_copy(update={"seed": config.sampler.seed + os.getpid()})
        )
        new_parent = "mlflow_parent_run_id" not in study.user_attrs
        record_study(study, experiment, tracker, url, new_parent=new_parent)
    quiet_trial_logs()
    objective = Objective(experiment, tracker)
    settings = config.workers
    done = 0
    while (trial := claim_trial(study, url, config.n_trials, settings.grace_period)) is not None:
        with Heartbeat(study, trial, settings.heartbeat_interval):
            tell(study, trial, objective)
        done += 1
        if progress:
            print(f"worker: trial {trial.number} done ({done} by this worker)", file=sys.stderr)
    with budget_lock(url, study.study_name):
        trials = study.get_trials(deepcopy=False)
        unfinished = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        # Exactly one worker writes the outputs of each finished state of the study.
        if not unfinished and study.user_attrs.get("finalized_trials") != len(trials):
            finalize(study, experiment, tracker)
            study.set_user_attr("finalized_trials", len(trials))
    return WorkerRun(study, done, not unfinished, experiment.trained_references)


def tell(study: optuna.Study, trial: optuna.Trial, objective: Objective) -> None:
    """Run one claimed trial and record its outcome, as ``study.optimize`` would."""
    try:
        values = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return
    except DivergenceError:
        study.tell(trial, state=TrialState.FAIL)
        return
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, values)


def record_study(
    study: optuna.Study, experiment: Experiment, tracker: Tracker | None, url: str, *, new_parent: bool
) -> None:
    """Store what ``report`` needs with the study, and open (or join) its MLflow parent run."""
    config = experiment.config
    study.set_user_attr(_BUDGET_ATTR, experiment.compute_budget)
    study.set_user_attr("package_version", __version__)
    study.set_user_attr("study_file", config.model_dump(mode="json"))
    output = config.output_dir()
    output.mkdir(parents=True, exist_ok=True)
    (output / "study.resolved.yaml").write_text(resolved_yaml(config))
    if tracker is None:
        return
    if new_parent:
        parent = tracker.start_study(
            config.name, study_tags(config, url), _flatten(config.model_dump(mode="json"))
        )
        study.set_user_attr("mlflow_parent_run_id", parent)
        study.set_user_attr("mlflow_tracking_uri", tracker.uri)
    else:
        tracker.attach(str(study.user_attrs["mlflow_parent_run_id"]))


def quiet_trial_logs() -> None:
    # The progress bar shows progress; per-trial INFO lines would interleave with it. A
    # divergence is an expected outcome: keep its one-line warning, drop the traceback (on
    # the logger that reports failed trials: a parent's filter would not see its records).
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial_logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, QuietDivergence) for f in trial_logger.filters):
        trial_logger.addFilter(QuietDivergence())


def finalize(study: optuna.Study, experiment: Experiment, tracker: Tracker | None) -> StudySummary:
    """Every output of a finished study: files, candidate, validation, the MLflow parent run."""
    config = experiment.config
    output = config.output_dir()
    budget = study.user_attrs[_BUDGET_ATTR]
    summary = summarise(study, config, budget)
    write_outputs(summary, output)
    candidate = write_models(experiment, summary, output)
    if config.validation.suite is not None and summary.recommended is not None:
        validate_trials(experiment, study, summary, candidate, output, config.validation.suite)
        summary = summarise(study, config, budget)
        write_outputs(summary, output)
    if tracker is not None:
        publish(tracker, summary, output, candidate, experiment)
        tracker.finish_study()
    return summary


def validate_trials(
    experiment: Experiment,
    study: optuna.Study,
    summary: StudySummary,
    candidate: MultiTaskModel | None,
    output: Path,
    suite_path: Path,
) -> None:
    """Run the study file's suite on its recommended (or every Pareto) trial; reports go to
    ``validation/`` and the verdicts into the storage, so ``report`` shows them too."""
    from tune_unlearn.validation import (
        Candidate,
        ValidationContext,
        load_suite,
        validate,
        write_junit,
        write_markdown,
    )
    from tune_unlearn.validation import (
        write_json as write_report_json,
    )

    settings = experiment.config.validation
    suite = load_suite(suite_path)
    context = ValidationContext(experiment)
    trials = [summary.recommended] if settings.trials == "recommended" else summary.front
    verdicts = dict(study.user_attrs.get("validation", {}))
    for trial in trials:
        if trial is None:
            continue
        seed = int(trial.user_attrs["seed"])
        model = candidate if summary.is_recommended(trial) and candidate is not None else None
        if model is None:
            model = experiment.run(trial.params, seed=seed).model
        metrics = {k: v for k, v in trial.user_attrs.get("metrics", {}).items() if v is not None}
        report = validate(
            context, Candidate(model, f"trial {trial.number}", metrics, trial.params, seed), suite
        )
        stem = output / "validation" / f"trial_{trial.number}"
        write_report_json(report, stem.with_suffix(".json"))
        write_junit(report, stem.with_suffix(".xml"))
        write_markdown(report, stem.with_suffix(".md"))
        verdicts[str(trial.number)] = {
            "suite": suite.name,
            "verdict": report.verdict,
            "passed": report.passed,
            "failed": [r.name for r in report.results if not r.passed],
        }
    study.set_user_attr("validation", verdicts)


def publish(
    tracker: Tracker,
    summary: StudySummary,
    output: Path,
    candidate: MultiTaskModel | None,
    experiment: Experiment,
) -> None:
    """Parent-run artifacts, the candidate model, and the final pareto/recommended tags."""
    tracker.log_artifacts(output / name for name in _ARTIFACTS)
    validation = output / "validation"
    if validation.is_dir():
        tracker.log_artifacts(sorted(validation.iterdir()), "validation")
    tracker.log_artifacts([output / "models" / "candidate.json"], "models")
    if candidate is not None:
        example = experiment.data.inputs[experiment.splits["val"][:4].to(experiment.device)]
        tracker.log_model(candidate, example)
    tracker.tag_runs(
        {
            str(t.user_attrs["mlflow_run_id"]): {
                "pareto": str(summary.is_pareto(t)).lower(),
                "recommended": str(summary.is_recommended(t)).lower(),
            }
            for t in summary.trials
            if "mlflow_run_id" in t.user_attrs
        }
    )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def write_models(experiment: Experiment, summary: StudySummary, output: Path) -> MultiTaskModel | None:
    """The references, and the recommended configuration's model re-run from its seed."""
    models = output / "models"
    models.mkdir(parents=True, exist_ok=True)
    for kind, reference in experiment.references.items():
        save_state_dict(reference.state_dict, models / f"{kind}.pt")
    trial = summary.recommended
    if trial is None:
        return None
    result = experiment.run(trial.params, seed=int(trial.user_attrs["seed"]))
    save_state_dict(
        {k: v.detach().cpu() for k, v in result.model.state_dict().items()}, models / "candidate.pt"
    )
    info = {
        "trial": trial.number,
        "params": result.params,
        "seed": result.seed,
        "metrics": {k: finite(v) for k, v in result.metrics.items()},
    }
    write_json(models / "candidate.json", info)
    return result.model


def load_summary(config: StudyConfig, storage: str | None = None) -> StudySummary:
    """The study's analysed state, from storage alone."""
    url = storage_url(config, storage)
    try:
        study = optuna.load_study(study_name=config.name, storage=open_storage(url))
    except KeyError:
        raise LookupError(f"no study named {config.name!r} in {url}") from None
    refuse_old_metrics(study)
    budget = study.user_attrs.get(_BUDGET_ATTR)
    return summarise(study, config, budget)


def rebuild_report(config: StudyConfig, storage: str | None = None) -> StudySummary:
    summary = load_summary(config, storage)
    write_outputs(summary, config.output_dir())
    return summary


def resolved_yaml(config: StudyConfig) -> str:
    """The study file with every default filled in, and the package version that ran it."""
    header = f"# resolved by tune_unlearn {__version__}\n"
    return header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def apply_configuration(
    config: StudyConfig, params: dict[str, Any], seed: int, save: Path
) -> dict[str, float]:
    """Unlearn with one configuration, save the model and, beside it, its metrics as JSON."""
    experiment = Experiment(config, progress=False)
    unknown = set(params) - set(METHODS.get(config.method.name).hyperparameters())
    if unknown:
        raise ValueError(f"{config.method.name} has no hyperparameter {', '.join(sorted(unknown))}")
    result = experiment.run(params, seed=seed)
    save_state_dict({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, save)
    info = {
        "params": result.params,
        "seed": seed,
        "metrics": {k: finite(v) for k, v in result.metrics.items()},
    }
    write_json(save.with_suffix(".json"), info)
    return result.metrics
