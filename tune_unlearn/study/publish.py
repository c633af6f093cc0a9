"""The study's MLflow side: opening the tracker, the parent run's lifecycle (opened, joined by
other processes, closed as finished, killed or failed), and publishing a finished study to it
(artifacts, summary metrics, the candidate model, the trial runs' final tags)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from torch import Tensor

from tune_unlearn._version import __version__
from tune_unlearn.config.storages import redact, redact_tree
from tune_unlearn.config.study_config import StudyConfig
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.report import study_record
from tune_unlearn.report.study_record import StudyRecord
from tune_unlearn.report.summary import StudySummary
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.tracking.runs import (
    Tracker,
    TrackingUnavailable,
    check_reachable,
    resolve_tracking_uri,
    study_tags,
)

_ARTIFACTS = (
    "study.resolved.yaml",
    "pareto.json",
    "trials.csv",
    "report.md",
    "pareto.png",
    "hypervolume.png",
    "importance.png",
)


def open_tracker(config: StudyConfig, tracking_uri: str | None = None) -> Tracker | None:
    """The study's MLflow tracker; ``None`` when tracking is off, or optional and unreachable."""
    settings = config.tracking
    if not settings.enabled:
        return None
    output = config.output_dir()
    uri = resolve_tracking_uri(config, tracking_uri)
    try:
        check_reachable(uri)
        return Tracker(uri, settings.experiment or config.name, artifact_root=output / "mlartifacts")
    except Exception as error:  # MLflow raises many kinds; all mean "no tracking here"
        message = redact(str(error))
        if settings.required:
            raise TrackingUnavailable(
                f"{message}. Start the server, pass --tracking-uri, or set tracking.required: false "
                "to run with local outputs only"
            ) from None
        print(f"warning: tracking disabled for this run: {message}", file=sys.stderr)
        return None


@contextlib.contextmanager
def parent_closed_on_error(tracker: Tracker | None) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        if tracker is not None:
            tracker.finish_study("KILLED")
        raise
    except BaseException:
        if tracker is not None:
            tracker.finish_study("FAILED")
        raise


def record_study(
    study: optuna.Study, config: StudyConfig, device: torch.device, tracker: Tracker | None, url: str
) -> None:
    """Store what ``report`` needs with the study (``config``: the study file as it runs, rate
    scales resolved), and open (or join) its MLflow parent run: a process joins the parent run
    while it is still open (a worker beside others, or a rerun after an interrupt or a crash),
    else opens a new one."""
    resolved = redact_tree(config.model_dump(mode="json"))
    study.set_user_attr(study_record.PACKAGE_VERSION, __version__)
    study.set_user_attr(study_record.STUDY_FILE, resolved)
    output = config.output_dir()
    output.mkdir(parents=True, exist_ok=True)
    (output / "study.resolved.yaml").write_text(resolved_yaml(config))
    if tracker is None:
        return
    parent = StudyRecord.of(study).parent_run
    if parent is not None and tracker.is_open(parent):
        tracker.attach(parent)
        return
    tags = study_tags(config, url, device.type)
    run_id = tracker.start_study(config.name, tags, _flatten(resolved))
    if run_id is not None:
        study.set_user_attr(study_record.PARENT_RUN, run_id)
        study.set_user_attr(study_record.TRACKING_URI, redact(tracker.uri))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def resolved_yaml(config: StudyConfig) -> str:
    """The study file with every default filled in (credentials as ``***``), and the package
    version that ran it."""
    header = f"# resolved by tune_unlearn {__version__}\n"
    return header + yaml.safe_dump(redact_tree(config.model_dump(mode="json")), sort_keys=False)


def summary_metrics(summary: StudySummary) -> tuple[dict[str, float | None], dict[str, str]]:
    """What the parent run shows in MLflow's runs table: the hypervolume, trial counts and the
    recommended trial's objectives (``recommended/<objective>``), and its number as a tag."""
    metrics: dict[str, float | None] = {
        "hypervolume": summary.hypervolume,
        "trials_complete": float(len(summary.complete)),
        "trials_feasible": float(len(summary.feasible)),
        "pareto_size": float(len(summary.front)),
    }
    tags = {"recommended_trial": "none"}
    trial = summary.recommended
    if trial is not None:
        values = TrialRecord.of(trial).metrics
        for name in summary.config.objectives:
            metrics[f"recommended/{name}"] = values.get(name)
        tags["recommended_trial"] = str(trial.number)
    if summary.recommendation_note:
        tags["recommendation_note"] = summary.recommendation_note
    return metrics, tags


def publish(
    tracker: Tracker,
    summary: StudySummary,
    output: Path,
    candidate: MultiTaskModel | None,
    example: Tensor,
) -> None:
    """Parent-run artifacts, summary metrics, the candidate model (``example``: a few inputs,
    for its signature), and the final tags."""
    tracker.log_artifacts(output / name for name in _ARTIFACTS)
    validation = output / "validation"
    if validation.is_dir():
        tracker.log_artifacts(sorted(validation.iterdir()), "validation")
    tracker.log_artifacts([output / "models" / "candidate.json"], "models")
    tracker.log_summary(*summary_metrics(summary))
    if candidate is not None:
        tracker.log_model(candidate, example)
    tracker.tag_runs(
        {
            run_id: {
                "pareto": str(summary.is_pareto(t)).lower(),
                "recommended": str(summary.is_recommended(t)).lower(),
            }
            for t in summary.trials
            if (run_id := TrialRecord.of(t).mlflow_run_id) is not None
        }
    )


def publish_group(
    member: StudyConfig,
    tracking_uri: str | None,
    *,
    tag: str,
    name: str,
    role: str,
    params: dict[str, Any],
    metrics: dict[str, float | None],
    tags: dict[str, str],
    files: list[Path],
    parents: list[str],
) -> None:
    """One run for a group of studies (a comparison, a request stream), found again by
    ``tag = name`` on a rerun, with the group's metrics and files and each member study's
    parent run nested under it. ``member``: any member's study file (its tracking settings)."""
    if not member.tracking.enabled:
        return
    tracker = open_tracker(member, tracking_uri)
    if tracker is None:
        return
    run_id = tracker.find_run(tag, name)
    if run_id is None:
        run_id = tracker.start_study(name, {tag: name}, params, role)
    else:
        tracker.attach(run_id)
    if run_id is None:  # tracking was lost on the way; the local files stand
        return
    tracker.log_summary(metrics, tags)
    tracker.log_artifacts(files)
    tracker.tag_runs({parent: {"mlflow.parentRunId": run_id} for parent in parents})
    tracker.finish_study()
