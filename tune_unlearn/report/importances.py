"""Hyperparameter importances per objective, with Optuna's fANOVA evaluator.

Seeded, so that ``report`` rebuilds the same numbers from the same storage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import optuna
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial, TrialState


def _objective(index: int) -> Callable[[FrozenTrial], float]:
    def value(trial: FrozenTrial) -> float:
        return float(trial.values[index])

    return value


def param_importances(
    study: optuna.Study, objectives: Sequence[str], trials: Sequence[FrozenTrial], seed: int = 0
) -> dict[str, dict[str, float]]:
    """``{objective: {param: normalised importance}}``; empty for an objective when fewer than
    two complete trials, no varied parameter or a constant objective leave nothing to
    attribute."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    varied = {
        name
        for name in {k for t in complete for k in t.params}
        if len({t.params.get(name) for t in complete}) > 1
    }
    if len(complete) < 2 or not varied:
        return {name: {} for name in objectives}
    out: dict[str, dict[str, float]] = {}
    for index, name in enumerate(objectives):
        try:
            importances = get_param_importances(
                study,
                evaluator=FanovaImportanceEvaluator(seed=seed),
                params=sorted(varied),
                target=_objective(index),
            )
        except RuntimeError:  # fANOVA: the objective did not vary, so nothing to attribute
            out[name] = {}
            continue
        out[name] = {param: float(value) for param, value in sorted(importances.items())}
    return out
