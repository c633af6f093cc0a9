"""MLflow tracking: one parent run per study invocation, one nested run per trial.

Everything goes through :class:`mlflow.MlflowClient` with explicit run ids rather than the
fluent API's thread-local active run, so trials running in threads (``n_jobs > 1``) each log
to their own run. Metric writes are batched (``log_batch``): a trial costs a handful of
requests, not one per value.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

from tune_unlearn._version import __version__
from tune_unlearn.config.storages import StorageUrl, redact
from tune_unlearn.config.study_config import StudyConfig

#: MLflow's limit on entries in one ``log_batch`` request.
_BATCH = 1000
_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED", "killed": "KILLED"}

#: MLflow's HTTP client retries a failed request 7 times with backoff factor 2 and a 120 s
#: timeout: minutes per call against a server that died. A study bounds that (a user's own
#: environment variables still win): about half a minute, then the tracker is marked lost.
_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # MLflow prints "View run … / View experiment …" for every run it ends: one line per trial.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # ... and a progress bar per artifact download while logging a model.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
#: What the MLflow UI opens an experiment on: its runs, not the GenAI overview.
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")

F = TypeVar("F", bound=Callable[..., Any])


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached."""


def _guarded(method: F) -> F:
    """A tracking call that fails marks the tracker lost (one warning) instead of failing the
    trial or the study; later calls do nothing. The study decides what a lost tracker means
    (``tracking.required``)."""

    @functools.wraps(method)
    def wrapper(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        if self.lost is not None:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as error:  # MLflow raises many kinds; all mean "tracking stopped"
            self.lost = redact(f"{type(error).__name__}: {error}")
            print(
                f"warning: MLflow tracking at {redact(self.uri)} failed, stopped logging: {self.lost}",
                file=sys.stderr,
            )
            return None

    return wrapper  # type: ignore[return-value]


def default_tracking_uri(output: Path) -> str:
    return f"sqlite:///{(output / 'mlflow.db').resolve()}"


def resolve_tracking_uri(config: StudyConfig, override: str | None = None, folder: Path | None = None) -> str:
    """The one rule for where a study tracks: ``--tracking-uri``, else the study file's
    ``tracking.uri``, else a SQLite store in ``folder`` (default: the study's output)."""
    return override or config.tracking.uri or default_tracking_uri(folder or config.output_dir())


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
        for key, value in _ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        import mlflow
        from mlflow import MlflowClient

        self.uri = uri
        self.lost: str | None = None  # why tracking stopped mid-study, once it has
        mlflow.set_tracking_uri(uri)  # for the model flavour's fluent calls after the study
        # Processes opening one SQLite store together race in MLflow's schema migration
        # ("duplicate column name", "_alembic_tmp_… already exists"): one at a time.
        with store_lock(uri):
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is not None:
                self.experiment_id = found.experiment_id
            else:
                # A store the client writes itself keeps artifacts beside the study's outputs,
                # not in the working folder; a tracking server decides for itself.
                local = not uri.startswith(("http://", "https://"))
                location = artifact_root.resolve().as_uri() if artifact_root is not None and local else None
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=location, tags=dict([_EXPERIMENT_KIND])
                )
        self.parent_run_id: str | None = None

    # -- the study's parent run --------------------------------------------------------------
    @_guarded
    def start_study(
        self, name: str, tags: Mapping[str, str], params: Mapping[str, Any], role: str = "study"
    ) -> str:
        """Open the parent run (``role``: a ``study``, or a ``comparison`` of studies)."""
        from mlflow.entities import Param

        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={**tags, "tune_unlearn.role": role}
        )
        self.parent_run_id = run.info.run_id
        flat = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for chunk in _chunks(flat, 100):
            self.client.log_batch(self.parent_run_id, params=chunk)
        return self.parent_run_id

    @_guarded
    def is_open(self, run_id: str) -> bool:
        """Whether the run exists and is still running (a parent to join)."""
        from mlflow.exceptions import MlflowException

        try:
            return bool(self.client.get_run(run_id).info.status == "RUNNING")
        except MlflowException:  # deleted, or recorded against another store
            return False

    @_guarded
    def find_run(self, tag: str, value: str) -> str | None:
        """The newest run of this experiment whose ``tag`` is ``value``, if any."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1
        )
        return found[0].info.run_id if found else None

    def attach(self, parent_run_id: str) -> None:
        """Log trials under an existing parent run (workers of a distributed study)."""
        self.client.get_run(parent_run_id)  # fails loudly if it does not exist
        self.parent_run_id = parent_run_id

    @_guarded
    def log_artifacts(self, paths: Iterable[Path], artifact_path: str | None = None) -> None:
        if self.parent_run_id is None:
            raise RuntimeError("no parent run")
        for path in paths:
            if path.exists():
                self.client.log_artifact(self.parent_run_id, str(path), artifact_path)

    @_guarded
    def finish_study(self, status: str = "FINISHED") -> None:
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status)

    # -- trial runs -------------------------------------------------------------------------
    @_guarded
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
        try:
            self.client.log_batch(
                run_id,
                params=[Param(k, str(v)) for k, v in params.items()],
                tags=[RunTag("tune_unlearn.role", "trial")],
            )
        except KeyboardInterrupt:  # interrupted before the caller learns the run: end it here
            self.client.set_terminated(run_id, "KILLED")
            raise
        return run_id

    @_guarded
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

    @_guarded
    def end_abandoned_trial(self, run_id: str, reason: str) -> None:
        """End the run of a trial whose worker died or was interrupted: killed, with why."""
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag("state", "killed"), RunTag("fail_reason", reason[:5000])])
        self.client.set_terminated(run_id, "KILLED")

    @_guarded
    def log_summary(self, metrics: Mapping[str, float | None], tags: Mapping[str, str]) -> None:
        """The study's summary on its parent run (hypervolume, the recommended trial's values),
        so studies compare side by side in the runs table."""
        from mlflow.entities import RunTag

        if self.parent_run_id is None:
            raise RuntimeError("no parent run")
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.parent_run_id,
            metrics=_finite_metrics(metrics, now),
            tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()],
        )

    @_guarded
    def tag_runs(self, tags_by_run: Mapping[str, Mapping[str, str]]) -> None:
        from mlflow.entities import RunTag

        for run_id, tags in tags_by_run.items():
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    # -- the candidate model ----------------------------------------------------------------
    @_guarded
    def log_model(self, model: Any, example_input: Any, name: str = "candidate") -> str:
        """The model with MLflow's PyTorch flavour and a signature, on the parent run."""
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        from tune_unlearn.references.training import MLFLOW_STATE_FILE

        if self.parent_run_id is None:
            raise RuntimeError("no parent run")
        model.eval()
        with torch.no_grad():
            outputs = {k: v.cpu().numpy() for k, v in model(example_input).items()}
        signature = infer_signature(example_input.cpu().numpy(), outputs)
        with (
            tempfile.TemporaryDirectory() as folder,
            mlflow.start_run(run_id=self.parent_run_id),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            # MLflow's pickle caution is what the state dict below answers; its local-version
            # note about torch's "+cpu" label is noise to a study's user.
            for logger in ("mlflow.pytorch", "mlflow.utils.requirements_utils"):
                logging.getLogger(logger).setLevel(logging.ERROR)
            # The weights alone ride along: `gate` and `references.original` load them with
            # weights_only=True into the problem's own module, never unpickling the module.
            weights = Path(folder) / MLFLOW_STATE_FILE
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
            # Pickle (not MLflow's default traced 'pt2'): `mlflow.pytorch.load_model` users
            # get the problem's own module, with its named heads.
            # Requirements stated, not inferred: MLflow's inference runs a subprocess that
            # imports the model's modules, 4 s per study on two cores.
            requirements = [*mlflow.pytorch.get_default_pip_requirements(), f"tune-unlearn=={__version__}"]
            info = mlflow.pytorch.log_model(
                model,
                name=name,
                signature=signature,
                serialization_format="pickle",
                extra_files=[str(weights)],
                pip_requirements=requirements,
            )
        return str(info.model_uri)


def store_lock(uri: str) -> Any:
    """A lock beside a SQLite tracking store (nothing to lock for a server)."""
    path = StorageUrl.parse(uri).local_path if uri.startswith("sqlite:///") else None
    if path is None:
        return contextlib.nullcontext()
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_name(path.name + ".lock")))


def study_tags(config: Any, storage: str, device: str = "") -> dict[str, str]:
    """The parent run's tags; ``device`` (``cpu``, ``cuda``) says what ``gpu_seconds`` timed:
    CUDA event time on a GPU, wall seconds of the unlearning phase on a CPU."""
    tags = {
        "study": config.name,
        "problem": str(config.problem.name or config.problem.factory),
        "forget_mode": config.forget.mode,
        "method": config.method.name,
        "sampler": config.sampler.name,
        "storage": redact(storage),
        "package_version": __version__,
    }
    if device:
        tags["device"] = device
    commit = _git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


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
