"""Validator suite files (``validators/*.yaml``): probes and checks with their thresholds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from tune_unlearn.config.attack_specs import QuantizationSpec, RelearningSpec
from tune_unlearn.config.schema import Strict
from tune_unlearn.validation._probes import PROBES


class ProbeSpec(Strict):
    """A probe family's threshold on excess damage (score lost beyond the retrain ensemble),
    judged per task on the upper bound of its bootstrap confidence interval, plus the family's
    params (each family declares its own: see ``list``)."""

    max_excess: float = Field(0.05, ge=0.0, le=1.0)
    max_churn: float | None = Field(None, ge=0.0, le=1.0)
    params: dict[str, Any] = Field(default_factory=dict)


class ForgetQualitySpec(Strict):
    """``max_gap``: how far beyond the ensemble's tolerance band the worst target task's
    forget-set score may sit. ``max_mia_gap``: the same for membership-inference AUC.
    ``min_forget_score``: the per-example forgetting score over ``forget_score_runs`` runs of
    the candidate's configuration (needs its params; off when unset)."""

    max_gap: float = Field(0.05, ge=0.0, le=1.0)
    max_mia_gap: float | None = Field(0.05, ge=0.0, le=0.5)
    min_forget_score: float | None = Field(None, gt=0.0, le=1.0)
    forget_score_runs: int = Field(16, ge=2, le=256)


class UisBudgetSpec(Strict):
    """UIS (the parameter shift ‖θ_u − θ_o‖/‖θ_o‖) may be at most ``max_uis``."""

    max_uis: float = Field(0.5, gt=0.0)


class ComputeBudgetSpec(Strict):
    max_fraction: float = Field(0.1, gt=0.0)


class RobustnessSpec(Strict):
    seeds: int = Field(2, ge=1)
    lr_perturbation: float = Field(0.2, gt=0.0, lt=1.0)
    max_spread: float = Field(0.1, ge=0.0)


class AttacksSpec(Strict):
    relearning: RelearningSpec | None = None
    quantization: QuantizationSpec | None = None


class SuiteConfig(Strict):
    """A suite. ``probe_rule`` decides how a probe's excess damage is judged against its
    ``max_excess``: ``upper_bound`` passes only when the upper confidence bound is within it
    (proves safety; small probes then fail honest models), ``estimate`` fails when the point
    estimate exceeds it (balanced errors; small probes are guarded by ``min_probe_size``)."""

    name: str
    probe_rule: Literal["upper_bound", "estimate"] = "estimate"
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap: int = Field(1000, ge=100)
    min_probe_size: int = Field(20, ge=2)
    seed: int = 0
    probes: dict[str, ProbeSpec] = Field(default_factory=dict)
    forget_quality: ForgetQualitySpec | None = None
    uis_budget: UisBudgetSpec | None = None
    compute_budget: ComputeBudgetSpec | None = None
    robustness: RobustnessSpec | None = None
    attacks: AttacksSpec | None = None
    #: Plugin gate checks (``validation/_gate_checks.py``): name → its declared parameters.
    checks: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("probes")
    @classmethod
    def _known_families(cls, probes: dict[str, ProbeSpec]) -> dict[str, ProbeSpec]:
        for name in probes:
            PROBES.get(name)  # an unknown name raises with the valid ones
        return probes
