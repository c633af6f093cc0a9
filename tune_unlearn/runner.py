"""Run a study end to end, and rebuild its outputs from storage (the ``report`` command)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml

from tune_unlearn import __version__
from tune_unlearn.config import StudyConfig
from tune_unlearn.experiment import Experiment
from tune_unlearn.methods import DivergenceError
from tune_unlearn.outputs import StudySummary, summarise, write_json, write_outputs
from tune_unlearn.pareto import finite
from tune_unlearn.references import save_state_dict
from tune_unlearn.study import Objective, QuietDivergence, create_or_load, open_storage, storage_url

_BUDGET_ATTR = "gpu_seconds_budget"


@dataclass(frozen=True)
class StudyRun:
    study: optuna.Study
    summary: StudySummary
    output: Path
    trained_references: list[str]


def run_study(
    config: StudyConfig,
    *,
    n_trials: int | None = None,
    storage: str | None = None,
    progress: bool = True,
) -> StudyRun:
    """Prepare the references, run the trials, write every output; resuming adds trials."""
    output = config.output_dir()
    experiment = Experiment(config, progress=progress)
    study = create_or_load(config, open_storage(storage_url(config, storage)))
    budget = experiment.references[
        "retrain" if "retrain" in experiment.references else "original"
    ].train_seconds
    study.set_user_attr(_BUDGET_ATTR, budget)
    study.set_user_attr("package_version", __version__)
    study.set_user_attr("study_file", config.model_dump(mode="json"))
    output.mkdir(parents=True, exist_ok=True)
    (output / "study.resolved.yaml").write_text(resolved_yaml(config))
    # The progress bar shows progress; per-trial INFO lines would interleave with it.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet = QuietDivergence()
    # The logger that reports failed trials (a filter on a parent would not see its records).
    trial_logger = logging.getLogger("optuna.study._optimize")
    trial_logger.addFilter(quiet)
    try:
        study.optimize(
            Objective(experiment),
            n_trials=n_trials if n_trials is not None else config.n_trials,
            timeout=config.timeout,
            catch=(DivergenceError,),
            show_progress_bar=progress,
        )
    finally:
        trial_logger.removeFilter(quiet)
    summary = summarise(study, config, budget)
    write_outputs(summary, output)
    write_models(experiment, summary, output)
    return StudyRun(study, summary, output, experiment.trained_references)


def write_models(experiment: Experiment, summary: StudySummary, output: Path) -> None:
    """The references, and the recommended configuration's model re-run from its seed."""
    models = output / "models"
    models.mkdir(parents=True, exist_ok=True)
    for kind in experiment.references:
        shutil.copyfile(experiment.reference_path(kind), models / f"{kind}.pt")
    trial = summary.recommended
    if trial is None:
        return
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


def load_summary(config: StudyConfig, storage: str | None = None) -> StudySummary:
    """The study's analysed state, from storage alone."""
    url = storage_url(config, storage)
    try:
        study = optuna.load_study(study_name=config.name, storage=open_storage(url))
    except KeyError:
        raise LookupError(f"no study named {config.name!r} in {url}") from None
    budget = float(study.user_attrs.get(_BUDGET_ATTR, 1.0))
    return summarise(study, config, budget)


def rebuild_report(config: StudyConfig, storage: str | None = None) -> StudySummary:
    summary = load_summary(config, storage)
    write_outputs(summary, config.output_dir())
    return summary


def resolved_yaml(config: StudyConfig) -> str:
    """The study file with every default filled in, and the package version that ran it."""
    header = f"# resolved by tune_unlearn {__version__}\n"
    return header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
