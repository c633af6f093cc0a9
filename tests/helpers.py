from __future__ import annotations

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
