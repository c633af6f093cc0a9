"""Successive halving over the step budget, for multi-objective studies.

Optuna's pruners judge one intermediate value of a single-objective study, so a study with
several objectives has none; this is ours. A trial is judged at **rungs**: after
``steps / η^k`` of its own step budget (``k = rungs … 1``, ``η`` the ``reduction``), each
rounded up to a multiple of the collapse guard's ``every`` (the step loop's monitoring period)
and kept only below ``steps`` and from the method's first monitored step on (a method whose
``monitor_from`` is above 0 is not judged while it repairs; ``check`` names the dropped
rungs). At a rung the model is measured as a finished trial is, less
what a rung cannot have (the recovery attacks and the costs), and scored by

1. its total constraint violation, ``Σ max(0, violation)`` over the constraints whose metric
   the rung measured (in each metric's units), then
2. its distance to the ideal point, the objectives the rung measured mapped to the unit
   hypervolume box (``report/pareto.py``),

compared in that order (lower is better). The trial goes on while it is among the best
``⌈n / η⌉`` of the ``n`` trials that reached this rung so far, itself included, and always
while ``n < η``: asynchronous successive halving (ASHA, Li et al., MLSys 2020), which never
waits for other trials, so it works the same with threads and with distributed workers. A
pruned trial keeps its rung scores and the steps it ran (its compute counts in the all-in cost
at that share); the sampler sees it as pruned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import optuna

from tune_unlearn.config.study_config import Constraint
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.report.pareto import HypervolumeBox
from tune_unlearn.report.trial_record import RUNG_SCORES
from tune_unlearn.scoring.metrics import METRICS
from tune_unlearn.trial.guard import TrialStopped

RungScore = tuple[float, float]


class RungPruned(TrialStopped):
    """The trial's rung score is not among the best of those that reached the rung."""

    def __init__(self, step: int, score: RungScore, reached: int, kept: int) -> None:
        self.score, self.reached, self.kept = score, reached, kept
        super().__init__(
            step,
            f"successive halving at step {step}: constraint violation {score[0]:.4g}, distance to "
            f"the ideal point {score[1]:.4g}, not among the best {kept} of the {reached} trials "
            "that reached this step",
        )


def rung_steps(steps: int, every: int, reduction: int, rungs: int, first: int = 0) -> list[int]:
    """The steps a trial of ``steps`` is judged at: ``steps / reduction^k`` for ``k = rungs … 1``,
    rounded up to a multiple of ``every``, below ``steps``, without repeats, and not before
    ``first``, the method's first monitored step (:meth:`UnlearningMethod.first_monitored_step`:
    a method that starts below the collapse guard's floor by design is not judged while it
    repairs, by the guard or by a rung)."""
    judged = {every * math.ceil(steps / reduction**k / every) for k in range(1, rungs + 1)}
    return sorted(s for s in judged if first <= s < steps)


def rung_score(
    metrics: dict[str, float], objectives: Sequence[str], constraints: Sequence[Constraint]
) -> RungScore:
    """(total violation, distance to the ideal point) of a rung's metrics; a metric the rung
    did not measure (NaN) counts in neither."""
    violation = sum(
        max(0.0, c.violation(metrics[c.metric]))
        for c in constraints
        if math.isfinite(metrics.get(c.metric, math.nan))
    )
    measured = [name for name in objectives if math.isfinite(metrics.get(name, math.nan))]
    if not measured:
        return violation, 0.0
    values = np.array([[METRICS.get(name)().objective(metrics[name]) for name in measured]])
    distance = float(np.linalg.norm(HypervolumeBox.for_objectives(measured).normalise(values)))
    return violation, distance


def survives(own: RungScore, others: Sequence[RungScore], reduction: int) -> tuple[bool, int, int]:
    """Whether ``own`` is among the best ``⌈n / reduction⌉`` of the ``n`` scores (``others`` and
    itself; a tie goes to the trial being judged), and ``(n, kept)``."""
    reached = len(others) + 1
    if reached < reduction:
        return True, reached, reached
    kept = math.ceil(reached / reduction)
    better = sum(1 for score in others if score < own)
    return better < kept, reached, kept


@dataclass(frozen=True)
class SuccessiveHalving:
    """Judges one trial at its rungs; ``measure(model)`` gives a rung's metrics."""

    trial: optuna.Trial
    steps: list[int]
    reduction: int
    objectives: Sequence[str]
    constraints: Sequence[Constraint]
    measure: Callable[[MultiTaskModel], dict[str, float]]

    def __call__(self, step: int, model: MultiTaskModel) -> None:
        if step not in self.steps:
            return
        score = rung_score(self.measure(model), self.objectives, self.constraints)
        others: list[RungScore] = [
            (recorded[str(step)][0], recorded[str(step)][1])
            for t in self.trial.study.get_trials(deepcopy=False)
            if t.number != self.trial.number
            and str(step) in (recorded := t.user_attrs.get(RUNG_SCORES) or {})
        ]
        scores = dict(self.trial.user_attrs.get(RUNG_SCORES) or {})
        scores[str(step)] = list(score)
        self.trial.set_user_attr(RUNG_SCORES, scores)
        alive, reached, kept = survives(score, others, self.reduction)
        if not alive:
            raise RungPruned(step, score, reached, kept)
