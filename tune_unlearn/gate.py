"""``gate``: validate any unlearned model against a study's problem and forget request, with exit
codes a release pipeline can trust , and optionally register it in MLflow.

Exit 0 only when every check ran and passed; 1 when any failed or could not run; the caller
maps configuration problems to 2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune_unlearn.config.study_config import StudyConfig
from tune_unlearn.errors import UsageError, reading_input
from tune_unlearn.references.training import model_from_state
from tune_unlearn.tracking.model_file import Sidecar
from tune_unlearn.tracking.registry import register_verdict, registered_version
from tune_unlearn.trial.inputs import StudyInputs, load_inputs
from tune_unlearn.trial.study_references import load_study_references
from tune_unlearn.validation import (
    Candidate,
    SuiteConfig,
    ValidationContext,
    ValidationReport,
    validate,
    write_reports,
)


class CandidateError(UsageError):
    """The candidate cannot be loaded or does not fit the study's model."""


def _is_mlflow_uri(spec: str) -> bool:
    return spec.startswith(("models:/", "runs:/"))


def load_candidate(spec: str, inputs: StudyInputs) -> Candidate:
    """A state-dict file (with its ``.json`` metrics beside it, if any) or an MLflow model URI,
    as a model of the study's problem on its device."""
    try:
        state = inputs.user_model_state(spec)
    except ValueError as error:
        raise CandidateError(str(error)) from None
    sidecar = Sidecar() if _is_mlflow_uri(spec) else Sidecar.beside(Path(spec))
    try:
        model = model_from_state(inputs.problem, state, inputs.device)
    except RuntimeError as error:
        raise CandidateError(f"{spec} does not fit the study's model: {error}") from None
    return Candidate(model, spec, dict(sidecar.metrics), sidecar.params, sidecar.seed)


def _same_candidate(a: str, b: str) -> bool:
    if _is_mlflow_uri(a) or _is_mlflow_uri(b):
        return a == b
    return Path(a).resolve() == Path(b).resolve()


def refuse_overwrite(report_path: Path, candidate_spec: str) -> None:
    """A folder's reports are one candidate's: gating another candidate into it would replace
    the first's verdict without a trace. The same candidate again may refresh its own."""
    if not report_path.is_file():
        return
    try:
        earlier = json.loads(report_path.read_text()).get("candidate")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if not isinstance(earlier, str):
        raise CandidateError(f"{report_path} exists and is not a gate report: pass --output DIR")
    if not _same_candidate(earlier, candidate_spec):
        raise CandidateError(
            f"{report_path} holds the report of candidate {earlier}: pass --output DIR for "
            f"{candidate_spec}, or remove that report"
        )


@dataclass(frozen=True)
class GateOutcome:
    report: ValidationReport
    json_path: Path
    junit_path: Path
    markdown_path: Path
    registered: str | None = None
    attached_to: str | None = None  # the MLflow run the reports were attached to


def run_gate(
    config: StudyConfig,
    suite: SuiteConfig,
    candidate_spec: str,
    *,
    output: Path,
    junit: Path | None = None,
    register: str | None = None,
    alias: str | None = None,
    tracking_uri: str | None = None,
    trust_pickle: bool = False,
) -> GateOutcome:
    refuse_overwrite(output / "gate.json", candidate_spec)
    with reading_input():
        inputs = load_inputs(config, tracking_uri=tracking_uri, trust_pickle=trust_pickle)
        candidate = load_candidate(candidate_spec, inputs)  # before any reference trains
        references = load_study_references(inputs, progress=False)
    report = validate(ValidationContext(inputs, references), candidate, suite)
    paths = (output / "gate.json", junit or output / "junit.xml", output / "gate.md")
    write_reports(report, *paths)
    registered = None
    if register:
        example = inputs.data.inputs[inputs.val[:2].to(inputs.device)]
        registered = register_verdict(
            inputs.tracking_uri,
            config.tracking.experiment or config.name,
            config.output_dir() / "mlartifacts",
            candidate.model,
            candidate.description,
            verdict=report.verdict,
            passed=report.passed,
            name=register,
            alias=alias,
            attachments=[paths[0], paths[2]],
            example=example,
        )
    attached = attach_reports(config, candidate_spec, report, list(paths), inputs.tracking_uri)
    return GateOutcome(report, *paths, registered=registered, attached_to=attached)


def attach_reports(
    config: StudyConfig, spec: str, report: ValidationReport, paths: list[Path], uri: str
) -> str | None:
    """Attach the gate's reports (under ``gate/``) and its verdict (tag ``gate_verdict``) to the
    MLflow run that produced the candidate: the run of ``runs:/…``, the source run of a
    ``models:/…`` version, or the study's parent run for its own ``models/candidate.pt``. A
    local store that does not exist is not created; a tracking failure is a warning."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        run_id = _producing_run(client, config, spec)
        if run_id is None:
            return None
        for path in paths:
            client.log_artifact(run_id, str(path), "gate")
        client.set_tag(run_id, "gate_verdict", report.verdict)
        return run_id
    except Exception as error:  # MLflow raises many kinds; the verdict stands regardless
        from tune_unlearn.config.storages import redact

        print(
            f"warning: the gate's reports were not attached in MLflow: {redact(str(error))}", file=sys.stderr
        )
        return None


def _producing_run(client: Any, config: StudyConfig, spec: str) -> str | None:
    if spec.startswith("runs:/"):
        return spec.removeprefix("runs:/").split("/", 1)[0]
    if spec.startswith("models:/"):
        version = registered_version(client, spec)
        if version is not None:
            return str(version.run_id) if version.run_id else None
        model_id = spec.removeprefix("models:/").split("/", 1)[0]
        return str(client.get_logged_model(model_id).source_run_id or "") or None
    if Sidecar.beside(Path(spec)).trial is None:
        return None  # not a study's candidate: no run produced it
    import optuna

    from tune_unlearn.report.study_record import StudyRecord
    from tune_unlearn.study.objective import open_storage, storage_url

    study = optuna.load_study(study_name=config.name, storage=open_storage(storage_url(config)))
    return StudyRecord.of(study).parent_run or None
