"""MLflow tracking (DESIGN §7): one parent run per study invocation, one nested run per trial.

Everything goes through :class:`mlflow.MlflowClient` with explicit run ids rather than the
fluent API's thread-local active run, so trials running in threads (``n_jobs > 1``) each log
to their own run. Metric writes are batched (``log_batch``): a trial costs a handful of
requests, not one per value.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tune_unlearn import __version__

#: MLflow's limit on entries in one ``log_batch`` request.
_BATCH = 1000
_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached."""


def default_tracking_uri(output: Path) -> str:
    return f"sqlite:///{(output / 'mlflow.db').resolve()}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast on an HTTP tracking URI whose server does not answer its health check.

    MLflow's own client retries with backoff for minutes; a study should stop before its first
    trial instead, with a message that names the URI.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status >= 400:
                raise TrackingUnavailable(f"tracking server {uri} answered HTTP {response.status}")
    except (urllib.error.URLError, OSError) as error:
        raise TrackingUnavailable(f"tracking server {uri} cannot be reached: {error}") from None


def _finite_metrics(values: Mapping[str, float | None], timestamp: int, step: int = 0) -> list[Any]:
    from mlflow.entities import Metric

    return [
        Metric(key, float(v), timestamp, step)
        for key, v in values.items()
        if isinstance(v, (int, float)) and math.isfinite(v)
    ]


def _chunks(items: Sequence[Any], size: int = _BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Tracker:
    """Logs a study to MLflow."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.uri = uri
        mlflow.set_tracking_uri(uri)  # for the model flavour's fluent calls after the study
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            # A store the client writes itself keeps artifacts beside the study's outputs, not in
            # the working folder; a tracking server decides for itself.
            local = not uri.startswith(("http://", "https://"))
            location = artifact_root.resolve().as_uri() if artifact_root is not None and local else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        self.parent_run_id: str | None = None

    # -- the study's parent run --------------------------------------------------------------
    def start_study(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={**tags, "tune_unlearn.role": "study"}
        )
        self.parent_run_id = run.info.run_id
        flat = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for chunk in _chunks(flat, 100):
            self.client.log_batch(self.parent_run_id, params=chunk)
        return self.parent_run_id

    def attach(self, parent_run_id: str) -> None:
        """Log trials under an existing parent run (workers of a distributed study)."""
        self.client.get_run(parent_run_id)  # fails loudly if it does not exist
        self.parent_run_id = parent_run_id

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str | None = None) -> None:
        if self.parent_run_id is None:
            raise RuntimeError("no parent run")
        for path in paths:
            if path.exists():
                self.client.log_artifact(self.parent_run_id, str(path), artifact_path)

    def finish_study(self, status: str = "FINISHED") -> None:
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status)

    # -- trial runs -------------------------------------------------------------------------
    def start_trial(self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        from mlflow.entities import Param, RunTag

        if self.parent_run_id is None:
            raise RuntimeError("start the study's parent run before its trials")
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number}",
            tags={"mlflow.parentRunId": self.parent_run_id, "trial": str(number), "state": "running", **tags},
        )
        run_id: str = run.info.run_id
        self.client.log_batch(
            run_id,
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag("tune_unlearn.role", "trial")],
        )
        return run_id

    def end_trial(
        self,
        run_id: str,
        state: str,
        *,
        metrics: Mapping[str, float | None] | None = None,
        curves: Mapping[str, Sequence[float]] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Metrics, per-step curves (as metric history) and tags in batches; then the status."""
        from mlflow.entities import RunTag

        now = int(time.time() * 1000)
        entries = _finite_metrics(metrics or {}, now)
        for key, values in (curves or {}).items():
            entries += [
                m
                for step, value in enumerate(values)
                for m in _finite_metrics({f"curve/{key}": value}, now, step)
            ]
        run_tags = [RunTag("state", state), *(RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items())]
        for chunk in _chunks(entries):
            self.client.log_batch(run_id, metrics=chunk)
        self.client.log_batch(run_id, tags=run_tags)
        self.client.set_terminated(run_id, _STATUS[state])

    def tag_runs(self, tags_by_run: Mapping[str, Mapping[str, str]]) -> None:
        from mlflow.entities import RunTag

        for run_id, tags in tags_by_run.items():
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    # -- the candidate model ----------------------------------------------------------------
    def log_model(self, model: Any, example_input: Any, name: str = "candidate") -> str:
        """The model with MLflow's PyTorch flavour and a signature, on the parent run."""
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        if self.parent_run_id is None:
            raise RuntimeError("no parent run")
        model.eval()
        with torch.no_grad():
            outputs = {k: v.cpu().numpy() for k, v in model(example_input).items()}
        signature = infer_signature(example_input.cpu().numpy(), outputs)
        with mlflow.start_run(run_id=self.parent_run_id), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Pickle (not MLflow's default traced 'pt2'): `gate` loads it back as the problem's
            # own module, with its named heads, to measure it like any candidate.
            info = mlflow.pytorch.log_model(
                model, name=name, signature=signature, serialization_format="pickle"
            )
        return str(info.model_uri)


def study_tags(config: Any, storage: str) -> dict[str, str]:
    tags = {
        "study": config.name,
        "problem": str(config.problem.name or config.problem.factory),
        "forget_mode": config.forget.mode,
        "method": config.method.name,
        "sampler": config.sampler.name,
        "storage": _redact(storage),
        "package_version": __version__,
    }
    commit = _git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def _redact(url: str) -> str:
    """Storage URLs may carry a password; keep it out of the tracking server."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


def _git_commit() -> str | None:
    import subprocess

    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
