from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from tune_unlearn.config.study_config import StudyConfig, parse_study


def tiny_study(tmp: Path, **overrides: Any) -> StudyConfig:
    """A study on digits small enough to run in a second or two on one CPU core."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "problem": {"name": "digits", "params": {"hidden": 16, "epochs": 8}, "seed": 0},
        "forget": {"mode": "partial", "target_tasks": ["digit"], "where": {"digit": 3}},
        "method": {
            "name": "graddiff",
            "fixed": {"steps": 6, "batch_size": 16},
            "search": {
                "ascent_lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                "retain_lr": {"type": "float", "low": 1e-2, "high": 1e-1, "log": True},
            },
        },
        "n_trials": 3,
        "sampler": {"name": "random", "seed": 0},
        "output": str(tmp / "out"),
        "references": {"cache_dir": str(tmp / "cache")},
        "device": "cpu",
        # MLflow's store set-up costs seconds per study; tests/tracking/test_tracking.py turns it on.
        "tracking": {"enabled": False},
    }
    for key, value in overrides.items():
        raw[key] = value
    return parse_study(raw)


def write_study(tmp: Path, config: StudyConfig, name: str = "study.yaml") -> Path:
    """The study as a file, for tests that run the command line in another process."""
    import json

    path = tmp / name
    path.write_text(json.dumps(config.model_dump(mode="json")))
    return path


def cli(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """``python -m tune_unlearn ARGS`` in a process of its own (signals, kills, races)."""
    import os
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "tune_unlearn", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Ctrl-C as at a terminal: a test run started in the background (`cmd &` in a script)
        # inherits SIGINT ignored, and Python then never installs its KeyboardInterrupt handler.
        preexec_fn=_sigint_as_at_a_terminal,
    )


def _sigint_as_at_a_terminal() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_running_trial(
    storage: str, process: subprocess.Popen[str], timeout: float = 120, attribute: str | None = None
) -> None:
    """Until the study holds a running trial whose configuration is chosen (mid-trial) and,
    with ``attribute``, that carries it (``mlflow_run_id``: its run exists, unlearning began)."""
    import time

    import optuna
    from optuna.trial import TrialState

    from tune_unlearn.study.objective import open_storage

    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="tiny", storage=open_storage(storage))
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if any(t.params and (attribute is None or attribute in t.user_attrs) for t in running):
                return
        except KeyError:
            pass  # not created yet
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no trial started: {process.communicate()}")


#: Services the distributed and tracking tests use: overridable, with the CI machine's defaults.
POSTGRES = os.environ.get("TUNE_UNLEARN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("TUNE_UNLEARN_TEST_REDIS", "redis://127.0.0.1:6379/13")  # emptied by tests


def postgres_admin() -> Any:
    """A connection to the server's ``postgres`` database, or a test failure that says how to
    start one (CI runs these tests; they are never skipped)."""
    import psycopg

    try:
        return psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        import pytest

        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES} ({error}). Start it (for example "
            "`pg_ctlcluster <version> main start`, or `docker run -p 5432:5432 -e "
            "POSTGRES_HOST_AUTH_METHOD=trust postgres`), or point TUNE_UNLEARN_TEST_POSTGRES at one."
        )


def redis_client() -> Any:
    """The tests' Redis database, or a test failure that says how to start Redis."""
    import redis

    client = redis.Redis.from_url(REDIS, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError as error:
        import pytest

        pytest.fail(
            f"Redis is not reachable at {REDIS} ({error}). Start it (for example "
            "`redis-server --daemonize yes`, or `docker run -p 6379:6379 redis`), or point "
            "TUNE_UNLEARN_TEST_REDIS at one."
        )
    return client


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mlflow_server(backend: str, artifacts: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``mlflow server`` on a free loopback port, in a process group of its own (so its
    workers can be killed with it), once it answers its health check."""
    import sys
    import time
    import urllib.request

    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", backend, "--artifacts-destination", str(artifacts), "--workers", "1"]
    with log.open("w") as output:
        server = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_TRACKING_URI": ""},
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return server, uri
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{log.read_text()}") from None
            time.sleep(0.5)


def group_and_studies(store: Path, experiment_name: str, role: str) -> tuple[Any, list[Any]]:
    """The one MLflow run of a group of studies (``role``: comparison, stream) in a SQLite
    store, and the study runs, each checked to be nested under it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    groups = [r for r in runs if r.data.tags.get("tune_unlearn.role") == role]
    assert len(groups) == 1
    studies = [r for r in runs if r.data.tags.get("tune_unlearn.role") == "study"]
    assert all(r.data.tags.get("mlflow.parentRunId") == groups[0].info.run_id for r in studies)
    return groups[0], studies
