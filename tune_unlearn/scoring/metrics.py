"""The metrics (docs/guide.md, section 8), one small class each, all computed from one :class:`MetricContext`.

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
import torch
from torch import Tensor

from tune_unlearn.registry import Registry, subclass_of
from tune_unlearn.scoring.prediction_band import prediction_band

Direction = Literal["maximize", "minimize", "target"]

#: Metrics that were renamed, with what to use now: a study file naming one gets this message.
RENAMED = {
    "param_shift": "`param_shift` is now `uis`: UIS is the Unlearning-Induced Shift "
    "‖θ_u − θ_o‖₂ / ‖θ_o‖₂ (tune_unlearn ≥ 0.2); OrthoGrad's score, the old `uis`, is `impact_score`",
}


def score_key(model: str, subset: str, task: str) -> str:
    return f"score/{model}/{subset}/{task}"


def spread_key(model: str, subset: str, task: str) -> str:
    return f"spread/{model}/{subset}/{task}"


@dataclass(frozen=True)
class MetricContext:
    """Everything a metric may read about one unlearned model."""

    scores: Mapping[str, float]
    tasks: tuple[str, ...]
    target_tasks: tuple[str, ...]
    mode: Literal["full", "partial"]
    has_retrain: bool
    retrain_members: int = 1
    forget_size: int = 0
    val_size: int = 0
    #: Reference-free: held-out ``val`` samples of the forget set's group (``score/…/peers/…``).
    peers_size: int = 0
    shift: float = math.nan
    forget_losses: np.ndarray | None = None
    val_losses: np.ndarray | None = None
    gpu_seconds: float = math.nan
    #: Sample-gradients the unlearning computed over those of one retrain (see ``ComputeCost``).
    compute_cost: float = math.nan
    seed: int = 0
    #: ``[runs, n]`` and ``[members, n]`` logit-scaled confidences on the forget set, per target
    #: task, of N unlearned runs and of the retrain ensemble (for ``forget_score``); else None.
    forget_confidences: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
    #: ``evaluation.forget_score_rule``.
    forget_score_rule: Literal["bounded", "challenge"] = "bounded"
    #: The worst excess of each recovery attack (:mod:`tune_unlearn.references.attacks`), measured by the
    #: caller only when the study names the metric; NaN otherwise.
    relearn_recovery: float = math.nan
    quantization_recovery: float = math.nan

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


@dataclass(frozen=True)
class ForgetBand:
    """One target task's forget-set comparison: the honest-deletion reference score, the
    tolerance band around it, and the original's distance from it."""

    reference: float
    band: float
    original_gap: float

    @property
    def nothing_to_forget(self) -> bool:
        """The original already sits inside the band: honest deletion would not show."""
        return self.original_gap <= self.band


def forget_band(ctx: MetricContext, task: str) -> ForgetBand:
    """``b_t = t_ν·sqrt(s_t²·(1 + 1/K) + p(1 − p)/n)``: the retrain ensemble's seed spread
    ``s_t`` (as the 95% prediction interval of one more honest retrain, K members, with
    Welch–Satterthwaite's ν: :func:`~tune_unlearn.scoring.prediction_band.prediction_band`) and the
    binomial sampling error of a score ``p`` on the ``n`` forget instances. Without a retrain
    reference (:func:`reference_free_reference`), the *original's* score on held-out samples
    of the forget set's own group stands in, with the sampling error of both sets (a normal
    interval: nothing is estimated from seeds)."""
    original = ctx.score("original", "forget", task)
    n = max(ctx.forget_size, 1)
    if ctx.has_retrain:
        reference = ctx.score("retrain", "forget", task)
        spread = float(ctx.scores.get(spread_key("retrain", "forget", task), 0.0))
        band = prediction_band(spread, ctx.retrain_members, reference * (1 - reference) / n)
    else:
        reference = reference_free_reference(ctx.scores, task)
        peers = ctx.peers_size or ctx.val_size
        band = prediction_band(0.0, 0, reference * (1 - reference) * (1 / n + 1 / max(peers, 1)))
    return ForgetBand(reference, band, abs(original - reference))


