"""Workers sharing one study through its storage (DESIGN §5): an exact global trial budget,
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
from filelock import FileLock
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_ATTR = "heartbeat"
RETRY_ATTR = "retry_of"


@dataclass(frozen=True)
class HeartbeatSettings:
    interval: float = 5.0
    grace: float = 20.0


@contextlib.contextmanager
def budget_lock(storage_url: str, study_name: str) -> Iterator[None]:
    """A lock shared by every worker of the study, wherever they run."""
    key = f"tune_unlearn:{study_name}:budget"
    if storage_url.startswith(("postgresql://", "postgresql+")):
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
    if storage_url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        client = redis.Redis.from_url(storage_url)
        with client.lock(key, timeout=120, blocking_timeout=300):
            yield
        return
    if storage_url.startswith(("mysql://", "mysql+")):
        raise ValueError("distributed workers support SQLite, PostgreSQL, journal files and Redis, not MySQL")
    path = (
        Path(storage_url.removeprefix("sqlite:///"))
        if storage_url.startswith("sqlite:///")
        else Path(storage_url)
    )
    with FileLock(str(path.with_name(path.name + ".budget.lock"))):
        yield


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    return {int(t.user_attrs[RETRY_ATTR]) for t in trials if RETRY_ATTR in t.user_attrs}


def fail_stale_trials(study: optuna.Study, grace: float) -> list[int]:
    """Fail running trials whose heartbeat stopped, and enqueue a retry of each."""
    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.user_attrs.get(HEARTBEAT_ATTR)
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        if now - float(beat if beat is not None else started) <= grace:
            continue
        storage = study._storage
        # The reason first: a finished trial takes no more attributes.
        reason = f"worker stopped (no heartbeat for {grace:g} s)"
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            continue  # another worker got there first
        study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number}, skip_if_exists=False)
        failed.append(trial.number)
    return failed


def claim_trial(study: optuna.Study, storage_url: str, budget: int, grace: float) -> optuna.Trial | None:
    """The next trial this worker runs, or ``None`` when the budget is spent."""
    with budget_lock(storage_url, study.study_name):
        fail_stale_trials(study, grace)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        counted = len(trials) - len(retried_numbers(trials))
        if not waiting and counted >= budget:
            return None
        trial = study.ask()  # pops a waiting trial first, else creates one
        study._storage.set_trial_user_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())
        return trial


class Heartbeat:
    """Stamps a running trial's heartbeat attribute until stopped."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, interval: float) -> None:
        self._storage, self._trial_id, self._interval = study._storage, trial._trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{trial.number}")

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):  # the trial may have finished meanwhile
                self._storage.set_trial_user_attr(self._trial_id, HEARTBEAT_ATTR, time.time())

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
