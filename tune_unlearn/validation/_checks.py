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

from tune_unlearn.problems import MultiTaskModel, Task
from tune_unlearn.scoring.evaluation import PerSample
from tune_unlearn.scoring.metrics import reference_free_reference
from tune_unlearn.scoring.prediction_band import prediction_band, retrain_quantile
from tune_unlearn.trial import configuration_run
from tune_unlearn.validation._context import Probe, ValidationContext, task_scores
from tune_unlearn.validation._probes import PROBES
from tune_unlearn.validation._suite import (
    ComputeBudgetSpec,
    ForgetQualitySpec,
    ProbeSpec,
    RobustnessSpec,
    SuiteConfig,
    UisBudgetSpec,
)

Status = Literal["pass", "fail", "error", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome. ``value`` is the point estimate; ``judged`` says which number the
    status comes from (for probes, a confidence bound), so the two never read as a
    contradiction."""

    name: str
    status: Status
    message: str
    value: float | None = None
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    judged: str = ""

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
    """Excess damage ``(o − u) − (o − r) = r − u`` per sample and task, ``r`` the retrain
    ensemble's mean correctness (``o − u`` without a retrain reference). Each judged task is
    judged on its own and the worst decides: the check passes when every task's judged excess
    (the point estimate, or the upper confidence bound under ``probe_rule: upper_bound``) minus
    the retrains' seed band (:func:`seed_band`) stays within ``max_excess``; damage is
    *proven* when a task's lower bound minus that band exceeds it (what masked collapse
    requires)."""
    name = f"probe/{family}"
    level = f"{suite.confidence:.0%}"
    upper = suite.probe_rule == "upper_bound"
    judged = (
        f"upper {level} bound of each task's excess, minus the retrains' seed band, ≤ max_excess "
        "(the worst task decides)"
        if upper
        else "each task's estimated excess, minus the retrains' seed band, ≤ max_excess "
        "(the worst task decides)"
    )
    probe_family = PROBES.get(family)(**spec.params)
    reason = probe_family.not_applicable(ctx)
    if reason is not None:
        return CheckResult(name, "skipped", f"not applicable: {reason}", judged="not applicable")
    probe: Probe = probe_family.build(ctx)
    columns = [c for c in range(len(ctx.task_names)) if bool(probe.samples.mask[:, c].any())]
    sizes = {ctx.task_names[c]: int(probe.samples.mask[:, c].sum()) for c in columns}
    if not columns or min(sizes.values()) < suite.min_probe_size:
        return CheckResult(
            name,
            "error",
            f"too small to decide: {min(sizes.values(), default=0)} samples < min_probe_size "
            f"{suite.min_probe_size}",
            details={"size": len(probe), "per_task_size": sizes},
            judged=judged,
        )
    reference = ctx.retrain_results if ctx.retrain_results is not None else ctx.original_results
    per_task: dict[str, dict[str, Any]] = {}
    for column in columns:
        task = ctx.task_names[column]
        unlearned_scores = task_scores(unlearned, probe.samples, column)
        reference_scores = task_scores(reference, probe.samples, column)
        estimate, low, high = bootstrap_interval(reference_scores - unlearned_scores, suite)
        band = seed_band(ctx, probe, column, suite.confidence)
        per_task[task] = {
            "size": sizes[task],
            "excess": estimate,
            "interval": [low, high],
            "seed_band": band,
            "score_original": float(task_scores(ctx.original_results, probe.samples, column).mean()),
            "score_unlearned": float(unlearned_scores.mean()),
            "score_reference": float(reference_scores.mean()),
        }

    def judged_value(task: str) -> float:
        d = per_task[task]
        return float(d["interval"][1] if upper else d["excess"]) - float(d["seed_band"])

    worst = max(per_task, key=judged_value)
    estimate = per_task[worst]["excess"]
    low, high = per_task[worst]["interval"]
    proven = [t for t, d in per_task.items() if d["interval"][0] - d["seed_band"] > spec.max_excess]
    details: dict[str, Any] = {
        "size": len(probe),
        "worst_task": worst,
        "excess": estimate,
        "interval": [low, high],
        "confidence": suite.confidence,
        "damage_proven": bool(proven),
        "damage_proven_tasks": proven,
        "reference": "retrain ensemble mean"
        if ctx.retrain_results is not None
        else "original (reference-free)",
        "per_task": per_task,
    }
    passed = all(judged_value(t) <= spec.max_excess for t in per_task)
    message = (
        f"worst task {worst}: excess damage {estimate:+.4f} [{low:+.4f}, {high:+.4f}], seed band "
        f"±{per_task[worst]['seed_band']:.4f}, vs max {spec.max_excess:g}"
    )
    if proven:
        message += f"; damage proven on {', '.join(proven)} (lower bound above max)"
    if spec.max_churn is not None:
        churn = _excess_churn(ctx, probe, model)
        details["excess_churn"] = churn
        passed = passed and churn <= spec.max_churn
        message += f"; excess prediction churn {churn:+.4f} vs max {spec.max_churn:g}"
        judged += "; excess churn ≤ max_churn"
    return CheckResult(
        name, "pass" if passed else "fail", message, estimate, spec.max_excess, details, judged
    )


def seed_band(ctx: ValidationContext, probe: Probe, column: int, confidence: float) -> float:
    """How far an honest retrain's excess on this probe and task may land by its seed alone:
    ``t_{K−1}`` (at ``confidence``) times the standard deviation, over the ensemble's K members,
    of each member's excess against the mean of the others (leave one out, so each value is
    already one more retrain against an ensemble mean; t because that deviation is estimated
    from K values). 0 with fewer than three members (too few to tell)."""
    members = [task_scores(m, probe.samples, column) for m in ctx.retrain_member_results]
    if len(members) < 3:
        return 0.0
    stacked = torch.stack(members).double()
    total = stacked.sum(dim=0)
    excess = [((total - row) / (len(members) - 1) - row).mean() for row in stacked]
    return retrain_quantile(len(members) - 1, confidence) * float(torch.stack(excess).std())


def _excess_churn(ctx: ValidationContext, probe: Probe, model: MultiTaskModel) -> float:
    """Share of judged labels whose prediction changed from the original's, beyond the retrain
    ensemble's mean churn."""
    indices, mask = probe.samples.indices, probe.samples.mask
    tasks = ctx.inputs.problem.tasks
    original = ctx.predictions(ctx.original, indices)

    def churn(other: MultiTaskModel) -> float:
        changed = prediction_changed(tasks, original, ctx.predictions(other, indices))
        return float((changed & mask).float().sum() / mask.sum())

    reference = float(np.mean([churn(r) for r in ctx.retrains])) if ctx.retrains else 0.0
    return churn(model) - reference


