"""Request streams: deletion requests that arrive one after another against one model.

A study file with ``requests:`` (instead of ``forget``) is a stream. Request ``i`` is an
ordinary study (``<output>/stream/request-<i>``, named ``<name>.request-<i>``) whose original is
the model the stream holds after request ``i − 1`` (the first: the study's original), whose
retain set and retrain ensemble leave out *every* instance deleted so far (requests ``0 … i``:
the honest model a retrain from scratch would give today), warm-started from request
``i − 1``'s study. Its recommended configuration becomes the running model, and the gate suite
(``validation.suite``) judges it against that cumulative retrain.

After each request the stream records forget efficacy and retained utility (against the
cumulative retrain), the UIS of this request and the cumulative UIS against the *first*
original, and the gate's verdict; ``stream.md``, ``stream.json`` and ``drift.png`` show them,
and the first request whose gate fails is where retraining from scratch is recommended, with
the checks that failed. The stream goes on after it, so the drift stays visible. A rerun
resumes: finished requests are read back, not redone.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import torch

from tune_unlearn.config.study_config import StudyConfig, parse_study
from tune_unlearn.errors import UsageError
from tune_unlearn.references.training import model_from_state
from tune_unlearn.report.request_cost import request_cost, step_budget
from tune_unlearn.report.study_record import StudyRecord
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.scoring.metrics import parameter_shift, trainable_vector
from tune_unlearn.study.objective import storage_url
from tune_unlearn.study.publish import publish_group
from tune_unlearn.study.runner import run_study
from tune_unlearn.tracking.runs import resolve_tracking_uri
from tune_unlearn.trial.inputs import stream_instances

#: The tag naming a stream on its MLflow run (a rerun finds and reuses the run).
STREAM_TAG = "tune_unlearn.study.stream"
#: Configurations of the previous request's front that run first in the next request's study.
WARM_TOP = 5


@dataclass(frozen=True)
class StreamRow:
    """What the stream holds after one request."""

    request: int
    study: str
    deleted: int  # instances deleted so far, this request's included
    trial: int | None
    forget_efficacy: float | None
    retained_utility: float | None
    uis: float | None  # this request's shift, from the model before it
    cumulative_uis: float | None  # from the first original
    verdict: str
    failed: list[str]
    candidate: str | None
    parent_run: str | None = None
    #: Retrain units: what this request spent on reference models (a stream bank: all of it at
    #: the first request), and its all-in cost with the references amortized (request_cost).
    reference_spent: float | None = None
    all_in_cost: float | None = None


def stream_folder(config: StudyConfig) -> Path:
    return config.output_dir() / "stream"


def request_indices(config: StudyConfig) -> list[torch.Tensor]:
    """The train instances of every request, checked: two requests that share an instance are
    a :class:`UsageError` at ``requests.<j>`` (a stream deletes each instance once)."""
    assert config.requests is not None
    problem = config.problem.build()
    data = problem.load_data()
    train = problem.split(len(data), config.problem.seed)["train"]
    chosen = stream_instances(data, train, config.requests, config.problem.seed)
    for number, indices in enumerate(chosen):
        for earlier, seen in enumerate(chosen[:number]):
            shared = int(torch.isin(indices, seen).sum())
            if shared:
                raise UsageError(
                    f"requests.{number}: overlaps request {earlier} in {shared} instance(s); a stream "
                    "deletes each instance once"
                )
    return chosen


def bank_file(config: StudyConfig) -> Path:
    """A stream bank's index file: every request's instances, which its members never see."""
    return stream_folder(config) / "bank.txt"


def write_index_file(path: Path, indices: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(str(i) for i in sorted(indices.tolist())) + "\n")


def request_config(
    config: StudyConfig, number: int, previous: StreamRow | None, tracking_uri: str | None
) -> StudyConfig:
    """Request ``number``'s study: the stream's file with this request as ``forget``, the
    running model as the original, and the previous request's study as a warm start."""
    assert config.requests is not None
    folder = stream_folder(config) / f"request-{number}"
    raw = config.model_dump(mode="json", exclude_none=True)
    requests = raw.pop("requests")
    forget = dict(requests[number])
    if number > 0:
        forget["previously_forgotten"] = str(folder / "previous.txt")
    raw["forget"] = forget
    raw["name"] = f"{config.name}.request-{number}"
    raw["output"] = str(folder)
    if config.tracking.enabled:
        tracking = dict(raw.get("tracking", {}))
        tracking["uri"] = resolve_tracking_uri(config, tracking_uri, stream_folder(config))
        tracking["experiment"] = config.tracking.experiment or config.name
        raw["tracking"] = tracking
    if config.references.stream_bank():
        references = dict(raw.get("references", {}))
        references["retrain"] = {
            **references["retrain"],
            "scope": "request",
            "left_out": str(bank_file(config)),
            "shared_by": len(config.requests),
        }
        raw["references"] = references
    if previous is not None:
        assert previous.candidate is not None
        references = dict(raw.get("references", {}))
        references["original"] = previous.candidate
        raw["references"] = references
        earlier = request_config(config, number - 1, None, tracking_uri)
        raw["warm_start"] = {"storage": storage_url(earlier), "study": earlier.name, "top": WARM_TOP}
    return parse_study(raw)


