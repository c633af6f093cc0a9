"""Worker processes sharing one study on PostgreSQL, a journal file and Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tune_unlearn.report.trial_record import RETRY_OF
from tune_unlearn.study.distributed import retried_numbers
from tune_unlearn.study.objective import open_storage

from ..helpers import POSTGRES, REDIS, postgres_admin, redis_client, tiny_study


@pytest.fixture
def postgres_url() -> Iterator[str]:
    database = f"tune_unlearn_workers_{uuid.uuid4().hex[:8]}"
    with postgres_admin() as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    yield f"{POSTGRES}/{database}"
    with postgres_admin() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis_client()
    client.flushdb()
    yield REDIS
    client.flushdb()


def study_file(tmp: Path, budget: int, steps: int) -> Path:
    config = tiny_study(
        tmp,
        n_trials=budget,
        method={
            "name": "interference_aware",
            "fixed": {"steps": steps, "batch_size": 16},
            "search": {"ascent_lr": {"low": 1e-4, "high": 1e-3, "log": True}},
        },
        workers={"heartbeat_interval": 0.5, "grace_period": 3.0},
    )
    path = tmp / "study.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    return path


def worker(path: Path, storage: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tune_unlearn", "worker", str(path), "--storage", storage, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def finish(process: subprocess.Popen[str], timeout: float = 240) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


def test_two_workers_on_postgres_share_an_exact_budget_and_train_references_once(
    tmp_path: Path, postgres_url: str
) -> None:
    path = study_file(tmp_path, budget=6, steps=4)
    outputs = [finish(p) for p in [worker(path, postgres_url), worker(path, postgres_url)]]
    study = optuna.load_study(study_name="tiny", storage=open_storage(postgres_url))
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(6))  # exactly the budget, no number twice
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    ran = [int(out.split("worker ran ")[1].split()[0]) for out in outputs]
    assert sum(ran) == 6
    trained = [line for out in outputs for line in out.splitlines() if "trained references:" in line]
    assert sum("original" in line for line in trained) == 1  # the other worker waited and reused it
    assert sum("retrain" in line for line in trained) == 1
    assert sum("study complete" in out for out in outputs) >= 1
    assert (tmp_path / "out" / "pareto.json").exists()


@pytest.mark.parametrize("backend", ["postgres", "journal", "redis"])
def test_a_killed_workers_trial_is_retried_and_the_study_completes(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    storage = {
        "postgres": lambda: request.getfixturevalue("postgres_url"),
        "journal": lambda: str(tmp_path / "journal.log"),
        "redis": lambda: request.getfixturevalue("redis_url"),
    }[backend]()
    path = study_file(tmp_path, budget=3, steps=300)
    doomed = worker(path, storage)
    deadline = time.monotonic() + 120
    while True:  # kill it in the middle of a trial
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="tiny", storage=open_storage(storage))
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if any(t.params for t in running):  # its configuration chosen: mid-trial
                break
        except KeyError:
            pass  # not created yet
        assert doomed.poll() is None and time.monotonic() < deadline, doomed.communicate()[0]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()

    out = finish(worker(path, storage))
    study = optuna.load_study(study_name="tiny", storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    orphaned = [
        t
        for t in trials
        if t.state == TrialState.FAIL and "worker stopped" in t.user_attrs.get("fail_reason", "")
    ]
    assert len(orphaned) == 1
    retries = [t for t in trials if t.user_attrs.get(RETRY_OF) == orphaned[0].number]
    assert len(retries) == 1 and retries[0].params == orphaned[0].params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert len(trials) - len(retried_numbers(trials)) == 3  # the budget, retries not counted twice
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert "study complete" in out
