"""Nothing lost, nothing leaked, same answer twice: interrupts, concurrent starts, deaths of
workers and tracking servers, corrupted caches, unwritable folders, credentials, determinism.

Real processes, real signals, a real ``mlflow server`` and real PostgreSQL, as in CI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import psycopg
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tune_unlearn.distributed import RETRY_ATTR, counted_trials
from tune_unlearn.experiment import Experiment
from tune_unlearn.references import ReferenceCache
from tune_unlearn.runner import run_study
from tune_unlearn.study import open_storage, storage_url

from .helpers import cli, tiny_study, wait_for_running_trial, write_study

POSTGRES = os.environ.get("TUNE_UNLEARN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")

LONG_TRIALS = {
    "name": "interference_aware",
    "fixed": {"steps": 300, "batch_size": 16},
    "search": {"ascent_lr": {"low": 1e-4, "high": 1e-3, "log": True}},
}


def load(config_or_url: object) -> optuna.Study:
    url = config_or_url if isinstance(config_or_url, str) else storage_url(config_or_url)  # type: ignore[arg-type]
    return optuna.load_study(study_name="tiny", storage=open_storage(url))


# -- interrupts ------------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "signum"), [("run", signal.SIGINT), ("worker", signal.SIGTERM)])
def test_an_interrupted_trial_fails_with_its_reason_is_retried_and_a_rerun_finishes_the_budget(
    tmp_path: Path, command: str, signum: int
) -> None:
    config = tiny_study(tmp_path, method=LONG_TRIALS, tracking={"enabled": True})
    path = write_study(tmp_path, config)
    process = cli(command, str(path), "--no-progress", "--threads", "1")
    wait_for_running_trial(storage_url(config), process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "run the same command again to resume" in err

    study = load(config)
    (interrupted,) = [t for t in study.trials if t.state == TrialState.FAIL]
    name = signal.Signals(signum).name
    assert interrupted.user_attrs["fail_reason"] == f"interrupted ({name}); retried"
    (retry,) = [t for t in study.trials if t.state == TrialState.WAITING]
    assert retry.user_attrs[RETRY_ATTR] == interrupted.number
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    killed = client.get_run(interrupted.user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED" and killed.data.tags["fail_reason"].startswith("interrupted")
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "KILLED"

    rerun = cli("run", str(path), "--no-progress", "--threads", "1")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    study = load(config)
    trials = study.get_trials(deepcopy=False)
    assert counted_trials(trials) == config.n_trials  # resumed to the budget, not n_trials more
    retried = [t for t in trials if t.user_attrs.get(RETRY_ATTR) == interrupted.number]
    assert [t.params for t in retried] == [interrupted.params]
    assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert (tmp_path / "out" / "pareto.json").exists()
    assert f"of a budget of {config.n_trials}" in out


def test_a_rerun_resumes_to_the_budget_and_add_trials_raises_it(tmp_path: Path) -> None:
    config = tiny_study(tmp_path)
    assert run_study(config, progress=False).trials_run == 3
    again = run_study(config, progress=False)
    assert again.trials_run == 0 and len(again.study.trials) == 3  # finished: nothing to add
    more = run_study(config, add_trials=2, progress=False)
    assert more.trials_run == 2 and len(more.study.trials) == 5
    params = [tuple(sorted(t.params.items())) for t in more.study.trials]
    assert len(set(params)) == 5  # a resumed process draws from its own sampler stream


# -- concurrent starts ----------------------------------------------------------------------
def test_two_runs_started_together_on_the_embedded_defaults_share_one_budget(tmp_path: Path) -> None:
    config = tiny_study(tmp_path, n_trials=4, tracking={"enabled": True})
    path = write_study(tmp_path, config)
    Experiment(config, progress=False)  # references cached: the two start their trials together
    processes = [cli("run", str(path), "--no-progress", "--threads", "1") for _ in range(2)]
    results = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
    study = load(config)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]  # one budget between them
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 4  # distinct sampler seeds: no configuration twice
    document = json.loads((tmp_path / "out" / "pareto.json").read_text())
    assert sum(document["counts"][s] for s in ("complete", "pruned", "fail")) == 4
    assert document["counts"]["running"] == 0  # written from a finished snapshot
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny"]
    runs = client.search_runs([experiment.experiment_id], "tags.`tune_unlearn.role` = 'trial'")
    assert len(runs) == 4 and all(r.info.status in ("FINISHED", "KILLED") for r in runs)


# -- workers that die ---------------------------------------------------------------------------
def test_a_worker_started_within_a_dead_workers_grace_period_waits_and_retries_its_trial(
    tmp_path: Path,
) -> None:
    config = tiny_study(
        tmp_path,
        method=LONG_TRIALS,
        tracking={"enabled": True},
        workers={"heartbeat_interval": 0.5, "grace_period": 8.0},
    )
    path = write_study(tmp_path, config)
    doomed = cli("worker", str(path), "--no-progress", "--threads", "1")
    wait_for_running_trial(storage_url(config), doomed)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    started = time.monotonic()
    survivor = cli("worker", str(path), "--no-progress", "--threads", "1")  # well within 8 s
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    assert time.monotonic() - started > 8.0 - 1.0  # it waited out the grace period
    study = load(config)
    trials = study.get_trials(deepcopy=False)
    (orphan,) = [t for t in trials if "worker stopped" in t.user_attrs.get("fail_reason", "")]
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_ATTR) == orphan.number]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert counted_trials(trials) == config.n_trials
    assert "study complete" in out
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    abandoned = client.get_run(orphan.user_attrs["mlflow_run_id"])
    assert abandoned.info.status == "KILLED", err
    assert "worker stopped" in abandoned.data.tags["fail_reason"]


# -- a tracking server that dies mid-study ------------------------------------------------------
@pytest.fixture
def dying_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
        start_new_session=True,  # its workers die with it
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
    yield server, uri
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("required", [False, True])
def test_a_tracking_server_dying_mid_study_loses_no_trial(
    tmp_path: Path, dying_server: tuple[subprocess.Popen[bytes], str], required: bool
) -> None:
    server, uri = dying_server
    config = tiny_study(tmp_path, method=LONG_TRIALS, tracking={"uri": uri, "required": required})
    path = write_study(tmp_path, config)
    process = cli("run", str(path), "--no-progress", "--threads", "1")
    wait_for_running_trial(storage_url(config), process)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    started = time.monotonic()
    out, err = process.communicate(timeout=300)
    assert time.monotonic() - started < 120  # bounded retries, not MLflow's minutes per call
    assert "Traceback" not in err
    study = load(config)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert all(t.state != TrialState.FAIL or t.user_attrs.get("fail_reason") for t in finished)
    assert (tmp_path / "out" / "pareto.json").exists()  # the outputs, locally, either way
    if required:
        assert process.returncode == 3 and "stopped answering" in err
    else:
        assert process.returncode == 0, err
        assert "stopped logging" in err
        assert counted_trials(study.trials) == config.n_trials
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


# -- faults on disk ---------------------------------------------------------------------------
def test_a_corrupt_cached_reference_is_retrained_with_a_warning_naming_it(tmp_path: Path) -> None:
    config = tiny_study(tmp_path)
    experiment = Experiment(config, progress=False)
    cache = ReferenceCache(tmp_path / "cache")
    original = cache.root / f"original-{cache.key('original', experiment.problem, 0)}.pt"
    member = cache.root / f"retrain-{cache.key('retrain', experiment.problem, 1, experiment.request)}.json"
    original.write_bytes(original.read_bytes()[:100])  # truncated
    member.write_text("{not json")  # garbled
    with pytest.warns(UserWarning) as caught:
        again = Experiment(config, progress=False)
    messages = " ".join(str(w.message) for w in caught)
    assert str(original) in messages and str(member) in messages and "training it again" in messages
    assert again.trained_references == ["original", "retrain ×1"]
    with warnings_as_errors():
        assert Experiment(config, progress=False).trained_references == []  # intact again


def warnings_as_errors():  # type: ignore[no-untyped-def]
    import warnings

    context = warnings.catch_warnings()
    context.__enter__()
    warnings.simplefilter("error")

    class _Exit:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> None:
            context.__exit__(*exc)

    return _Exit()


def test_an_output_folder_that_cannot_be_created_is_refused_before_anything_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tiny_study(tmp_path, output=str(blocker / "out"))
    path = write_study(tmp_path, config)
    process = cli("run", str(path), "--no-progress", "--threads", "1")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    assert f"the output folder {blocker / 'out'} cannot be written" in err
    assert "tracking" not in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # nothing trained


# -- secrets -----------------------------------------------------------------------------------
@pytest.fixture
def password_storage() -> Iterator[str]:
    """A PostgreSQL storage URL with a password in it (trust auth ignores the password)."""
    database = f"tune_unlearn_secret_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    yield POSTGRES.replace("postgres@", "postgres:s3cr3t-pw@") + f"/{database}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_a_password_in_the_storage_url_reaches_no_output(
    tmp_path: Path, password_storage: str, capfd: pytest.CaptureFixture[str]
) -> None:
    config = tiny_study(tmp_path, n_trials=2, storage=password_storage, tracking={"enabled": True})
    run = run_study(config, progress=False)
    captured = capfd.readouterr()
    secret = "s3cr3t-pw"
    assert secret not in captured.out + captured.err
    assert secret not in (run.output / "study.resolved.yaml").read_text()
    assert "postgres:***@" in (run.output / "study.resolved.yaml").read_text()
    assert secret not in json.dumps(run.study.user_attrs)
    client = MlflowClient(tracking_uri=f"sqlite:///{run.output / 'mlflow.db'}")
    parent = client.get_run(run.study.user_attrs["mlflow_parent_run_id"])
    assert secret not in json.dumps({**parent.data.params, **parent.data.tags})
    for artifact in (run.output / "mlartifacts").rglob("*.yaml"):
        assert secret not in artifact.read_text()