def run_stream(
    config: StudyConfig,
    *,
    n_trials: int | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    trust_pickle: bool = False,
) -> list[StreamRow]:
    """Run (or resume) every request in order; write the table, the drift plot and the stream's
    MLflow run. Bad requests are a :class:`UsageError` before anything is written."""
    requests = config.requests
    if requests is None:
        raise UsageError("this study file gives no `requests`: run it as a study")
    if storage is not None:
        config = config.model_copy(update={"storage": storage})
    indices = request_indices(config)  # overlaps and bad selections: before anything is written
    folder = stream_folder(config)
    state = folder / "stream.json"
    rows = [StreamRow(**row) for row in _read_rows(state)]
    if config.references.stream_bank():  # one bank: trained once, for all
        write_index_file(bank_file(config), torch.cat(indices))
    # The first request's study saves the stream's original with its outputs.
    first_original = folder / "request-0" / "models" / "original.pt"
    for number in range(len(requests)):
        if number < len(rows):
            continue  # finished before an interruption: read back, not redone
        previous = rows[number - 1] if number else None
        if previous is not None and previous.candidate is None:
            break  # no model to go on from
        if number:
            write_index_file(folder / f"request-{number}" / "previous.txt", torch.cat(indices[:number]))
        request = request_config(config, number, previous, tracking_uri)
        if progress:
            print(f"stream: request {number + 1} of {len(requests)}", file=sys.stderr, flush=True)
        run = run_study(request, n_trials=n_trials, progress=progress, trust_pickle=trust_pickle)
        rows.append(_row(number, request, run, first_original, sum(len(i) for i in indices[: number + 1])))
        _write_rows(state, rows)
    files = write_stream_outputs(folder, rows)
    _publish(config, rows, files, tracking_uri)
    return rows


def _costs(number: int, request: StudyConfig, run: Any) -> dict[str, float]:
    """What the request spent on references, and its all-in cost (references amortized)."""
    cost = request_cost(
        request.references, run.summary.trials, step_budget(request), run.summary.rate_scales_cost
    )
    ensemble = request.references.ensemble()
    spent = cost.references
    if ensemble is not None and ensemble.is_bank():  # trained once, with the first request
        spent = float(ensemble.seeds) if number == 0 else 0.0
    return {"reference_spent": spent, "all_in_cost": cost.total}


def _row(number: int, request: StudyConfig, run: Any, first_original: Path, deleted: int) -> StreamRow:
    trial = run.summary.recommended
    costs = _costs(number, request, run)
    stored = StudyRecord.of(run.study)
    parent = stored.parent_run
    if trial is None:
        # A front the gate refused entirely (the gate is in the loop) or no front at all.
        first = stored.verdicts.get(run.summary.ranked[0].number) if run.summary.ranked else None
        return StreamRow(
            request=number,
            study=request.name,
            deleted=deleted,
            trial=None,
            forget_efficacy=None,
            retained_utility=None,
            uis=None,
            cumulative_uis=None,
            verdict="no front trial passes the gate" if first else "no feasible configuration",
            failed=list(first.failed) if first else [],
            candidate=None,
            parent_run=parent,
            **costs,
        )
    record = TrialRecord.of(trial)
    candidate = request.output_dir() / "models" / "candidate.pt"
    problem = request.problem.build()  # the model's shape only
    shifted, start = (
        trainable_vector(model_from_state(problem, torch.load(path, weights_only=True), torch.device("cpu")))
        for path in (candidate, first_original)
    )
    cumulative = float(parameter_shift(shifted, start))
    verdict = stored.verdicts.get(trial.number)
    return StreamRow(
        request=number,
        study=request.name,
        deleted=deleted,
        trial=trial.number,
        forget_efficacy=record.metric("forget_efficacy"),
        retained_utility=record.metric("retained_utility"),
        uis=record.metric("uis"),
        cumulative_uis=cumulative,
        verdict=verdict.verdict if verdict else "not validated",
        failed=list(verdict.failed) if verdict else [],
        candidate=str(candidate.resolve()),
        parent_run=parent,
        **costs,
    )


