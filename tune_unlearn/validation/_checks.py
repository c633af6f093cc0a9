"""The checks of a suite, each returning :class:`CheckResult`; an exception is an ``error``,
which fails the gate like a failed check (fail closed)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from tune_unlearn.evaluation import PerSample
from tune_unlearn.problems import MultiTaskModel, Task
from tune_unlearn.validation._context import Probe, ValidationContext, sample_scores
from tune_unlearn.validation._probes import PROBES
from tune_unlearn.validation._suite import (
    ComputeBudgetSpec,
    ForgetQualitySpec,
    ProbeSpec,
    RobustnessSpec,
    SuiteConfig,
    UisBudgetSpec,
)

Status = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    message: str
    value: float | None = None
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class Candidate:
    """The model under validation, with what is known of how it was made."""

    model: MultiTaskModel
    description: str
    metrics: Mapping[str, float] = field(default_factory=dict)  # from its study, if any
    params: Mapping[str, Any] | None = None
    seed: int | None = None


def guarded(names: list[str], check: Callable[[], list[CheckResult]]) -> list[CheckResult]:
    """Run a check; if it raises, each result it would have given is an ``error``."""
    try:
        return check()
    except Exception as error:  # a check that cannot run must never pass
        return [CheckResult(n, "error", f"could not run: {type(error).__name__}: {error}") for n in names]


def bootstrap_interval(differences: Tensor, suite: SuiteConfig) -> tuple[float, float, float]:
    """Mean of per-sample differences and its percentile bootstrap interval."""
    values = differences.double().numpy()
    rng = np.random.default_rng(suite.seed)
    means = rng.choice(values, size=(suite.bootstrap, len(values)), replace=True).mean(axis=1)
    alpha = (1.0 - suite.confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(values.mean()), float(low), float(high)


def probe_check(
    ctx: ValidationContext,
    family: str,
    spec: ProbeSpec,
    suite: SuiteConfig,
    model: MultiTaskModel,
    unlearned: PerSample,
) -> CheckResult:
    """Excess damage ``(o − u) − (o − r) = r − u`` per sample (``o − u`` without a retrain
    reference), passing when the upper confidence bound stays within ``max_excess``."""
    name = f"probe/{family}"
    probe: Probe = PROBES.get(family)(**spec.params).build(ctx)
    if len(probe) < suite.min_probe_size:
        return CheckResult(
            name,
            "error",
            f"too small to decide: {len(probe)} samples < min_probe_size {suite.min_probe_size}",
            details={"size": len(probe)},
        )
    unlearned_scores = sample_scores(unlearned, probe.samples)
    original_scores = sample_scores(ctx.original_results, probe.samples)
    reference = ctx.retrain_results if ctx.retrain_results is not None else ctx.original_results
    reference_scores = sample_scores(reference, probe.samples)
    estimate, low, high = bootstrap_interval(reference_scores - unlearned_scores, suite)
    details: dict[str, Any] = {
        "size": len(probe),
        "excess": estimate,
        "interval": [low, high],
        "confidence": suite.confidence,
        "reference": "retrain" if ctx.retrain_results is not None else "original (reference-free)",
        "score_original": float(original_scores.mean()),
        "score_unlearned": float(unlearned_scores.mean()),
        "score_reference": float(reference_scores.mean()),
    }
    passed = high <= spec.max_excess
    message = f"excess damage {estimate:+.4f} [{low:+.4f}, {high:+.4f}] vs max {spec.max_excess:g}"
    if spec.max_churn is not None:
        churn = _excess_churn(ctx, probe, model)
        details["excess_churn"] = churn
        passed = passed and churn <= spec.max_churn
        message += f"; excess prediction churn {churn:+.4f} vs max {spec.max_churn:g}"
    return CheckResult(name, "pass" if passed else "fail", message, estimate, spec.max_excess, details)


def _excess_churn(ctx: ValidationContext, probe: Probe, model: MultiTaskModel) -> float:
    """Share of judged labels whose prediction changed from the original's, beyond the
    retrained reference's own churn."""
    indices, mask = probe.samples.indices, probe.samples.mask
    tasks = ctx.experiment.problem.tasks
    original = ctx.predictions(ctx.original, indices)
    changed = prediction_changed(tasks, original, ctx.predictions(model, indices))
    churn = (changed & mask).float().sum() / mask.sum()
    if ctx.retrain is None:
        return float(churn)
    reference_changed = prediction_changed(tasks, original, ctx.predictions(ctx.retrain, indices))
    reference = (reference_changed & mask).float().sum() / mask.sum()
    return float(churn - reference)


def prediction_changed(tasks: Sequence[Task], before: Tensor, after: Tensor) -> Tensor:
    """``[n, T]``: whether each prediction changed. A class changes when it differs; a
    regression value when it leaves the task's tolerance around the value before (any float
    moves a little, and a move the score would not notice is no churn)."""
    columns = []
    for column, task in enumerate(tasks):
        if task.kind == "classification":
            columns.append(before[:, column] != after[:, column])
        else:
            kept = task.per_sample_correct(after[:, column].unsqueeze(-1), before[:, column])
            columns.append(kept == 0)
    return torch.stack(columns, dim=1)