def reference_free_reference(scores: Mapping[str, float | None], task: str) -> float:
    """Reference-free stand-in for ``F^r_t``: the original's score on held-out ``val`` samples
    of the forget set's group (``peers``; all of ``val`` when none were scored). An honest
    retrain that still trains on the rest of the group scores the forgotten instances like
    unseen members of it. The original's score, not the unlearned model's: a stand-in that
    moved with the unlearned model's damage would make over-forgetting look perfect."""
    value = scores.get(score_key("original", "peers", task), scores.get(score_key("original", "val", task)))
    return math.nan if value is None else float(value)


@METRICS.add
class ForgetEfficacy(Metric):
    """Per target task ``1 − max(0, |F^u − F^r| − b) / max(|F^o − F^r|, b)``, clipped to [0, 1],
    averaged; ``b`` is :func:`forget_band`.

    A forget score inside the band of the honest retrains counts as forgotten (efficacy 1);
    beyond it, under- and over-forgetting (the Streisand effect) are measured alike, in units
    of the original-to-retrain gap, or of the band when the original sits inside it (then there
    is nothing detectable to forget, and the metrics carry ``nothing_to_forget/<task>`` = 1).
    """

    name = "forget_efficacy"
    direction = "maximize"
    ideal, worst = 1.0, 0.0

    def compute(self, ctx: MetricContext) -> float:
        values = []
        for task in ctx.target_tasks:
            band = forget_band(ctx, task)
            gap = abs(ctx.score("unlearned", "forget", task) - band.reference)
            beyond = max(0.0, gap - band.band)
            span = max(band.original_gap, band.band)
            values.append(1.0 if span == 0 else min(max(1.0 - beyond / span, 0.0), 1.0))
        return float(np.mean(values))


def _ratio(numerator: float, denominator: float) -> float:
    """``U / O`` with the zero-denominator convention: ``0 / 0 = 1`` (nothing known, nothing
    lost), ``x / 0 = inf`` for ``x > 0``. The collapse guard uses the same rule on tensors
    (:func:`score_ratios`), so a trial pruned and a trial measured agree."""
    return numerator / denominator if denominator > 0 else (1.0 if numerator <= 0 else math.inf)


def score_ratios(numerators: Tensor, denominators: Tensor) -> Tensor:
    """:func:`_ratio` elementwise on the device (no host sync)."""
    safe = numerators / denominators.clamp(min=torch.finfo(denominators.dtype).tiny)
    zero = torch.where(numerators <= 0, torch.ones_like(safe), torch.full_like(safe, math.inf))
    return torch.where(denominators > 0, safe, zero)


def trainable_vector(model: torch.nn.Module) -> Tensor:
    """The trainable parameters as one float vector (buffers such as batch-norm statistics are
    not parameters the unlearning moves, so UIS leaves them out)."""
    return torch.cat([p.detach().float().reshape(-1) for p in model.parameters() if p.requires_grad])


def parameter_shift(unlearned: Tensor, original: Tensor) -> Tensor:
    """UIS's formula, ``‖θ_u − θ_o‖₂ / ‖θ_o‖₂``, on flat parameter vectors, on the device."""
    shift: Tensor = (unlearned - original).norm() / original.norm()
    return shift


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


def reference_retained_utility(scores: Mapping[str, float | None]) -> float | None:
    """:class:`RetainedUtility`'s formula applied to the honest reference instead of the
    unlearned model: the mean of ``R_t / O_t`` over every task's ``val`` score and, in partial
    mode, the kept tasks' ``kept`` scores, from a trial's recorded ``score/…`` metrics. What
    honest deletion of the request keeps, and so the most a trial can keep and still look like
    it: a class deleted in full mode costs even the retrains that class's share of ``val``.
    ``None`` without a retrain reference (a reference-free study scores none), and when a task
    the original scores 0 makes the ratio infinite: then there is no figure to read a trial by."""
    ratios = []
    for key, value in scores.items():
        parts = key.split("/")  # score/<model>/<set>/<task>
        if len(parts) != 4 or parts[:2] != ["score", "retrain"] or parts[2] not in ("val", "kept"):
            continue
        original = scores.get(score_key("original", parts[2], parts[3]))
        if value is None or original is None:
            continue
        ratios.append(_ratio(float(value), float(original)))
    honest = float(np.mean(ratios)) if ratios else math.nan
    return honest if math.isfinite(honest) else None


