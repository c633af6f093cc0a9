"""The MLflow model registry side of the gate: register a candidate that passed, point an
alias at it, and tag a registered version with its verdict. Plain values in (the model, its
source, the verdict), so the gate's report types stay in the validation layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.tracking.runs import Tracker

__all__ = ["register_verdict", "registered_version"]


def register_verdict(
    uri: str,
    experiment: str,
    artifact_root: Path,
    model: MultiTaskModel,
    source: str,
    *,
    verdict: str,
    passed: bool,
    name: str,
    alias: str | None,
    attachments: list[Path],
    example: Tensor,
) -> str | None:
    """Register ``model`` as a version of ``name`` when it ``passed`` and point ``alias`` at it;
    never register a failing one, but tag it with its verdict when ``source`` (the candidate as
    the user gave it) is a registered version already. The registry's ``models:/NAME/VERSION``,
    or ``None`` when nothing was registered. The run that logs a new version goes to
    ``experiment`` on the store at ``uri`` (created only then)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    existing = registered_version(client, source)
    if existing is not None:
        client.set_model_version_tag(existing.name, existing.version, "gate_verdict", verdict)
    if not passed:
        return None
    if existing is not None and existing.name == name:
        version = existing.version
    else:
        tracker = Tracker(uri, experiment, artifact_root)
        run = tracker.client.create_run(
            tracker.experiment_id, run_name=f"gate-{name}", tags={"tune_unlearn.role": "gate"}
        )
        tracker.parent_run_id = run.info.run_id
        tracker.log_artifacts(attachments, "gate")
        model_uri = tracker.log_model(model, example, name="gate_candidate")
        tracker.finish_study()
        version = mlflow.register_model(model_uri, name, tags={"gate_verdict": verdict}).version
    if alias:
        client.set_registered_model_alias(name, alias, str(version))
    return f"models:/{name}/{version}"


def registered_version(client: Any, spec: str) -> Any:
    """The registered model version a ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` names
    (``None`` for any other spec)."""
    if not spec.startswith("models:/"):
        return None
    body = spec.removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    if "/" in body:
        name, version = body.split("/", 1)
        if version.isdigit():
            return client.get_model_version(name, version)
    return None
