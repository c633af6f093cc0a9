"""Workers sharing one study through its storage: an exact global trial budget,
a heartbeat per running trial, and retries of the trials of workers that died.

Optuna 5 keeps trial heartbeats for RDB storages only; journal storages (a file, Redis) have
none. So that every storage behaves alike, a worker runs its own heartbeat: a thread stamps the
running trial's ``heartbeat`` attribute every ``interval`` seconds. Under a lock held in the
storage's own engine (a PostgreSQL advisory lock, a Redis lock, or a file lock beside a SQLite
database or journal file), a worker then

1. fails every running trial whose stamp is older than ``grace`` seconds and enqueues a retry
   with the same parameters (attribute ``retry_of``), as Optuna's ``RetryFailedTrialCallback``
   does;
2. takes a waiting trial (a retry) if there is one, else starts a new trial while fewer than the
   budget exist, not counting trials that were retried; else stops.

Trial numbers come from the storage, so none is used twice, and the budget is exact however
many workers race for the last trial.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from filelock import FileLock
from optuna.trial import FrozenTrial, TrialState

from tune_unlearn.config.storages import StorageUrl
from tune_unlearn.report.trial_record import HEARTBEAT, RETRY_OF
from tune_unlearn.study.optuna_adapter import fail_if_running, set_trial_attr


@contextlib.contextmanager
def budget_lock(storage_url: str, study_name: str) -> Iterator[None]:
    """A lock shared by every worker of the study, wherever they run."""
    key = f"tune_unlearn:{study_name}:budget"
    storage = StorageUrl.parse(storage_url)
    if storage.kind == "postgresql":
        import psycopg

        conninfo = "postgresql://" + storage_url.split("://", 1)[1]
        lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
            try:
                yield
            finally:
                connection.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
        return
    if storage.kind == "redis":
        import redis

        client = redis.Redis.from_url(storage_url)
        with client.lock(key, timeout=120, blocking_timeout=300):
            yield
        return
    path = storage.local_path
    if path is None:
        raise ValueError("distributed workers support SQLite, PostgreSQL, journal files and Redis, not MySQL")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".budget.lock"))):
        yield


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    return {int(t.user_attrs[RETRY_OF]) for t in trials if RETRY_OF in t.user_attrs}


def counted_trials(trials: list[FrozenTrial]) -> int:
    """Trials that count toward the budget: every trial except those retried (an interrupted
    or abandoned trial is replaced by its retry, which counts instead)."""
    return len(trials) - len(retried_numbers(trials))


#: Called with each trial this process fails: its MLflow run is ended there.
OnFailed = Callable[[FrozenTrial, str], None]


def fail_and_retry(
    study: optuna.Study, trial: optuna.Trial | FrozenTrial, params: dict[str, Any], reason: str
) -> bool:
    """Fail a running trial with ``reason`` and enqueue a retry with the same parameters;
    ``False`` when it had finished already (or another process got there first)."""
    if not fail_if_running(study, trial, reason):
        return False
    study.enqueue_trial(params, user_attrs={RETRY_OF: trial.number}, skip_if_exists=False)
    return True


def fail_stale_trials(study: optuna.Study, grace: float, on_failed: OnFailed | None = None) -> list[int]:
    """Fail running trials whose heartbeat stopped, and enqueue a retry of each."""
    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.user_attrs.get(HEARTBEAT)
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        if now - float(beat if beat is not None else started) <= grace:
            continue
        reason = f"worker stopped (no heartbeat for {grace:g} s); retried"
        if fail_and_retry(study, trial, trial.params, reason):
            failed.append(trial.number)
            if on_failed is not None:
                on_failed(trial, reason)
    return failed


def claim_trial(
    study: optuna.Study,
    storage_url: str,
    budget: int,
    grace: float,
    on_failed: OnFailed | None = None,
) -> optuna.Trial | None:
    """The next trial this worker runs, or ``None`` when the budget is spent."""
    with budget_lock(storage_url, study.study_name):
        fail_stale_trials(study, grace, on_failed)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and counted_trials(trials) >= budget:
            return None
        trial = study.ask()  # pops a waiting trial first, else creates one
        set_trial_attr(study, trial, HEARTBEAT, time.time())
        return trial


def live_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials still running somewhere (a retry may yet come of them) or waiting for a worker."""
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))


class Heartbeat:
    """Stamps a running trial's heartbeat attribute until stopped."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, interval: float) -> None:
        self._study, self._trial, self._interval = study, trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{trial.number}")

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):  # the trial may have finished meanwhile
                set_trial_attr(self._study, self._trial, HEARTBEAT, time.time())

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
