"""What a study stores about itself, and reads back: the study-level twin of
:mod:`tune_unlearn.report.trial_record`.

Optuna keeps a study's extras as user attributes (JSON values by string key). Every module that
writes or reads them goes through the keys and the accessor here, so a key is spelled once and
its type is known where it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from tune_unlearn.methods import Scale

PACKAGE_VERSION = "package_version"  # str: the package that ran the study
STUDY_FILE = "study_file"  # {…}: the resolved study file
PARENT_RUN = "mlflow_parent_run_id"  # str: the study's MLflow parent run
TRACKING_URI = "mlflow_tracking_uri"  # str: where that run lives (redacted)
FINALIZED = "finalized"  # str: fingerprint of the trials the outputs were written from
VALIDATION = "validation"  # {trial number as str: verdict}: the gate's verdicts (finalize)
PARETO_TRIALS = "pareto_trials"  # [int]: the front's trial numbers
RECOMMENDED_TRIAL = "recommended_trial"  # int | None
SAMPLER_STREAMS = "sampler_streams"  # int: processes that joined (each its own sampler stream)
BUDGET = "n_trials_budget"  # int: the largest trial budget any process asked for
RATE_SCALES = "rate_scales"  # {scale: float}: the gradient scales relative rates resolve with
RATE_SCALES_COST = "rate_scales_cost"  # float: retrains spent measuring them (the all-in cost)
WARM_START = "warm_start"  # {…}: the warm start's source and configurations (also a trial attr)
#: {"params", "replaced"}: the method's defaults run first (``sampler.start_at_defaults``; also a
#: trial attr, ``True``, on the enqueued trial)
DEFAULT_START = "default_start"
#: int: the first trial the suite passed as it finished (``validation.stop_at_releasable``)
RELEASABLE_TRIAL = "releasable_trial"


@dataclass(frozen=True)
class Verdict:
    """The gate's verdict on one trial, as finalize stores it."""

    suite: str
    verdict: str
    passed: bool
    failed: list[str]

    @classmethod
    def of(cls, stored: Mapping[str, Any]) -> Verdict:
        return cls(
            suite=str(stored.get("suite", "")),
            verdict=str(stored.get("verdict", "not validated")),
            passed=bool(stored.get("passed", False)),
            failed=list(stored.get("failed", [])),
        )

    def stored(self) -> dict[str, Any]:
        return {"suite": self.suite, "verdict": self.verdict, "passed": self.passed, "failed": self.failed}


@dataclass(frozen=True)
class StudyRecord:
    """A study's stored extras, typed; missing ones are ``None`` or empty."""

    parent_run: str | None
    tracking_uri: str | None
    finalized: str | None
    verdicts: Mapping[int, Verdict]
    pareto_trials: list[int]
    recommended_trial: int | None
    releasable_trial: int | None
    rate_scales: Mapping[Scale, float] | None
    rate_scales_cost: float
    budget: int
    sampler_streams: int
    study_file: Mapping[str, Any] | None

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        attrs: Mapping[str, Any] = study.user_attrs
        parent, recommended = attrs.get(PARENT_RUN), attrs.get(RECOMMENDED_TRIAL)
        releasable = attrs.get(RELEASABLE_TRIAL)
        return cls(
            parent_run=None if parent is None else str(parent),
            tracking_uri=attrs.get(TRACKING_URI),
            finalized=attrs.get(FINALIZED),
            verdicts={int(k): Verdict.of(v) for k, v in dict(attrs.get(VALIDATION, {})).items()},
            pareto_trials=[int(n) for n in attrs.get(PARETO_TRIALS, [])],
            recommended_trial=None if recommended is None else int(recommended),
            releasable_trial=None if releasable is None else int(releasable),
            rate_scales=attrs.get(RATE_SCALES),
            rate_scales_cost=float(attrs.get(RATE_SCALES_COST, 0.0)),
            budget=int(attrs.get(BUDGET, 0)),
            sampler_streams=int(attrs.get(SAMPLER_STREAMS, 0)),
            study_file=attrs.get(STUDY_FILE),
        )


def store_verdicts(study: optuna.Study, verdicts: Mapping[int, Verdict]) -> None:
    """Every verdict so far (JSON keys are strings)."""
    study.set_user_attr(VALIDATION, {str(n): v.stored() for n, v in verdicts.items()})