def prediction_changed(tasks: Sequence[Task], before: Tensor, after: Tensor) -> Tensor:
    """``[n, T]``: whether each prediction changed, by each task's rule (:meth:`Task.changed`)."""
    return torch.stack([t.changed(before[:, c], after[:, c]) for c, t in enumerate(tasks)], dim=1)


def forget_quality_checks(
    ctx: ValidationContext,
    metrics: Mapping[str, float],
    member_metrics: Sequence[Mapping[str, float]],
    spec: ForgetQualitySpec,
    confidence: float,
) -> list[CheckResult]:
    """Two-sided, per target task: the forget-set score must sit inside the retrain ensemble's
    tolerance band (``band/<task>``, as forget efficacy uses) or within ``max_gap`` beyond it
    (too high is under-forgetting, too low over-forgetting; the worst task decides); and
    membership inference must say of the candidate what it says of honest retrains."""
    results = [_gap_check(ctx, metrics, spec)]
    if spec.max_mia_gap is not None:
        results.append(_mia_check(ctx, metrics, member_metrics, spec.max_mia_gap, confidence))
    return results


def _gap_check(ctx: ValidationContext, metrics: Mapping[str, float], spec: ForgetQualitySpec) -> CheckResult:
    has_retrain = bool(ctx.retrains)
    per_task: dict[str, dict[str, float]] = {}
    for task in ctx.inputs.request.target_tasks:
        unlearned = metrics[f"score/unlearned/forget/{task}"]
        reference = (
            metrics[f"score/retrain/forget/{task}"]
            if has_retrain
            else reference_free_reference(metrics, task)
        )
        band = metrics[f"band/{task}"]
        per_task[task] = {
            "unlearned": unlearned,
            "reference": reference,
            "gap": unlearned - reference,
            "band": band,
            "beyond_band": abs(unlearned - reference) - band,
        }
    worst = max(per_task, key=lambda t: per_task[t]["beyond_band"])
    gap, band, beyond = (per_task[worst][k] for k in ("gap", "band", "beyond_band"))
    ok = beyond <= spec.max_gap
    kind = "under-forgetting" if gap > 0 else "over-forgetting"
    reference_name = (
        "the retrain ensemble"
        if has_retrain
        else "the original's score on held-out samples of the forget set's group (reference-free)"
    )
    return CheckResult(
        "forget_quality/gap",
        "pass" if ok else "fail",
        f"worst task {worst}: forget-set score {gap:+.4f} from {reference_name} (band ±{band:.4f}), "
        f"{max(beyond, 0.0):.4f} beyond the band" + ("" if ok else f" ({kind})"),
        beyond,
        spec.max_gap,
        {"worst_task": worst, "per_task": per_task},
        judged="the worst task's |gap| minus its band ≤ max_gap",
    )


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): the standard error of a ROC AUC from its class sizes."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    return math.sqrt(max(variance, 0.0))


