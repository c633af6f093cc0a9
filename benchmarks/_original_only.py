"""A study (its inputs and references) that needs only the original model (step timings, step
traces): half of the request's group is forgotten, so that the reference-free mode may judge it
and no retrain ensemble is trained."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.trial.study_references import LoadedStudy, load_study_values


def original_only_experiment(
    name: str, problem: str, samples: int, cache: str, request: Mapping[str, Any]
) -> LoadedStudy:
    params: dict[str, Any] = {"num_samples": samples} if problem != "digits" else {}
    raw = {
        "name": name,
        "problem": {"name": problem, "params": params},
        "forget": {**request, "fraction": 0.5},
        "method": {"name": "graddiff"},
        "references": {"cache_dir": cache, "retrain": False},
        "tracking": {"enabled": False},
        "collapse_guard": {"enabled": False},
    }
    return load_study_values(parse_study(raw))
