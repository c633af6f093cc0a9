"""Multi-task problems: the built-in ones by name, and user problems from a factory path."""

from __future__ import annotations

import importlib
from typing import Any

from tune_unlearn.problems._base import (
    SPLITS,
    MultiTaskData,
    MultiTaskModel,
    Problem,
    Task,
    TrainRecipe,
    schedule_named,
)
from tune_unlearn.problems._dense import DenseTask, DepthTask, NormalsTask, SegmentationTask
from tune_unlearn.problems._digits import DigitsProblem
from tune_unlearn.problems._inputs import DatasetInputs
from tune_unlearn.problems._loss import Batch, masked_task_losses
from tune_unlearn.problems._scenes import ScenesProblem
from tune_unlearn.problems._shapes import ShapesProblem
from tune_unlearn.registry import Registry

PROBLEMS: Registry[type[Problem]] = Registry("problem", "tune_unlearn.problems", accepts=callable)
PROBLEMS.register("digits")(DigitsProblem)
PROBLEMS.register("shapes")(ShapesProblem)
PROBLEMS.register("scenes")(ScenesProblem)


def load_factory(path: str) -> Any:
    """Import ``"package.module:function"`` and return the attribute it names."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected 'package.module:function', got {path!r}")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None


def problem_factory(name: str | None, factory: str | None) -> Any:
    """What builds the problem a study file names: a registered class, or a user's factory."""
    return load_factory(factory) if factory else PROBLEMS.get(name or "")


def as_problem(built: Any, source: str | None) -> Problem:
    """``built`` if it is a :class:`Problem`; a ``TypeError`` naming ``source`` otherwise."""
    if not isinstance(built, Problem):
        raise TypeError(f"{source} returned {type(built).__name__}, not a Problem")
    return built


def build_problem(name: str | None, factory: str | None, params: dict[str, Any]) -> Problem:
    """The problem a study file names, built with its parameters."""
    return as_problem(problem_factory(name, factory)(**params), factory or name)


__all__ = [
    "PROBLEMS",
    "SPLITS",
    "Batch",
    "DatasetInputs",
    "DenseTask",
    "DepthTask",
    "DigitsProblem",
    "MultiTaskData",
    "MultiTaskModel",
    "NormalsTask",
    "Problem",
    "ScenesProblem",
    "SegmentationTask",
    "ShapesProblem",
    "Task",
    "TrainRecipe",
    "as_problem",
    "build_problem",
    "load_factory",
    "masked_task_losses",
    "problem_factory",
    "schedule_named",
]
