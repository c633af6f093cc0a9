"""The metrics of DESIGN §4, one small class each, all computed from one :class:`MetricContext`.

Every metric reads per-task scores through the flat keys ``score/<model>/<set>/<task>`` that
the study also records in ``pareto.json``, so anyone can recompute each metric from that file.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from tune_unlearn.registry import Registry, subclass_of

Direction = Literal["maximize", "minimize", "target"]

#: Denominator floor of forget efficacy when the original and retrain scores nearly agree.
EFFICACY_FLOOR = 0.01


def score_key(model: str, subset: str, task: str) -> str:
    return f"score/{model}/{subset}/{task}"


@dataclass(frozen=True)
class MetricContext:
    """Everything a metric may read about one unlearned model."""

    scores: Mapping[str, float]
    tasks: tuple[str, ...]
    target_tasks: tuple[str, ...]
    mode: Literal["full", "partial"]
    has_retrain: bool
    param_shift: float = math.nan
    forget_losses: np.ndarray | None = None
    val_losses: np.ndarray | None = None
    gpu_seconds: float = math.nan
    seed: int = 0

    def score(self, model: str, subset: str, task: str) -> float:
        return float(self.scores[score_key(model, subset, task)])

    @property
    def kept_tasks(self) -> tuple[str, ...]:
        return tuple(t for t in self.tasks if t not in self.target_tasks)


class Metric(ABC):
    """A named number about an unlearned model, with the direction that is better."""

    name: ClassVar[str]
    direction: ClassVar[Direction]
    #: For ``direction == "target"``: the value to approach; the objective is the distance to it.
    target: ClassVar[float] = 0.0
    #: Objective values (see :meth:`objective`) of a perfect and of a worthless model; they fix
    #: the hypervolume box so that fronts of different studies compare. ``None``: set per study.
    ideal: ClassVar[float] = 0.0
    worst: ClassVar[float | None] = 1.0

    @abstractmethod
    def compute(self, ctx: MetricContext) -> float: ...

    def objective(self, value: float) -> float:
        """The value handed to Optuna (distance to the target for two-sided metrics)."""
        return abs(value - self.target) if self.direction == "target" else value

    @classmethod
    def study_direction(cls) -> Literal["maximize", "minimize"]:
        return "maximize" if cls.direction == "maximize" else "minimize"


METRICS: Registry[type[Metric]] = Registry("metric", "tune_unlearn.metrics", accepts=subclass_of(Metric))


@METRICS.add
class ForgetEfficacy(Metric):
    """``1 − |F^u − F^r| / max(|F^o − F^r|, 0.01)`` per target task, clipped to [0, 1], averaged.

    Two-sided: forgetting past the retrain score is penalised like forgetting too little.
    Without a retrain reference the unlearned model's ``val`` score stands in for ``F^r``.
    """

    name = "forget_efficacy"
    direction = "maximize"
    ideal, worst = 1.0, 0.0

    def compute(self, ctx: MetricContext) -> float:
        values = []
        for task in ctx.target_tasks:
            reference = (
                ctx.score("retrain", "forget", task)
                if ctx.has_retrain
                else ctx.score("unlearned", "val", task)
            )
            gap = abs(ctx.score("unlearned", "forget", task) - reference)
            span = max(abs(ctx.score("original", "forget", task) - reference), EFFICACY_FLOOR)
            values.append(min(max(1.0 - gap / span, 0.0), 1.0))
        return float(np.mean(values))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else (1.0 if numerator <= 0 else math.inf)


@METRICS.add
class RetainedUtility(Metric):
    """Mean of ``U_t / O_t`` over every task and, in partial mode, ``K^u_t / K^o_t`` over kept
    tasks."""

    name = "retained_utility"
    direction = "maximize"
    ideal, worst = 1.0, 0.0

    def compute(self, ctx: MetricContext) -> float:
        ratios = [
            _ratio(ctx.score("unlearned", "val", t), ctx.score("original", "val", t)) for t in ctx.tasks
        ]
        if ctx.mode == "partial":
            ratios += [
                _ratio(ctx.score("unlearned", "kept", t), ctx.score("original", "kept", t))
                for t in ctx.kept_tasks
            ]
        return float(np.mean(ratios))


@METRICS.add
class UnlearningImpactScore(Metric):
    """``½·mean_t |O_t − U_t|/O_t + ½·mean_{t∈T_F} |O_t − F^u_t|/O_t`` (lower is better)."""

    name = "uis"
    direction = "minimize"

    def compute(self, ctx: MetricContext) -> float:
        def relative(a: float, o: float) -> float:
            return abs(o - a) / o if o > 0 else 0.0

        utility = np.mean(
            [relative(ctx.score("unlearned", "val", t), ctx.score("original", "val", t)) for t in ctx.tasks]
        )
        forgetting = np.mean(
            [
                relative(ctx.score("unlearned", "forget", t), ctx.score("original", "val", t))
                for t in ctx.target_tasks
            ]
        )
        return float(0.5 * utility + 0.5 * forgetting)


@METRICS.add
class ParamShift(Metric):
    """``‖θ_u − θ_o‖₂ / ‖θ_o‖₂``, computed by the caller on the device."""

    name = "param_shift"
    direction = "minimize"

    def compute(self, ctx: MetricContext) -> float:
        return ctx.param_shift


@METRICS.add
class GpuSeconds(Metric):
    """Accelerator seconds of the unlearning phase (wall seconds on CPU), measured by the caller."""

    name = "gpu_seconds"
    direction = "minimize"
    worst = None  # the retrain reference's training seconds: unlearning must cost less

    def compute(self, ctx: MetricContext) -> float:
        return ctx.gpu_seconds


@METRICS.add
class MiaAuc(Metric):
    """Loss-based membership inference: forget instances (label 1) against ``val`` (label 0).

    A logistic regression on ``log1p(loss)`` (monotone, and tames the heavy tail that gradient
    ascent produces), scored by cross-validated ROC AUC. 0.5 means the forget instances look like
    data the model never saw; the objective is the distance to 0.5.
    """

    name = "mia_auc"
    direction = "target"
    target = 0.5
    ideal, worst = 0.0, 0.5

    def compute(self, ctx: MetricContext) -> float:
        if ctx.forget_losses is None or ctx.val_losses is None:
            return math.nan
        return mia_auc(ctx.forget_losses, ctx.val_losses, seed=ctx.seed)


def mia_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray, *, seed: int = 0) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    folds = min(5, len(member_losses), len(nonmember_losses))
    if folds < 2:
        return math.nan
    losses = np.concatenate([member_losses, nonmember_losses]).astype(np.float64)
    features = np.log1p(np.clip(np.nan_to_num(losses, nan=1e6, posinf=1e6), 0.0, None))[:, None]
    labels = np.concatenate([np.ones(len(member_losses)), np.zeros(len(nonmember_losses))])
    classifier = LogisticRegression(class_weight="balanced")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(classifier, features, labels, cv=cv, scoring="roc_auc")))


def compute_metrics(ctx: MetricContext) -> dict[str, float]:
    """Every registered metric."""
    return {name: METRICS.get(name)().compute(ctx) for name in METRICS}
