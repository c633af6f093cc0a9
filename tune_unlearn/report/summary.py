"""A study's analysed state, rebuilt from its storage: the trials, the Pareto front, the
hypervolume, the recommendation (above the collapse floor, the first in the rule's order that
the validation suite passed) and the verdicts. ``outputs``, ``markdown`` and ``plots`` write
files from it; nothing here writes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from tune_unlearn.config.study_config import StudyConfig
from tune_unlearn.report.importances import param_importances
from tune_unlearn.report.pareto import (
    HypervolumeBox,
    front_trials,
    hypervolume_history,
    is_feasible,
    objective_directions,
    rank,
)
from tune_unlearn.report.study_record import StudyRecord, Verdict
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.scoring.metrics import reference_retained_utility


@dataclass(frozen=True)
class StudySummary:
    """The analysed state of a study."""

    config: StudyConfig
    trials: list[FrozenTrial]
    front: list[FrozenTrial]
    recommended: FrozenTrial | None
    box: HypervolumeBox
    hypervolume: float
    history: list[float]
    importances: dict[str, dict[str, float]]
    validation: Mapping[int, Verdict]
    #: Why no trial, or not every front trial, could be recommended (the collapse floor, the
    #: validation suite's verdicts).
    recommendation_note: str | None = None
    #: The front trials a recommendation may pick, in the rule's order of preference.
    ranked: list[FrozenTrial] = field(default_factory=list)
    #: Retrains spent measuring the rate scales the search space is relative to.
    rate_scales_cost: float = 0.0

    @property
    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    @property
    def feasible(self) -> list[FrozenTrial]:
        return [t for t in self.complete if is_feasible(t)]

    @property
    def reference_retained_utility(self) -> float | None:
        """What honest deletion of the request keeps (``retained_utility`` of the retrain
        reference), from the reference scores every complete trial records; ``None`` before a
        trial completes or without a retrain reference."""
        complete = self.complete
        return reference_retained_utility(TrialRecord.of(complete[0]).metrics) if complete else None

    def is_pareto(self, trial: FrozenTrial) -> bool:
        return any(t.number == trial.number for t in self.front)

    def is_recommended(self, trial: FrozenTrial) -> bool:
        return self.recommended is not None and self.recommended.number == trial.number


def summarise(study: optuna.Study, config: StudyConfig) -> StudySummary:
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    dirs = objective_directions(config.objectives)
    front = front_trials(trials, dirs)
    box = HypervolumeBox.for_study(config.objectives, trials)
    volume = box.hypervolume([t.values for t in front]) if front else 0.0  # type: ignore[arg-type]
    record = StudyRecord.of(study)
    validation = record.verdicts
    stop_note = None
    if config.validation.stop_at_releasable:
        # Every trial the rule could pick was judged as it finished: pick among those that passed.
        passed = [t for t in trials if (v := validation.get(t.number)) is not None and v.passed]
        eligible, floor_note = above_collapse_floor(front_trials(passed, dirs), config.collapse_guard.floor)
        stop_note = stopped_search_note(trials, validation, record.releasable_trial)
    else:
        eligible, floor_note = above_collapse_floor(front, config.collapse_guard.floor)
    ranked = rank(eligible, dirs, config.recommend, config.objectives, box)
    recommended, gate_note = gated_recommendation(
        ranked, validation, gated=config.validation.suite is not None
    )
    notes = [n for n in (stop_note, floor_note, gate_note) if n]
    return StudySummary(
        config=config,
        trials=trials,
        front=front,
        recommended=recommended,
        recommendation_note="; ".join(notes) or None,
        ranked=ranked,
        box=box,
        hypervolume=volume,
        history=hypervolume_history(trials, box, dirs),
        importances=param_importances(study, config.objectives, trials),
        validation=validation,
        rate_scales_cost=record.rate_scales_cost,
    )


def stopped_search_note(
    trials: list[FrozenTrial], verdicts: Mapping[int, Verdict], releasable: int | None
) -> str:
    """``validation.stop_at_releasable``: where the search ended, and the trials judged before."""
    failed = [
        f"trial {n} ({', '.join(v.failed) or v.verdict})" for n, v in sorted(verdicts.items()) if not v.passed
    ]
    before = f"; judged and refused: {'; '.join(failed)}" if failed else ""
    if releasable is None:
        return (
            f"no configuration is recommended: no trial judged as it finished passes the validation "
            f"suite (validation.stop_at_releasable), in {len(trials)} trials{before}"
        )
    return (
        f"the search stopped at trial {releasable}, the first to pass the validation suite as it "
        f"finished (validation.stop_at_releasable), after {len(trials)} trials{before}"
    )


def gated_recommendation(
    ranked: list[FrozenTrial], verdicts: Mapping[int, Verdict], *, gated: bool
) -> tuple[FrozenTrial | None, str | None]:
    """The recommendation: without a validation suite, the rule's first trial; with one, the
    first in the rule's order whose verdict passed, so that the recommended configuration is
    one the gate releases. Trials it passed over are named with their failed checks; none
    passing (or none validated yet) recommends nothing, and the note says why."""
    if not ranked:
        return None, None
    if not gated:
        return ranked[0], None
    failed: list[str] = []
    for trial in ranked:
        verdict = verdicts.get(trial.number)
        if verdict is None:
            break
        if verdict.passed:
            if not failed:
                return trial, None
            return trial, (
                f"trial {trial.number} is the first in the rule's order that passes the validation "
                f"suite; before it, {'; '.join(failed)}"
            )
        checks = ", ".join(verdict.failed) or verdict.verdict
        failed.append(f"trial {trial.number} fails it ({checks})")
    if len(failed) == len(ranked):
        listed = "; ".join(failed)
        return None, f"no configuration is recommended: no front trial passes the validation suite ({listed})"
    return None, "no configuration is recommended: the front is not validated yet"


def above_collapse_floor(front: list[FrozenTrial], floor: float) -> tuple[list[FrozenTrial], str | None]:
    """The front trials a recommendation may pick: retained utility at or above the collapse
    floor (a collapsed model is never recommended, even when nothing dominates it), and a note
    naming the ones left out."""

    def utility(trial: FrozenTrial) -> float:
        value = TrialRecord.of(trial).metric("retained_utility")
        return math.nan if value is None else value

    # A trial with no recorded utility (none in a study; a hand-built one) cannot be judged.
    eligible = [t for t in front if not utility(t) < floor]
    below = [t for t in front if t not in eligible]
    if not below:
        return eligible, None
    listed = ", ".join(f"{t.number} ({utility(t):.3f})" for t in below)
    if not eligible:
        return eligible, (
            f"no configuration is recommended: every Pareto trial's retained utility is below the "
            f"collapse floor {floor:g} (trials {listed}); widen the search or lower the learning rates"
        )
    return eligible, f"not considered, retained utility below the collapse floor {floor:g}: trials {listed}"
