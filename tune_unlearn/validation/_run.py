"""Run a suite on a candidate: every check, the verdict, and masked collapse."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from tune_unlearn.validation._checks import (
    Candidate,
    CheckResult,
    compute_check,
    forget_quality_checks,
    guarded,
    probe_check,
    robustness_check,
    uis_check,
)
from tune_unlearn.validation._context import ValidationContext
from tune_unlearn.validation._probes import PROBES
from tune_unlearn.validation._suite import SuiteConfig


@dataclass(frozen=True)
class ValidationReport:
    suite: str
    candidate: str
    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        """Every check ran and passed; a suite with no check never passes."""
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def masked_collapse(self) -> bool:
        """The static retain set says all is well while a dependent probe fails."""
        by_name = {r.name: r for r in self.results}
        static = by_name.get("probe/static_retain")
        dependent_failed = any(
            r.status == "fail" and PROBES.get(r.name.removeprefix("probe/")).dependent
            for r in self.results
            if r.name.startswith("probe/")
        )
        return static is not None and static.passed and dependent_failed

    @property
    def verdict(self) -> str:
        if self.passed:
            return "pass"
        return "masked collapse" if self.masked_collapse else "fail"


def validate(ctx: ValidationContext, candidate: Candidate, suite: SuiteConfig) -> ValidationReport:
    unlearned = ctx.per_sample(candidate.model)
    measured = ctx.experiment.measure(candidate.model, seed=suite.seed)
    metrics = {**candidate.metrics, **{k: v for k, v in measured.items() if k != "gpu_seconds"}}
    reference = ctx.experiment.measure(ctx.retrain, seed=suite.seed) if ctx.retrain is not None else None
    results: list[CheckResult] = []
    for family, spec in suite.probes.items():
        check = functools.partial(probe_check, ctx, family, spec, suite, candidate.model, unlearned)
        results += guarded([f"probe/{family}"], functools.partial(_as_list, check))
    if suite.forget_quality is not None:
        spec_fq = suite.forget_quality
        results += guarded(
            ["forget_quality/gap", "forget_quality/mia"],
            lambda: forget_quality_checks(ctx, metrics, reference, spec_fq),
        )
    if suite.uis_budget is not None:
        spec_uis = suite.uis_budget
        results += guarded(["uis_budget"], lambda: [uis_check(metrics, reference, spec_uis)])
    if suite.compute_budget is not None:
        spec_c = suite.compute_budget
        results += guarded(["compute_budget"], lambda: [compute_check(ctx, candidate, spec_c)])
    if suite.robustness is not None:
        spec_r = suite.robustness
        results += guarded(["robustness"], lambda: [robustness_check(ctx, candidate, spec_r)])
    return ValidationReport(suite.name, candidate.description, results)


def _as_list(check: Callable[[], CheckResult]) -> list[CheckResult]:
    return [check()]