def forget_quality_checks(
    ctx: ValidationContext,
    metrics: Mapping[str, float],
    reference: Mapping[str, float] | None,
    spec: ForgetQualitySpec,
) -> list[CheckResult]:
    """Two-sided: the forget-set score must sit near the retrained reference's (too high is
    under-forgetting, too low over-forgetting), and so must membership inference."""
    targets = ctx.experiment.request.target_tasks
    gaps = []
    for task in targets:
        unlearned = metrics[f"score/unlearned/forget/{task}"]
        target = (
            metrics[f"score/retrain/forget/{task}"]
            if reference is not None
            else metrics[f"score/unlearned/val/{task}"]
        )
        gaps.append(unlearned - target)
    gap = float(np.mean(gaps))
    kind = "under-forgetting" if gap > 0 else "over-forgetting"
    gap_ok = abs(gap) <= spec.max_gap
    gap_result = CheckResult(
        "forget_quality/gap",
        "pass" if gap_ok else "fail",
        f"forget-set score {gap:+.4f} from the reference" + ("" if gap_ok else f" ({kind})"),
        gap,
        spec.max_gap,
        {"per_task": dict(zip(targets, gaps, strict=True))},
    )
    auc = metrics["mia_auc"]
    reference_auc = reference["mia_auc"] if reference is not None else 0.5
    if math.isnan(auc) or math.isnan(reference_auc):
        mia_result = CheckResult("forget_quality/mia", "error", "membership inference could not be computed")
    else:
        distance = abs(auc - reference_auc)
        mia_result = CheckResult(
            "forget_quality/mia",
            "pass" if distance <= spec.max_mia_gap else "fail",
            f"MIA AUC {auc:.4f} vs reference {reference_auc:.4f}",
            distance,
            spec.max_mia_gap,
            {"auc": auc, "reference_auc": reference_auc},
        )
    return [gap_result, mia_result]


def uis_check(
    metrics: Mapping[str, float], reference: Mapping[str, float] | None, spec: UisBudgetSpec
) -> CheckResult:
    """UIS beyond the retrained reference's own: UIS's forgetting term grows with honest
    forgetting, so the gold standard sets the baseline."""
    baseline = reference["uis"] if reference is not None else 0.0
    excess = metrics["uis"] - baseline
    return CheckResult(
        "uis_budget",
        "pass" if excess <= spec.max_excess_uis else "fail",
        f"UIS {metrics['uis']:.4f} ({excess:+.4f} over the reference)",
        excess,
        spec.max_excess_uis,
    )


def compute_check(ctx: ValidationContext, candidate: Candidate, spec: ComputeBudgetSpec) -> CheckResult:
    seconds = candidate.metrics.get("gpu_seconds")
    if seconds is None or not math.isfinite(seconds):
        raise ValueError("the candidate's unlearning compute is unknown (no metrics from its study)")
    budget = ctx.experiment.compute_budget
    if budget is None:
        raise ValueError("the references' training cost is unknown (both came from checkpoints)")
    fraction = seconds / budget
    return CheckResult(
        "compute_budget",
        "pass" if fraction <= spec.max_fraction else "fail",
        f"unlearning took {fraction:.3f} of the retrain cost ({seconds:.3f} s of {budget:.3f} s)",
        fraction,
        spec.max_fraction,
    )


def robustness_check(ctx: ValidationContext, candidate: Candidate, spec: RobustnessSpec) -> CheckResult:
    """Rerun the configuration with other seeds and each learning rate perturbed up and down;
    fail when forget efficacy or retained utility spreads more than allowed."""
    if candidate.params is None or candidate.seed is None:
        raise ValueError("robustness needs the candidate's configuration (params and seed)")
    params, seed = dict(candidate.params), candidate.seed
    variants = [(params, seed + k) for k in range(1, spec.seeds + 1)]
    for lr in ("ascent_lr", "retain_lr"):
        if lr in params:
            for factor in (1 - spec.lr_perturbation, 1 + spec.lr_perturbation):
                variants.append(({**params, lr: params[lr] * factor}, seed))
    outcomes = {"forget_efficacy": [], "retained_utility": []}  # type: dict[str, list[float]]
    for variant_params, variant_seed in variants:
        metrics = ctx.experiment.run(variant_params, seed=variant_seed).metrics
        for key in outcomes:
            outcomes[key].append(metrics[key])
    for key in outcomes:
        outcomes[key].append(candidate.metrics.get(key, outcomes[key][0]))
    spreads = {key: max(v) - min(v) for key, v in outcomes.items()}
    worst = max(spreads.values())
    return CheckResult(
        "robustness",
        "pass" if worst <= spec.max_spread else "fail",
        f"largest spread {worst:.4f} over {len(variants)} reruns",
        worst,
        spec.max_spread,
        {"spreads": spreads, "outcomes": outcomes},
    )
