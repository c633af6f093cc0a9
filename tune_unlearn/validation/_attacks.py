"""Attack checks: does the forgotten knowledge come back more easily than from honest retrains?

The attacks themselves are :mod:`tune_unlearn.references.attacks` (shared with the ``relearn_recovery``
and ``quantization_recovery`` metrics); here each outcome becomes a check result that fails
when its excess (the candidate's figure − the retrains' mean − their seed band) is above the
spec's ``margin``. The retrains' side of an attack is computed once per validation context,
for every candidate it judges.
"""

from __future__ import annotations

import numpy as np

from tune_unlearn.config.attack_specs import QuantizationSpec, RelearningSpec
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.references.attacks import (
    Outcome,
    QuantizationAttack,
    RelearningAttack,
    comeback_step,
)
from tune_unlearn.validation._checks import CheckResult
from tune_unlearn.validation._context import ValidationContext


def _check(outcome: Outcome, margin: float, message: str, judged: str) -> CheckResult:
    passed = outcome.excess <= margin
    return CheckResult(
        outcome.name,
        "pass" if passed else "fail",
        f"{message} (seed band ±{outcome.band:.4f})",
        outcome.excess + outcome.band,
        margin,
        {**outcome.details, "seed_band": outcome.band},
        judged,
    )


def comeback_line(candidate: list[float], retrains: list[list[float]], margin: float) -> str:
    """How many attack steps the candidate and each retrain take to come back (their score up
    by more than ``margin`` from before the attack): a failed check says how far from a
    retrain's the candidate is, not only that it is."""

    rise = f"(score up more than {margin:g})"
    step = comeback_step(candidate, margin)
    # a check can fail on the score's excess while the candidate never rises past the margin
    first = (
        f"it comes back {rise} at step {step}"
        if step is not None
        else f"it does not come back {rise} within {len(candidate) - 1} steps"
    )
    steps = sorted((comeback_step(c, margin) for c in retrains), key=lambda s: (s is None, s or 0))
    listed = ", ".join(f"{s}" if s is not None else f"not within {len(retrains[0]) - 1}" for s in steps)
    return f"{first}; the retrains at {listed}"


def relearning_checks(
    ctx: ValidationContext, model: MultiTaskModel, spec: RelearningSpec
) -> list[CheckResult]:
    attack = ctx.attack(RelearningAttack, spec)
    results = []
    for outcome in attack.outcomes(model):
        steps = outcome.details["steps"]
        calibration = (
            f" (calibrated: the retrains withstand {steps} of {spec.steps})" if spec.calibrate else ""
        )
        variant = outcome.name.removeprefix("attack/relearn_")
        candidate, retrains = outcome.details.get("candidate_curve"), outcome.details.get("retrain_curves")
        comeback = (
            f"; {comeback_line(candidate, retrains, spec.margin)}"
            if isinstance(candidate, list) and isinstance(retrains, list) and candidate and retrains
            else ""
        )
        results.append(
            _check(
                outcome,
                spec.margin,
                f"after {steps} steps{calibration} on {outcome.details['sample_size']} {variant} "
                f"samples the forget-set score is {outcome.candidate:.4f}; the retrains' "
                f"{np.mean(outcome.honest):.4f}{comeback}",
                "forget-set score after the attack − the retrains' mean − their seed band ≤ margin",
            )
        )
    return results


def quantization_checks(
    ctx: ValidationContext, model: MultiTaskModel, spec: QuantizationSpec
) -> list[CheckResult]:
    attack = ctx.attack(QuantizationAttack, spec)
    return [
        _check(
            outcome,
            spec.margin,
            f"{bits}-bit weights move the forget-set score {outcome.candidate:+.4f} toward the "
            f"original's; the retrains {np.mean(outcome.honest):+.4f}",
            "candidate move toward the original − mean retrain move − their seed band ≤ margin",
        )
        for bits, outcome in zip(spec.bits, attack.outcomes(model), strict=True)
    ]
