"""What a study stores with each trial, and reads back: one typed record instead of bare keys.

Optuna keeps a trial's extras as user attributes (JSON values by string key). Every module that
writes or reads them goes through the keys and the accessor here, so a key is spelled once and
its type is known where it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

SEED = "seed"  # int: the trial's unlearning seed
METRICS = "metrics"  # {metric or score key: float | None}
DIAGNOSTICS = "diagnostics"  # {diagnostic: float | None}: conflict rates, norm ratio, seconds
SECONDS = "seconds"  # {phase: seconds}: where the trial's wall time went
FEASIBLE = "feasible"  # bool: every constraint met
MLFLOW_RUN = "mlflow_run_id"  # str: the trial's MLflow run
FAIL_REASON = "fail_reason"  # str: why it failed (divergence, interrupt, dead worker, error)
PRUNED_REASON = "pruned_reason"  # str: what the collapse guard saw
PRUNED_AT_STEP = "pruned_at_step"  # int
#: str: what the collapse guard saw, on a complete trial it stopped and had measured where it
#: stood (``collapse_guard.on_collapse: infeasible``)
COLLAPSED = "collapsed"
COLLAPSED_AT_STEP = "collapsed_at_step"  # int
STEPS_SAVED = "steps_saved"  # int: steps the guard spared
SECONDS_SAVED = "seconds_saved"  # float: their estimated seconds
RUNG_SCORES = "rung_scores"  # {rung step: [violation, distance]}: successive halving's judgements
#: A metric key, not an attribute: the trial's recovery-attack compute in retrain units (beside
#: ``compute_cost``, the unlearning's alone); the request's all-in cost counts both.
ROBUSTNESS_COST = "robustness_cost"
HEARTBEAT = "heartbeat"  # float: the last time its worker said it was alive
RETRY_OF = "retry_of"  # int: the trial this one retries


@dataclass(frozen=True)
class TrialRecord:
    """A trial's stored extras, typed; missing ones are ``None`` or empty."""

    number: int
    seed: int | None
    metrics: Mapping[str, float | None]
    diagnostics: Mapping[str, float | None]
    feasible: bool | None
    mlflow_run_id: str | None
    fail_reason: str | None
    pruned_reason: str | None
    collapsed: str | None
    steps_saved: int
    seconds_saved: float
    retry_of: int | None

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        attrs: Mapping[str, Any] = trial.user_attrs
        seed, retry = attrs.get(SEED), attrs.get(RETRY_OF)
        return cls(
            number=trial.number,
            seed=int(seed) if seed is not None else None,
            metrics=dict(attrs.get(METRICS, {})),
            diagnostics=dict(attrs.get(DIAGNOSTICS, {})),
            feasible=attrs.get(FEASIBLE),
            mlflow_run_id=attrs.get(MLFLOW_RUN),
            fail_reason=attrs.get(FAIL_REASON),
            pruned_reason=attrs.get(PRUNED_REASON),
            collapsed=attrs.get(COLLAPSED),
            steps_saved=int(attrs.get(STEPS_SAVED, 0)),
            seconds_saved=float(attrs.get(SECONDS_SAVED, 0.0)),
            retry_of=int(retry) if retry is not None else None,
        )

    @property
    def reason(self) -> str | None:
        """Why the trial did not complete, if it did not; for a complete trial the collapse
        guard stopped and had measured where it stood, what the guard saw."""
        return self.fail_reason or self.pruned_reason or self.collapsed

    def metric(self, name: str) -> float | None:
        value = self.metrics.get(name)
        return float(value) if isinstance(value, (int, float)) else None
