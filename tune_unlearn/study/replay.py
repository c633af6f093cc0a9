"""Commands that read a study back without running it: ``report`` (rebuild the outputs from
storage) and ``apply`` (re-run one configuration and save its model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from tune_unlearn.config.storages import redact
from tune_unlearn.config.study_config import StudyConfig, with_rate_scales
from tune_unlearn.errors import UsageError, reading_input
from tune_unlearn.methods import METHODS
from tune_unlearn.report.outputs import check_writable, write_outputs
from tune_unlearn.report.study_record import StudyRecord
from tune_unlearn.report.summary import StudySummary, summarise
from tune_unlearn.study.finalize import save_run
from tune_unlearn.study.objective import (
    open_storage,
    refuse_changed_default_space,
    refuse_old_metrics,
    storage_url,
)
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.inputs import load_inputs
from tune_unlearn.trial.study_references import load_study_references


def load_summary(config: StudyConfig, storage: str | None = None) -> StudySummary:
    """The study's analysed state, from storage alone."""
    url = storage_url(config, storage)
    try:
        study = optuna.load_study(study_name=config.name, storage=open_storage(url))
    except KeyError:
        raise UsageError(f"no study named {config.name!r} in {redact(url)}") from None
    # The space the study searched: relative ranges in the rates its scales gave.
    resolved = with_rate_scales(config, StudyRecord.of(study).rate_scales)
    with reading_input():
        refuse_old_metrics(study)
        if config.method.is_default_search():  # a default space that moved: not this study's
            refuse_changed_default_space(study, resolved)
    return summarise(study, resolved)


def rebuild_report(config: StudyConfig, storage: str | None = None) -> StudySummary:
    summary = load_summary(config, storage)
    write_outputs(summary, config.output_dir())
    return summary


def apply_configuration(
    config: StudyConfig, params: dict[str, Any], seed: int, save: Path, *, trust_pickle: bool = False
) -> dict[str, float]:
    """Unlearn with one configuration, save the model and, beside it, its metrics as JSON."""
    unknown = set(params) - set(METHODS.get(config.method.name).hyperparameters())
    if unknown:
        raise UsageError(f"{config.method.name} has no hyperparameter {', '.join(sorted(unknown))}")
    check_writable(save.resolve().parent)
    with reading_input():
        inputs = load_inputs(config, trust_pickle=trust_pickle)
        references = load_study_references(inputs, progress=False)
    recovery = configuration_run.recovery_measures(inputs, references)
    result = configuration_run.run(inputs, references, params, seed=seed, recovery=recovery)
    save_run(result, save)
    return result.metrics