def _mia_check(
    ctx: ValidationContext,
    metrics: Mapping[str, float],
    member_metrics: Sequence[Mapping[str, float]],
    max_gap: float,
    confidence: float,
) -> CheckResult:
    """|AUC − mean retrain AUC| beyond ``t_ν·sqrt(s²·(1 + 1/K) + se²)`` must stay within
    ``max_mia_gap``: ``s`` the ensemble's spread of AUCs, ``se`` the candidate's own, ν
    Welch–Satterthwaite's (:func:`~tune_unlearn.scoring.prediction_band.prediction_band`)."""
    name = "forget_quality/mia"
    auc = metrics["mia_auc"]
    members = [m["mia_auc"] for m in member_metrics]
    if math.isnan(auc) or any(math.isnan(a) for a in members):
        return CheckResult(name, "error", "membership inference could not be computed")
    reference = float(np.mean(members)) if members else 0.5
    spread = float(np.std(members, ddof=1)) if len(members) > 1 else 0.0
    sets = ctx.inputs.sets
    se = auc_standard_error(auc, len(sets.forget), len(sets.nonmembers))
    band = prediction_band(spread, len(members), se**2, confidence)
    beyond = abs(auc - reference) - band
    against = (
        f"retrain ensemble {reference:.4f}"
        if members
        else f"{reference:.4f}, held-out samples of the forget set's group (reference-free)"
    )
    return CheckResult(
        name,
        "pass" if beyond <= max_gap else "fail",
        f"MIA AUC {auc:.4f} vs {against} (band ±{band:.4f}), {max(beyond, 0.0):.4f} beyond the band",
        beyond,
        max_gap,
        {"auc": auc, "reference_auc": reference, "member_aucs": members, "band": band, "standard_error": se},
        judged="|AUC − ensemble mean| minus its band ≤ max_mia_gap",
    )