@METRICS.add
class UnlearningInducedShift(Metric):
    """UIS, the Unlearning-Induced Shift: ``‖θ_u − θ_o‖₂ / ‖θ_o‖₂`` over the trainable
    parameters (buffers excluded), computed by the caller on the device."""

    name = "uis"
    direction = "minimize"

    def compute(self, ctx: MetricContext) -> float:
        return ctx.shift


@METRICS.add
class ImpactScore(Metric):
    """OrthoGrad's Unlearning Impact Score over tasks, anchored at the retrain ensemble:
    ``½·mean_t |O_t − U_t|/O_t + ½·mean_{t∈T_F} |F^r_t − F^u_t|/O_t``; 0 for a perfect unlearner
    in class and instance deletion alike (reference-free: :func:`reference_free_reference`
    stands in for ``F^r_t``)."""

    name = "impact_score"
    direction = "minimize"

    def compute(self, ctx: MetricContext) -> float:
        def relative(a: float, b: float, o: float) -> float:
            return abs(a - b) / o if o > 0 else 0.0

        utility = np.mean(
            [
                relative(
                    ctx.score("unlearned", "val", t),
                    ctx.score("original", "val", t),
                    ctx.score("original", "val", t),
                )
                for t in ctx.tasks
            ]
        )
        forgetting = np.mean(
            [
                relative(
                    ctx.score("unlearned", "forget", t),
                    ctx.score("retrain", "forget", t)
                    if ctx.has_retrain
                    else reference_free_reference(ctx.scores, t),
                    ctx.score("original", "val", t),
                )
                for t in ctx.target_tasks
            ]
        )
        return float(0.5 * utility + 0.5 * forgetting)


@METRICS.add
class ForgetScore(Metric):
    """The NeurIPS 2023 unlearning challenge's score: the per-example forgetting quality of N
    unlearned runs against the K retrains (:mod:`tune_unlearn.scoring.forget_score`), averaged over
    target tasks, times the utility ratios ``mean_t U_t/R_t`` on ``val`` and on the retain
    sample. Costs N unlearning runs per trial (``evaluation.forget_score_runs``); NaN when not
    computed or without a retrain reference."""

    name = "forget_score"
    direction = "maximize"
    ideal, worst = 1.0, 0.0

    def compute(self, ctx: MetricContext) -> float:
        from tune_unlearn.scoring.forget_score import forgetting_quality

        if ctx.forget_confidences is None or not ctx.has_retrain:
            return math.nan
        quality = np.mean(
            [
                forgetting_quality(*ctx.forget_confidences[t], rule=ctx.forget_score_rule)
                for t in ctx.target_tasks
            ]
        )
        utility = np.mean(
            [_ratio(ctx.score("unlearned", "val", t), ctx.score("retrain", "val", t)) for t in ctx.tasks]
        )
        retain = np.mean(
            [
                _ratio(ctx.score("unlearned", "retain", t), ctx.score("retrain", "retain", t))
                for t in ctx.tasks
            ]
        )
        return float(quality * utility * retain)


@METRICS.add
class GpuSeconds(Metric):
    """Accelerator seconds of the unlearning phase (wall seconds on CPU), measured by the caller.

    A measurement: it varies with the machine's load. As an objective it makes the sampler's
    suggestions depend on that load; ``compute_cost`` is the deterministic objective.
    """

    name = "gpu_seconds"
    direction = "minimize"
    worst = None  # no fixed worst: the hypervolume box takes the study's slowest trial

    def compute(self, ctx: MetricContext) -> float:
        return ctx.gpu_seconds


