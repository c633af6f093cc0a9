"""Validator suite files (``validators/*.yaml``): probes and checks with their thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tune_unlearn.config import ConfigError, pydantic_issues, read_yaml
from tune_unlearn.validation._probes import PROBES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeSpec(_Strict):
    """A probe family's threshold on excess damage (score lost beyond the retrained reference),
    judged on the upper bound of its bootstrap confidence interval, plus the family's params."""

    max_excess: float = Field(0.05, ge=0.0, le=1.0)
    max_churn: float | None = Field(None, ge=0.0, le=1.0)
    params: dict[str, Any] = Field(default_factory=dict)


class ForgetQualitySpec(_Strict):
    max_gap: float = Field(0.1, ge=0.0, le=1.0)
    max_mia_gap: float = Field(0.1, ge=0.0, le=0.5)


class UisBudgetSpec(_Strict):
    max_excess_uis: float = Field(0.1, ge=0.0)


class ComputeBudgetSpec(_Strict):
    max_fraction: float = Field(0.1, gt=0.0)


class RobustnessSpec(_Strict):
    seeds: int = Field(2, ge=1)
    lr_perturbation: float = Field(0.2, gt=0.0, lt=1.0)
    max_spread: float = Field(0.1, ge=0.0)


class SuiteConfig(_Strict):
    name: str
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap: int = Field(1000, ge=100)
    min_probe_size: int = Field(20, ge=2)
    seed: int = 0
    probes: dict[str, ProbeSpec] = Field(default_factory=dict)
    forget_quality: ForgetQualitySpec | None = None
    uis_budget: UisBudgetSpec | None = None
    compute_budget: ComputeBudgetSpec | None = None
    robustness: RobustnessSpec | None = None

    @field_validator("probes")
    @classmethod
    def _known_families(cls, probes: dict[str, ProbeSpec]) -> dict[str, ProbeSpec]:
        for name in probes:
            PROBES.get(name)
        return probes


def load_suite(path: Path) -> SuiteConfig:
    """Read and validate a suite file; :class:`ConfigError` lists every problem."""
    try:
        return SuiteConfig.model_validate(read_yaml(path))
    except ValidationError as error:
        raise ConfigError(str(path), pydantic_issues(error)) from None
