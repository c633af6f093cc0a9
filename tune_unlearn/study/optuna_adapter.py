"""Every call into Optuna's private API, in one place.

A distributed study needs three things Optuna's public API does not offer: writing an attribute
of a trial from outside its ``Trial`` object (a heartbeat thread, a worker failing another
worker's stale trial), failing a trial only if it is still running (an atomic state change, so
two workers cannot both retry it), and constraints in the list form optuna-dashboard reads. They
go through the storage and the trial id, both private. When an Optuna release moves them, this
module is what changes; ``pyproject.toml`` bounds Optuna's major version for that reason.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

#: The system attribute optuna-dashboard reads a trial's constraint values from (a list; Optuna
#: itself also reads it, as its "old format").
_DASHBOARD_CONSTRAINTS = "constraints"


def _trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return int(trial._trial_id)


def set_trial_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    """A user attribute of a running trial, written by any thread or process."""
    study._storage.set_trial_user_attr(_trial_id(trial), key, value)


def fail_if_running(study: optuna.Study, trial: optuna.Trial | FrozenTrial, reason: str) -> bool:
    """Fail the trial with ``reason`` unless it has finished (or another process failed it
    first); ``True`` when this call failed it."""
    storage = study._storage
    trial_id = _trial_id(trial)
    if storage.get_trial(trial_id).state.is_finished():
        return False
    storage.set_trial_user_attr(trial_id, "fail_reason", reason)  # a finished trial takes none
    return bool(storage.set_trial_state_values(trial_id, TrialState.FAIL))


def set_dashboard_constraints(trial: optuna.Trial, values: list[float]) -> None:
    """Constraint values in the list form that optuna-dashboard plots feasibility from."""
    trial.study._storage.set_trial_system_attr(_trial_id(trial), _DASHBOARD_CONSTRAINTS, values)


def trial_log_name() -> str:
    """The logger Optuna reports a failed trial's exception on."""
    return "optuna.study._optimize"
