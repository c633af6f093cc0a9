"""Gate checks: a suite's checks beside its probes, one small class each, in one registry.

A check reads its settings from the suite (a built-in at its own key, such as ``uis_budget``; a
plugin check at ``checks.<name>``, its parameters declared like a probe family's), declares the
result names it gives and what it needs, and returns one :class:`CheckResult` per name. A
check that raises, or whose needs the study cannot meet, gives ``error`` results: it fails the
gate (fail closed). A user's own check is a subclass registered in ``CHECKS`` or through the
``tune_unlearn.checks`` entry point group.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from tune_unlearn.config.attack_specs import QuantizationSpec, RelearningSpec
from tune_unlearn.hyperparameters import Param
from tune_unlearn.registry import Registry, subclass_of
from tune_unlearn.validation._attacks import quantization_checks, relearning_checks
from tune_unlearn.validation._checks import (
    Candidate,
    CheckResult,
    compute_check,
    forget_quality_checks,
    forget_score_check,
    guarded,
    robustness_check,
    uis_check,
)
from tune_unlearn.validation._context import ValidationContext
from tune_unlearn.validation._suite import (
    ComputeBudgetSpec,
    ForgetQualitySpec,
    RobustnessSpec,
    SuiteConfig,
    UisBudgetSpec,
)

#: What a check may need beyond a model: the candidate's configuration (params and seed, to
#: rerun it) and the retrain ensemble (to compare with honest deletions).
Need = Literal["configuration", "retrain"]


@dataclass(frozen=True)
class CheckInput:
    """What every check sees: the study's validation context, the candidate, the suite, and
    the candidate's metrics measured on this machine (over its study's own, if any)."""

    ctx: ValidationContext
    candidate: Candidate
    suite: SuiteConfig
    metrics: Mapping[str, float]


class GateCheck(ABC):
    """One check of a suite. ``parameters`` declares a plugin check's settings (each a
    :class:`Param`), given in the suite as ``checks: {<name>: {...}}``; ``needs`` what it
    cannot run without; :meth:`result_names` the results it gives for its settings."""

    name: ClassVar[str]
    parameters: ClassVar[dict[str, Param]] = {}
    needs: ClassVar[frozenset[Need]] = frozenset()
    #: Where a built-in check's settings live in a suite file; ``None``: ``checks.<name>``.
    suite_key: ClassVar[str | None] = None

    def settings(self, suite: SuiteConfig) -> Any | None:
        """This check's settings, or ``None`` when the suite does not run it."""
        given = suite.checks.get(self.name)
        if given is None:
            return None
        return {**{key: param.default for key, param in self.parameters.items()}, **given}

    def result_names(self, settings: Any) -> list[str]:
        return [self.name]

    @abstractmethod
    def run(self, given: CheckInput, settings: Any) -> list[CheckResult]: ...


CHECKS: Registry[type[GateCheck]] = Registry(
    "gate check", "tune_unlearn.checks", accepts=subclass_of(GateCheck)
)


def unmet_need(needs: frozenset[Need], given: CheckInput) -> str | None:
    """Why a check with these needs cannot run on this candidate and study, or ``None``."""
    if "configuration" in needs and (given.candidate.params is None or given.candidate.seed is None):
        return (
            "needs the candidate's configuration (params and seed): gate a study's candidate, "
            "or a model file with its .json beside it"
        )
    if "retrain" in needs and not given.ctx.retrains:
        return "compares with the retrain ensemble, and this study has none (references.retrain)"
    return None


def run_check(check: type[GateCheck], given: CheckInput) -> list[CheckResult]:
    """One check on the candidate: its results, ``error`` ones when it raises or its needs are
    unmet, none when the suite does not name it."""
    instance = check()
    settings = instance.settings(given.suite)
    if settings is None:
        return []
    names = instance.result_names(settings)
    reason = unmet_need(check.needs, given)
    if reason is not None and "retrain" in check.needs and not given.ctx.retrains:
        # The reference mode cannot support it: not applicable, said so, and since the suite
        # demands it the verdict fails closed (ValidationReport.passed).
        why = (
            f"not applicable in reference mode reference-free: {reason}; a bank shared by n "
            "requests (references.retrain: {seeds: K, scope: stream}, K / n retrains per request) "
            "or the ensemble (K) judges it. The suite demands it, so the gate fails closed"
        )
        demanded = {"demanded": True}
        return [CheckResult(n, "skipped", why, details=demanded, judged="not applicable") for n in names]
    if reason is not None:
        return [CheckResult(n, "error", f"could not run: {reason}") for n in names]
    return guarded(names, functools.partial(instance.run, given, settings))