@METRICS.add
class ComputeCost(Metric):
    """Unlearning compute as a fraction of one retrain, counted rather than timed.

    ``compute_cost = G_u / G_r``: ``G_u`` the sample-gradients the unlearning steps computed (a
    backward pass over b samples counts b, K batched vector–Jacobian products K·b, per-sample
    gradients under W task weightings W·B), ``G_r = epochs × |retain set|`` those of retraining
    with the problem's recipe. Forward passes are not counted (each backward needs one). A count
    does not depend on how busy the machine is, so the sampler and the hypervolume box learn
    from it; 1.0 means unlearning costs as much as a retrain, the box's worst.
    """

    name = "compute_cost"
    direction = "minimize"
    ideal, worst = 0.0, 1.0

    def compute(self, ctx: MetricContext) -> float:
        return ctx.compute_cost


#: The metrics that run an attack per trial (their cost: ``robustness_cost``).
RECOVERY_METRICS = frozenset({"relearn_recovery", "quantization_recovery"})
#: The metrics judged against honest retrains: a reference-free study may not name them.
RETRAIN_ONLY_METRICS = RECOVERY_METRICS | {"retain_damage"}


@METRICS.add
class RetainDamage(Metric):
    """How much worse than the honest retrains the model scores the retain sample, on its
    worst task: ``max_t (R_t − U_t)`` over ``score/…/retain/<task>`` (``R`` the ensemble's mean).
    The quantity the gate's ``probe/static_retain`` judges (on its own sample of the retain set,
    less the retrains' seed band), from scores every trial already computes: no extra cost.
    Training data, not held out, so the search may see it. NaN without a retrain."""

    name = "retain_damage"
    direction = "minimize"
    ideal, worst = 0.0, 1.0

    def compute(self, ctx: MetricContext) -> float:
        keys = [(score_key("retrain", "retain", t), score_key("unlearned", "retain", t)) for t in ctx.tasks]
        drops = [ctx.scores[r] - ctx.scores[u] for r, u in keys if r in ctx.scores and u in ctx.scores]
        return float(max(drops)) if ctx.has_retrain and drops else math.nan


@METRICS.add
class RelearnRecovery(Metric):
    """How far the forget-set score comes back under the relearning attack beyond what honest
    retrains allow: the worse of ``attack/relearn_forget`` and ``attack/relearn_retain``'s
    excess (the candidate's score after the calibrated attack − the retrains' mean − their seed
    band; :mod:`tune_unlearn.references.attacks`). ``relearn_recovery <= margin`` is the gate's check.

    Cost per trial: ``2 × s × sample_size`` sample-gradients (``s``, the calibrated steps, at
    most ``evaluation.relearning.steps``) and two forget-set passes; the retrains' side once
    per study process, ``2 × K × steps × sample_size``. Both are in the trial's
    ``robustness_cost`` (retrain units), which the request's all-in cost counts."""

    name = "relearn_recovery"
    direction = "minimize"
    ideal, worst = 0.0, 1.0

    def compute(self, ctx: MetricContext) -> float:
        return ctx.relearn_recovery


@METRICS.add
class QuantizationRecovery(Metric):
    """How far rounding the weights moves the forget-set score back toward the original's
    beyond the retrains' own move: the worst excess over ``evaluation.quantization.bits``
    (:mod:`tune_unlearn.references.attacks`). Costs two forget-set passes per bit width per trial and no
    gradients."""

    name = "quantization_recovery"
    direction = "minimize"
    ideal, worst = 0.0, 1.0

    def compute(self, ctx: MetricContext) -> float:
        return ctx.quantization_recovery


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
    """Every registered metric, and per target task the efficacy band behind forget efficacy
    (``band/<task>``) and whether the original already sat inside it (``nothing_to_forget/…``)."""
    values = {name: METRICS.get(name)().compute(ctx) for name in METRICS}
    for task in ctx.target_tasks:
        band = forget_band(ctx, task)
        values[f"band/{task}"] = band.band
        values[f"nothing_to_forget/{task}"] = float(band.nothing_to_forget)
    return values