def forget_score_check(ctx: ValidationContext, candidate: Candidate, spec: ForgetQualitySpec) -> CheckResult:
    """The per-example forgetting score of N runs of the candidate's configuration against the
    retrain ensemble must reach ``min_forget_score``. Counts too small to show a score below
    the threshold are an error: they could never fail."""
    from tune_unlearn.scoring.forget_score import resolution

    name = "forget_quality/forget_score"
    threshold = float(spec.min_forget_score or 0.0)
    runs, members = spec.forget_score_runs, len(ctx.retrains)
    if candidate.params is None or candidate.seed is None:
        raise ValueError("forget_score reruns the candidate's configuration: its params and seed are needed")
    if not members:
        raise ValueError("forget_score needs the retrain ensemble")
    rule = ctx.inputs.config.evaluation.forget_score_rule
    floor = resolution(runs, members, rule=rule)
    if floor >= threshold:
        raise ValueError(
            f"{runs} runs against {members} retrains cannot show a score below {floor:.3f}, so they "
            f"cannot fail min_forget_score {threshold:g}: raise forget_score_runs or references.retrain.seeds"
        )
    inputs, references = ctx.inputs, ctx.references
    reruns = configuration_run.rerun_results(inputs, references, candidate.params, candidate.seed, runs - 1)
    score = configuration_run.measure(
        inputs, references, candidate.model, seed=candidate.seed, reruns=reruns
    )["forget_score"]
    return CheckResult(
        name,
        "pass" if score >= threshold else "fail",
        f"forget score {score:.4f} ({rule} rule) over {runs} runs against {members} retrains "
        f"(lowest these counts can show: {floor:.4f})",
        score,
        threshold,
        {"runs": runs, "retrains": members, "resolution": floor, "rule": rule},
        judged="forget_score ≥ min_forget_score",
    )


def uis_check(metrics: Mapping[str, float], spec: UisBudgetSpec) -> CheckResult:
    """UIS, the parameter shift ``‖θ_u − θ_o‖/‖θ_o‖``, within a budget: how far the release
    moves from the model users validated (a retrain is not a baseline: it starts elsewhere)."""
    uis = metrics["uis"]
    return CheckResult(
        "uis_budget",
        "pass" if uis <= spec.max_uis else "fail",
        f"UIS (parameter shift) {uis:.4f}",
        uis,
        spec.max_uis,
        judged="uis ≤ max_uis",
    )


def compute_check(ctx: ValidationContext, candidate: Candidate, spec: ComputeBudgetSpec) -> CheckResult:
    """Unlearning compute as a fraction of one retrain's, counted (``compute_cost``): the same
    verdict on a busy or an idle machine."""
    fraction = candidate.metrics.get("compute_cost")
    if fraction is None or not math.isfinite(fraction):
        raise ValueError("the candidate's unlearning compute is unknown (no metrics from its study)")
    return CheckResult(
        "compute_budget",
        "pass" if fraction <= spec.max_fraction else "fail",
        f"unlearning computed {fraction:.3f} of a retrain's sample-gradients",
        fraction,
        spec.max_fraction,
        judged="compute_cost ≤ max_fraction",
    )


def robustness_check(ctx: ValidationContext, candidate: Candidate, spec: RobustnessSpec) -> CheckResult:
    """Rerun the configuration with other seeds and each searched learning rate (every
    hyperparameter the method declares with ``rate=True``) perturbed up and down; fail when
    forget efficacy or retained utility spreads more than allowed."""
    if candidate.params is None or candidate.seed is None:
        raise ValueError("robustness needs the candidate's configuration (params and seed)")
    params, seed = dict(candidate.params), candidate.seed
    declared = ctx.inputs.method_class.constraints()
    rates = [key for key in params if key in declared and declared[key].rate]
    variants = [(params, seed + k) for k in range(1, spec.seeds + 1)]
    for lr in rates:
        for factor in (1 - spec.lr_perturbation, 1 + spec.lr_perturbation):
            variants.append(({**params, lr: params[lr] * factor}, seed))
    outcomes = {"forget_efficacy": [], "retained_utility": []}  # type: dict[str, list[float]]
    for variant_params, variant_seed in variants:
        metrics = configuration_run.run(
            ctx.inputs, ctx.references, variant_params, seed=variant_seed, recovery=ctx.recovery
        ).metrics
        for key in outcomes:
            outcomes[key].append(metrics[key])
    for key in outcomes:
        outcomes[key].append(candidate.metrics.get(key, outcomes[key][0]))
    spreads = {key: max(v) - min(v) for key, v in outcomes.items()}
    worst = max(spreads.values())
    return CheckResult(
        "robustness",
        "pass" if worst <= spec.max_spread else "fail",
        f"largest spread {worst:.4f} over {len(variants)} reruns ("
        + (f"rates perturbed: {', '.join(rates)}" if rates else "no searched rate: seeds only")
        + ")",
        worst,
        spec.max_spread,
        {"spreads": spreads, "outcomes": outcomes, "perturbed_rates": rates},
    )