def run_checks(given: CheckInput) -> list[CheckResult]:
    """Every check the suite names, in registration order (built-ins first)."""
    return [result for name in CHECKS.ordered() for result in run_check(CHECKS.get(name), given)]


@CHECKS.add
class ForgetQuality(GateCheck):
    """The forget set's score (and membership-inference AUC) against the retrain ensemble's
    tolerance band, or their reference-free forms without one."""

    name = "forget_quality"
    suite_key = "forget_quality"

    def settings(self, suite: SuiteConfig) -> ForgetQualitySpec | None:
        return suite.forget_quality

    def result_names(self, settings: ForgetQualitySpec) -> list[str]:
        mia = ["forget_quality/mia"] if settings.max_mia_gap is not None else []
        return ["forget_quality/gap", *mia]

    def run(self, given: CheckInput, settings: ForgetQualitySpec) -> list[CheckResult]:
        members = given.ctx.retrain_member_metrics(given.suite.seed)
        return forget_quality_checks(given.ctx, given.metrics, members, settings, given.suite.confidence)


@CHECKS.add
class ForgetScore(GateCheck):
    """The per-example forgetting score of N reruns of the candidate's configuration."""

    name = "forget_score"
    suite_key = "forget_quality.min_forget_score"
    needs: ClassVar[frozenset[Need]] = frozenset({"configuration", "retrain"})

    def settings(self, suite: SuiteConfig) -> ForgetQualitySpec | None:
        spec = suite.forget_quality
        return spec if spec is not None and spec.min_forget_score is not None else None

    def result_names(self, settings: ForgetQualitySpec) -> list[str]:
        return ["forget_quality/forget_score"]

    def run(self, given: CheckInput, settings: ForgetQualitySpec) -> list[CheckResult]:
        return [forget_score_check(given.ctx, given.candidate, settings)]


@CHECKS.add
class UisBudget(GateCheck):
    name = "uis_budget"
    suite_key = "uis_budget"

    def settings(self, suite: SuiteConfig) -> UisBudgetSpec | None:
        return suite.uis_budget

    def run(self, given: CheckInput, settings: UisBudgetSpec) -> list[CheckResult]:
        return [uis_check(given.metrics, settings)]


@CHECKS.add
class ComputeBudget(GateCheck):
    name = "compute_budget"
    suite_key = "compute_budget"

    def settings(self, suite: SuiteConfig) -> ComputeBudgetSpec | None:
        return suite.compute_budget

    def run(self, given: CheckInput, settings: ComputeBudgetSpec) -> list[CheckResult]:
        return [compute_check(given.ctx, given.candidate, settings)]


@CHECKS.add
class Robustness(GateCheck):
    name = "robustness"
    suite_key = "robustness"
    needs: ClassVar[frozenset[Need]] = frozenset({"configuration"})

    def settings(self, suite: SuiteConfig) -> RobustnessSpec | None:
        return suite.robustness

    def run(self, given: CheckInput, settings: RobustnessSpec) -> list[CheckResult]:
        return [robustness_check(given.ctx, given.candidate, settings)]


@CHECKS.add
class Relearning(GateCheck):
    name = "relearning"
    suite_key = "attacks.relearning"
    needs: ClassVar[frozenset[Need]] = frozenset({"retrain"})

    def settings(self, suite: SuiteConfig) -> RelearningSpec | None:
        return None if suite.attacks is None else suite.attacks.relearning

    def result_names(self, settings: RelearningSpec) -> list[str]:
        return ["attack/relearn_forget", "attack/relearn_retain"]

    def run(self, given: CheckInput, settings: RelearningSpec) -> list[CheckResult]:
        return relearning_checks(given.ctx, given.candidate.model, settings)


@CHECKS.add
class Quantization(GateCheck):
    name = "quantization"
    suite_key = "attacks.quantization"
    needs: ClassVar[frozenset[Need]] = frozenset({"retrain"})

    def settings(self, suite: SuiteConfig) -> QuantizationSpec | None:
        return None if suite.attacks is None else suite.attacks.quantization

    def result_names(self, settings: QuantizationSpec) -> list[str]:
        return [f"attack/quantization_{bits}bit" for bits in settings.bits]

    def run(self, given: CheckInput, settings: QuantizationSpec) -> list[CheckResult]:
        return quantization_checks(given.ctx, given.candidate.model, settings)
