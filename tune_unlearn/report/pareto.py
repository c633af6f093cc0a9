"""The trade-off a study reveals: feasible trials, the Pareto front, its hypervolume, and one
recommended configuration.

Hypervolume is computed by moocore in a fixed, documented box so that fronts of different
studies (with and without the collapse guard, or of different samplers) compare: each objective
is mapped to [0, 1] by ``(value − ideal) / (worst − ideal)`` with the metric's own ideal and worst
values, clipped, and the reference point is (1, …, 1). A hypervolume of 1 would be a single
perfect, free trial. Every bound comes from the metric or the study itself: ``compute_cost``
spans 0 to one retrain's (counted) cost; ``gpu_seconds``, a measurement with no fixed worst,
spans 0 to 1.1 × the study's slowest complete trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import moocore
import numpy as np
from optuna.trial import FrozenTrial, TrialState

from tune_unlearn.config.study_config import RecommendConfig
from tune_unlearn.scoring.metrics import METRICS


def objective_directions(objectives: Sequence[str]) -> list[Literal["minimize", "maximize"]]:
    """Each objective's Optuna direction, from its metric's declaration."""
    return [METRICS.get(name).study_direction() for name in objectives]


def is_feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0.0 for value in trial.constraints.values())


@dataclass(frozen=True)
class HypervolumeBox:
    """Per objective, the objective value of a perfect model and the reference (worst) value."""

    objectives: tuple[str, ...]
    ideal: tuple[float, ...]
    worst: tuple[float, ...]

    @classmethod
    def for_objectives(cls, objectives: Sequence[str], measured_worst: float = 1.0) -> HypervolumeBox:
        """``measured_worst`` bounds a metric without a fixed worst (``gpu_seconds``)."""
        ideal, worst = [], []
        for name in objectives:
            metric = METRICS.get(name)
            ideal.append(metric.ideal)
            worst.append(measured_worst if metric.worst is None else metric.worst)
        return cls(tuple(objectives), tuple(ideal), tuple(worst))

    @classmethod
    def for_study(cls, objectives: Sequence[str], trials: Sequence[FrozenTrial]) -> HypervolumeBox:
        """The box of a study: a measured objective is bounded by 1.1 × its largest value over
        the study's complete trials (1.0 before any), never by a timing taken elsewhere."""
        measured = [
            float(t.values[i])
            for t in trials
            if t.state == TrialState.COMPLETE and t.values is not None
            for i, name in enumerate(objectives)
            if METRICS.get(name).worst is None and math.isfinite(t.values[i])
        ]
        return cls.for_objectives(objectives, max(measured, default=1.0 / 1.1) * 1.1)

    def normalise(self, values: np.ndarray) -> np.ndarray:
        """Objective values ``[n, k]`` to the unit box, 0 = ideal, 1 = reference; clipped."""
        ideal, worst = np.asarray(self.ideal), np.asarray(self.worst)
        normalised: np.ndarray = np.clip((values - ideal) / (worst - ideal), 0.0, 1.0)
        return normalised

    def hypervolume(self, values: np.ndarray) -> float:
        if len(values) == 0:
            return 0.0
        points = self.normalise(np.asarray(values, dtype=float))
        return float(moocore.hypervolume(points, ref=np.ones(points.shape[1])))

    def as_dict(self) -> dict[str, object]:
        return {
            "objectives": list(self.objectives),
            "ideal": list(self.ideal),
            "reference_point": list(self.worst),
            "normalisation": "(value - ideal) / (reference - ideal), clipped to [0, 1]; "
            "hypervolume of the unit box that the normalised front dominates",
        }


def front_trials(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    """Feasible complete trials that no other feasible complete trial dominates."""
    candidates = [t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t)]
    if not candidates:
        return []
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    values = np.array([t.values for t in candidates]) * signs
    mask = moocore.is_nondominated(values, keep_weakly=True)
    return [t for t, keep in zip(candidates, mask, strict=True) if keep]


def _normalised_front(front: Sequence[FrozenTrial], directions: Sequence[str]) -> np.ndarray:
    """Front values as minimisation, each objective scaled to [0, 1] over the front."""
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    values = np.array([t.values for t in front]) * signs
    low, high = values.min(axis=0), values.max(axis=0)
    normalised: np.ndarray = (values - low) / np.where(high > low, high - low, 1.0)
    return normalised


def _first_best(front: Sequence[FrozenTrial], scores: np.ndarray) -> FrozenTrial:
    # ties go to the earlier trial, so the choice is stable
    best = min(range(len(front)), key=lambda i: (round(float(scores[i]), 12), front[i].number))
    return front[best]


def recommend(
    front: Sequence[FrozenTrial],
    directions: Sequence[str],
    rule: RecommendConfig,
    objectives: Sequence[str],
    box: HypervolumeBox | None = None,
) -> FrozenTrial | None:
    """The recommended front trial under ``rule`` (see :class:`RecommendConfig`).

    With ``box``, distances are taken in the hypervolume box, where each objective spans its
    metric's whole range; without, each objective is rescaled to its range over the front.
    The box is what a study uses: rescaling over the front blows a difference of a second in
    ``gpu_seconds`` (timing noise, when every trial runs the same steps) up to the weight of
    a collapse in retained utility.
    """
    if not front:
        return None
    if rule.rule == "lexicographic":
        return _lexicographic(front, directions, rule, objectives)
    if box is not None:
        normalised = box.normalise(np.array([t.values for t in front], dtype=float))
    else:
        normalised = _normalised_front(front, directions)
    if rule.rule == "knee":
        # distance below the hyperplane Σ n_i = 1 through the normalised extremes
        return _first_best(front, normalised.sum(axis=1))
    return _first_best(front, np.linalg.norm(normalised, axis=1))


def rank(
    front: Sequence[FrozenTrial],
    directions: Sequence[str],
    rule: RecommendConfig,
    objectives: Sequence[str],
    box: HypervolumeBox | None = None,
) -> list[FrozenTrial]:
    """The front in the order ``rule`` prefers it: :func:`recommend`'s pick, then its pick
    among the rest, and so on (the gate is tried on front trials in this order)."""
    remaining, ranked = list(front), []
    while remaining:
        best = recommend(remaining, directions, rule, objectives, box)
        assert best is not None
        ranked.append(best)
        remaining = [t for t in remaining if t.number != best.number]
    return ranked


def _lexicographic(
    front: Sequence[FrozenTrial], directions: Sequence[str], rule: RecommendConfig, objectives: Sequence[str]
) -> FrozenTrial:
    candidates = list(front)
    for name in rule.order:
        index = list(objectives).index(name)
        sign = 1.0 if directions[index] == "minimize" else -1.0
        best = min(sign * t.values[index] for t in candidates)
        tolerance = rule.tolerances.get(name, 0.0)
        candidates = [t for t in candidates if sign * t.values[index] <= best + tolerance]
    last = list(objectives).index(rule.order[-1])
    sign = 1.0 if directions[last] == "minimize" else -1.0
    return _first_best(candidates, np.array([sign * t.values[last] for t in candidates]))


def hypervolume_history(
    trials: Sequence[FrozenTrial], box: HypervolumeBox, directions: Sequence[str]
) -> list[float]:
    """Hypervolume of the feasible front after each trial, in trial order."""
    history, seen = [], []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state == TrialState.COMPLETE and is_feasible(trial):
            seen.append(trial)
        front = front_trials(seen, directions)
        history.append(box.hypervolume(np.array([t.values for t in front])) if front else 0.0)
    return history


def finite(value: float) -> float | None:
    """JSON has no NaN; a metric that could not be computed is written as null."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None
