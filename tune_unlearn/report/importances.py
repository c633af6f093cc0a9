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
    attribute. Over the trials drawn from the latest trial's space only: a study resumed with
    other bounds holds two spaces, and fANOVA cannot attribute across them."""
    every = [t for t in trials if t.state == TrialState.COMPLETE]
    complete = _one_space(every)
    source = study if len(complete) == len(every) else _study_of(study, complete)
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
                source,
                evaluator=FanovaImportanceEvaluator(seed=seed),
                params=sorted(varied),
                target=_objective(index),
            )
        except RuntimeError:  # fANOVA: the objective did not vary, so nothing to attribute
            out[name] = {}
            continue
        out[name] = {param: float(value) for param, value in sorted(importances.items())}
    return out


def _one_space(complete: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials whose every parameter was drawn from the distribution the latest one used."""
    if not complete:
        return complete
    latest = complete[-1].distributions
    return [t for t in complete if all(latest.get(n) == d for n, d in t.distributions.items())]


def _study_of(study: optuna.Study, trials: Sequence[FrozenTrial]) -> optuna.Study:
    """An in-memory study of ``trials`` alone, with ``study``'s directions."""
    subset = optuna.create_study(directions=study.directions)
    subset.add_trials(trials)
    return subset
