"""Attack checks: does the forgotten knowledge come back more easily than from honest retrains?

A model can score like a retrain on the forget set while the knowledge still sits in its
weights, suppressed rather than removed. Two cheap attacks tell the difference, each judged
against the retrain ensemble under the same attack, so what honest deletion also allows is
never held against the candidate:

- *relearning*: fine-tune for a few steps on a small sample of the forget set (target-task
  labels only), and separately on a retain sample only; then score the forget instances *not*
  in the sample. A score above the retrains' mean score after the same attack, plus their seed
  band and ``margin``, fails: the attacker got back more than honest deletion leaves to learn.
  The attack's strength is calibrated on the retrains: it runs the most steps (up to the
  spec's) that they withstand, since an attack under which honest retrains relearn too (one
  shapes retrain in five learns a class back from 16 examples in 10 steps) cannot tell
  suppressed knowledge from removed knowledge.
- *quantization*: round every parameter to a ``bits``-bit symmetric per-tensor grid; measure how
  far the forget-set score moves back toward the original's. Movement beyond the retrains', their
  seed band and ``margin`` fails (a small unlearning update that rounding erases).

Fine-tuning runs with batch-norm statistics frozen (the model in eval mode): the attacker
moves the weights, and statistics from 16 samples would damage every model alike.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from tune_unlearn.forget import LabeledSet
from tune_unlearn.prediction_band import prediction_band
from tune_unlearn.problems import Batch, MultiTaskModel, masked_task_losses
from tune_unlearn.validation._checks import CheckResult
from tune_unlearn.validation._context import ValidationContext
from tune_unlearn.validation._suite import QuantizationSpec, RelearningSpec


def _seeded_split(labeled: LabeledSet, size: int, seed: int) -> tuple[LabeledSet, LabeledSet]:
    order = torch.randperm(len(labeled), generator=torch.Generator().manual_seed(seed))
    chosen, rest = order[:size].sort().values, order[size:].sort().values
    return (
        LabeledSet(labeled.indices[chosen], labeled.mask[chosen]),
        LabeledSet(labeled.indices[rest], labeled.mask[rest]),
    )


def forget_score(ctx: ValidationContext, model: MultiTaskModel, samples: LabeledSet) -> float:
    """Mean correctness on the target tasks over ``samples`` (the forget-set score)."""
    experiment = ctx.experiment
    results = ctx.per_sample_of(model, samples.indices)
    target = experiment.request.target_columns(ctx.task_names)
    return float(results.correct[:, target].mean())


def fine_tuned(
    ctx: ValidationContext,
    model: MultiTaskModel,
    sample: LabeledSet,
    spec: RelearningSpec,
    judged_on: LabeledSet | None = None,
) -> tuple[MultiTaskModel, list[float]]:
    """A copy of ``model`` after ``spec.steps`` full-batch Adam steps on ``sample``, and the
    forget-set score on ``judged_on`` before the first step and after each (empty without it)."""
    experiment = ctx.experiment
    attacked = copy.deepcopy(model)
    attacked.eval()  # batch-norm statistics frozen: see the module docstring
    lr = spec.lr if spec.lr is not None else experiment.problem.recipe().lr
    optimizer = torch.optim.Adam(attacked.parameters(), lr=lr)
    data = experiment.data
    rows = sample.indices.to(data.device)
    batch = Batch(
        data.inputs[rows],
        {name: column[rows] for name, column in data.labels.items()},
        sample.mask.to(data.device),
    )
    curve = [] if judged_on is None else [forget_score(ctx, attacked, judged_on)]
    with torch.enable_grad():
        for _ in range(spec.steps):
            loss = masked_task_losses(attacked(batch.inputs), batch, experiment.problem.tasks).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if judged_on is not None:
                curve.append(forget_score(ctx, attacked, judged_on))
    return attacked, curve


def withstood_steps(honest_curves: list[list[float]], margin: float) -> int:
    """The most steps ``s`` such that at ``s`` and every step before it the retrains' mean
    recovery (score after − score before) plus their seed band is within ``margin``; at least 1
    (the weakest attack, judged with the band as usual)."""
    curves = np.asarray(honest_curves, dtype=float)
    recovery = curves - curves[:, :1]
    withstood = 0
    for step in range(1, curves.shape[1]):
        if float(recovery[:, step].mean()) + seed_band(list(curves[:, step])) > margin:
            break
        withstood = step
    return max(withstood, 1)


def relearning_checks(
    ctx: ValidationContext, model: MultiTaskModel, spec: RelearningSpec
) -> list[CheckResult]:
    experiment = ctx.experiment
    forget_sample, judged_on = _seeded_split(experiment.sets["forget"], spec.sample_size, spec.seed)
    if len(judged_on) < 1:
        raise ValueError(f"the forget set has {len(forget_sample)} instances: none left to judge recovery on")
    retain_sample, _ = _seeded_split(experiment.sets["retain"], spec.sample_size, spec.seed)
    references = _references(ctx, spec.members)

    results = []
    for variant, sample in (("forget", forget_sample), ("retain", retain_sample)):
        candidate_curve = fine_tuned(ctx, model, sample, spec, judged_on)[1]
        honest_curves = [fine_tuned(ctx, r, sample, spec, judged_on)[1] for r in references]
        steps = withstood_steps(honest_curves, spec.margin) if spec.calibrate else spec.steps
        candidate = candidate_curve[steps]
        honest = [curve[steps] for curve in honest_curves]
        calibration = (
            f" (calibrated: the retrains withstand {steps} of {spec.steps})" if spec.calibrate else ""
        )
        results.append(
            _against_retrains(
                f"attack/relearn_{variant}",
                candidate,
                honest,
                spec.margin,
                f"after {steps} steps{calibration} on {len(sample)} {variant} samples the forget-set "
                f"score is {candidate:.4f}; the retrains' {np.mean(honest):.4f}",
                {
                    "candidate_after": candidate,
                    "candidate_before": candidate_curve[0],
                    "retrains_after": honest,
                    "steps": steps,
                    "candidate_curve": candidate_curve,
                    "retrain_curves": honest_curves,
                    "judged_on": len(judged_on),
                },
                judged="forget-set score after the attack − the retrains' mean − their seed band ≤ margin",
            )
        )
    return results


def seed_band(honest: list[float]) -> float:
    """The retrains' seed band: ``t_{K−1} × their spread × sqrt(1 + 1/K)``, from three members
    on (the 95% prediction interval of one more honest retrain); 0 below three."""
    if len(honest) < 3:
        return 0.0
    return prediction_band(float(np.std(honest, ddof=1)), len(honest))


def _against_retrains(
    name: str,
    candidate: float,
    honest: list[float],
    margin: float,
    message: str,
    details: dict[str, object],
    *,
    judged: str,
) -> CheckResult:
    """An attack's outcome on the candidate against the retrains' mean under the same attack,
    beyond the retrains' own seed band (:func:`seed_band`): fail beyond ``margin``."""
    excess = candidate - float(np.mean(honest))
    band = seed_band(honest)
    passed = excess - band <= margin
    return CheckResult(
        name,
        "pass" if passed else "fail",
        f"{message} (seed band ±{band:.4f})",
        excess,
        margin,
        {**details, "seed_band": band},
        judged,
    )


