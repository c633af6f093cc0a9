"""Run a suite on a candidate: every check, the verdict, and masked collapse."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

from tune_unlearn.report.request_cost import reference_mode
from tune_unlearn.trial import configuration_run
from tune_unlearn.validation._checks import Candidate, CheckResult, guarded, probe_check
from tune_unlearn.validation._context import ValidationContext
from tune_unlearn.validation._gate_checks import CheckInput, run_checks
from tune_unlearn.validation._probes import PROBES
from tune_unlearn.validation._suite import SuiteConfig


@dataclass(frozen=True)
class ValidationReport:
    suite: str
    candidate: str
    results: list[CheckResult]
    #: How probes were judged: the point estimate or the upper confidence bound of the excess.
    probe_rule: str = "estimate"
    #: The reference mode the verdict was judged in, and what its models cost this request in
    #: retrains (:func:`tune_unlearn.report.request_cost.reference_mode`).
    reference_mode: str = ""
    reference_cost: float = 0.0
    #: The candidate's own unlearning compute in retrains, when its study recorded it.
    candidate_cost: float | None = None

    @property
    def judged(self) -> list[CheckResult]:
        """Every result but the skipped (not applicable) ones."""
        return [r for r in self.results if r.status != "skipped"]

    @property
    def unjudged(self) -> list[CheckResult]:
        """Checks the suite demands that the reference mode cannot judge (not applicable)."""
        return [r for r in self.results if r.status == "skipped" and r.details.get("demanded")]

    @property
    def passed(self) -> bool:
        """Every applicable check ran and passed, and none the suite demands went unjudged (fail
        closed); a suite with none never passes."""
        return bool(self.judged) and all(r.passed for r in self.judged) and not self.unjudged

    @property
    def masked_collapse(self) -> bool:
        """The static retain set says all is well while a dependent probe *proves* damage: the
        lower confidence bound of its excess on some task is above its threshold. (A dependent
        probe that fails only because its interval is wide is a failure, not this verdict.)"""
        by_name = {r.name: r for r in self.results}
        static = by_name.get("probe/static_retain")
        return (
            static is not None
            and static.passed
            and any(
                r.status == "fail"
                and r.details.get("damage_proven", False)
                and PROBES.get(r.name.removeprefix("probe/")).dependent
                for r in self.results
                if r.name.startswith("probe/")
            )
        )

    @property
    def verdict(self) -> str:
        if self.passed:
            return "pass"
        return "masked collapse" if self.masked_collapse else "fail"


def validate(ctx: ValidationContext, candidate: Candidate, suite: SuiteConfig) -> ValidationReport:
    unlearned = ctx.per_sample(candidate.model)
    measured = configuration_run.measure(ctx.inputs, ctx.references, candidate.model, seed=suite.seed)
    metrics = {**candidate.metrics, **{k: v for k, v in measured.items() if k != "gpu_seconds"}}
    results: list[CheckResult] = []
    for family, spec in suite.probes.items():
        check = functools.partial(probe_check, ctx, family, spec, suite, candidate.model, unlearned)
        results += guarded([f"probe/{family}"], functools.partial(_as_list, check))
    results += run_checks(CheckInput(ctx, candidate, suite, metrics))
    mode, reference_cost = reference_mode(ctx.inputs.config.references)
    cost = candidate.metrics.get("compute_cost")
    return ValidationReport(
        suite.name,
        candidate.description,
        results,
        suite.probe_rule,
        mode,
        reference_cost,
        float(cost) if isinstance(cost, (int, float)) and math.isfinite(cost) else None,
    )


def _as_list(check: Callable[[], CheckResult]) -> list[CheckResult]:
    return [check()]
