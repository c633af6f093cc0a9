from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tune_unlearn.config import StudyConfig, parse_study


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
        # MLflow's store set-up costs seconds per study; tests/test_tracking.py turns it on.
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
    )


def wait_for_running_trial(storage: str, process: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until the study holds a running trial whose configuration is chosen (mid-trial)."""
    import time

    import optuna
    from optuna.trial import TrialState

    from tune_unlearn.study import open_storage

    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="tiny", storage=open_storage(storage))
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if any(t.params for t in running):
                return
        except KeyError:
            pass  # not created yet
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no trial started: {process.communicate()}")