def retrain_at(rows: list[StreamRow]) -> StreamRow | None:
    """The first request after which the running model fails the gate: retrain from scratch
    there."""
    return next((row for row in rows if row.verdict != "pass"), None)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = json.loads(path.read_text())["requests"]
    return rows


def _write_rows(path: Path, rows: list[StreamRow]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stop = retrain_at(rows)
    document = {
        "requests": [asdict(row) for row in rows],
        "retrain_at": None
        if stop is None
        else {"request": stop.request, "failed": stop.failed, "verdict": stop.verdict},
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(document, indent=1))
    os.replace(temporary, path)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def stream_markdown(rows: list[StreamRow]) -> str:
    stop = retrain_at(rows)
    lines = [
        f"# Request stream: {len(rows)} request(s)",
        "",
        "Forget efficacy and retained utility against a retrain on every instance deleted so far; "
        "UIS of the request (from the model before it) and cumulative (from the first original); "
        "the gate's verdict on the running model. Costs in retrain units: the reference models "
        "spent so far per request served (a bank shared by the stream is trained once, so this "
        "falls as requests accumulate), and each request's all-in cost with its references "
        "amortized over the requests that share them (report.md of the request has the parts).",
        "",
        "| request | deleted so far | trial | forget efficacy | retained utility | UIS | cumulative UIS "
        "| gate | reference retrains per request so far | all-in cost |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    spent = 0.0
    for served, row in enumerate(rows, start=1):
        gate = row.verdict if not row.failed else f"{row.verdict}: {', '.join(row.failed)}"
        spent += row.reference_spent or 0.0
        so_far = "—" if row.reference_spent is None else f"{spent / served:.3f}"
        lines.append(
            f"| {row.request} | {row.deleted} | {'—' if row.trial is None else row.trial} | "
            f"{_number(row.forget_efficacy)} | {_number(row.retained_utility)} | {_number(row.uis)} | "
            f"{_number(row.cumulative_uis)} | {gate} | {so_far} | {_number(row.all_in_cost)} |"
        )
    lines.append("")
    if stop is None:
        lines.append("Every request's model passed the gate: no retrain needed yet.")
    else:
        why = ", ".join(stop.failed) or stop.verdict
        lines.append(
            f"**Retrain from scratch at request {stop.request}**: the running model fails the gate ({why})."
        )
    lines += ["", "![drift](drift.png)", ""]
    return "\n".join(lines)


def drift_plot(rows: list[StreamRow], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    requests = [row.request for row in rows]
    for key, label in (
        ("forget_efficacy", "forget efficacy"),
        ("retained_utility", "retained utility"),
        ("cumulative_uis", "cumulative UIS"),
    ):
        values = [getattr(row, key) for row in rows]
        axis.plot(requests, [float("nan") if v is None else v for v in values], marker="o", label=label)
    stop = retrain_at(rows)
    if stop is not None:
        axis.axvline(
            stop.request, color="#d62728", linestyle="--", label=f"retrain at request {stop.request}"
        )
    axis.set_xlabel("request")
    axis.set_xticks(requests)
    axis.set_title("The running model after each request")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)


def write_stream_outputs(folder: Path, rows: list[StreamRow]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    markdown, plot = folder / "stream.md", folder / "drift.png"
    markdown.write_text(stream_markdown(rows))
    drift_plot(rows, plot)
    return [markdown, folder / "stream.json", plot]


def _publish(config: StudyConfig, rows: list[StreamRow], files: list[Path], tracking_uri: str | None) -> None:
    if not rows:
        return
    stop = retrain_at(rows)
    metrics: dict[str, float | None] = {}
    for row in rows:
        metrics[f"request_{row.request}/forget_efficacy"] = row.forget_efficacy
        metrics[f"request_{row.request}/retained_utility"] = row.retained_utility
        metrics[f"request_{row.request}/cumulative_uis"] = row.cumulative_uis
    publish_group(
        request_config(config, 0, None, tracking_uri),
        tracking_uri,
        tag=STREAM_TAG,
        name=config.name,
        role="stream",
        params={"requests": len(config.requests or [])},
        metrics=metrics,
        tags={"retrain_at": "none" if stop is None else str(stop.request)},
        files=files,
        parents=[row.parent_run for row in rows if row.parent_run is not None],
    )