def quantized(model: MultiTaskModel, bits: int) -> MultiTaskModel:
    """A copy with every floating parameter rounded to a symmetric per-tensor ``bits``-bit grid
    (simulated: the values are rounded, the storage stays float)."""
    levels = 2 ** (bits - 1) - 1
    out = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in out.parameters():
            scale = parameter.abs().max() / levels
            if float(scale) > 0:
                parameter.copy_(torch.round(parameter / scale) * scale)
    return out


def quantization_checks(
    ctx: ValidationContext, model: MultiTaskModel, spec: QuantizationSpec
) -> list[CheckResult]:
    experiment = ctx.experiment
    forget = experiment.sets["forget"]
    original = forget_score(ctx, ctx.original, forget)
    references = _references(ctx, spec.members)

    def move_back(target: MultiTaskModel, bits: int) -> float:
        before = forget_score(ctx, target, forget)
        after = forget_score(ctx, quantized(target, bits), forget)
        direction = math.copysign(1.0, original - before) if original != before else 0.0
        return (after - before) * direction

    results = []
    for bits in spec.bits:
        candidate = move_back(model, bits)
        honest = [move_back(r, bits) for r in references]
        results.append(
            _against_retrains(
                f"attack/quantization_{bits}bit",
                candidate,
                honest,
                spec.margin,
                f"{bits}-bit weights move the forget-set score {candidate:+.4f} toward the original's; "
                f"the retrains {np.mean(honest):+.4f}",
                {"candidate_move": candidate, "retrain_moves": honest, "original_score": original},
                judged="candidate move toward the original − mean retrain move − their seed band ≤ margin",
            )
        )
    return results


def _references(ctx: ValidationContext, members: int) -> list[MultiTaskModel]:
    if not ctx.retrains:
        raise ValueError("attack checks compare with the retrain ensemble; this study has no retrain")
    return ctx.retrains[:members]
