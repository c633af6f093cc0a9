"""Stop the search at the first releasable configuration (``validation.stop_at_releasable``).

A user pays for the compute until the study holds a configuration the release gate passes; the
rest of the budget buys a better trade-off at best, and often nothing releasable. With this on,
each trial a recommendation could pick (complete, feasible, retained utility at or above the
collapse floor) is judged with the study's suite as soon as it finishes, exactly as finalize
judges front trials (a re-run with the trial's seed, reports in ``validation/``). The first that
passes is stored as the study's ``releasable_trial``: this process claims no more trials, and
neither does any other that joins the study (a thread of ``n_jobs``, a worker, a rerun). The
recommendation is then the rule's first among the trials that passed (``report/summary.py``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from tune_unlearn.references.attacks import RecoveryMeasures
from tune_unlearn.report import study_record
from tune_unlearn.report.pareto import is_feasible
from tune_unlearn.report.study_record import StudyRecord, store_verdicts
from tune_unlearn.report.summary import above_collapse_floor
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.study.finalize import judge_trial
from tune_unlearn.trial.inputs import StudyInputs
from tune_unlearn.trial.study_references import StudyReferences


class ReleaseStop:
    """Judges finished trials in the loop and says when the search may end."""

    def __init__(
        self,
        inputs: StudyInputs,
        references: StudyReferences,
        output: Path,
        recovery: RecoveryMeasures | None = None,
    ) -> None:
        from tune_unlearn.validation import ValidationContext, load_suite

        suite_path = inputs.config.validation.suite
        assert suite_path is not None  # the config refuses stop_at_releasable without a suite
        self.inputs, self.references, self.output, self.recovery = inputs, references, output, recovery
        self.suite = load_suite(suite_path)
        self.context = ValidationContext(inputs, references, recovery)
        # One judgement at a time: threads of n_jobs share the context's caches.
        self._lock = threading.Lock()

    @staticmethod
    def found(study: optuna.Study) -> bool:
        """Whether some process has already found a releasable trial."""
        return StudyRecord.of(study).releasable_trial is not None

    def eligible(self, trial: FrozenTrial) -> bool:
        """Complete, feasible and above the collapse floor: a trial the rule could recommend
        (the same floor rule as the recommendation's, ``above_collapse_floor``)."""
        if trial.state != TrialState.COMPLETE or not is_feasible(trial):
            return False
        kept, _ = above_collapse_floor([trial], self.inputs.config.collapse_guard.floor)
        return bool(kept) and TrialRecord.of(trial).metric("retained_utility") is not None

    def judge(self, study: optuna.Study, number: int) -> bool:
        """Judge trial ``number`` if a recommendation could pick it; ``True`` when it passed
        (and the search should end). The verdict is stored with the others at once."""
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        if trial is None or not self.eligible(trial):
            return False
        with self._lock:
            verdict, _ = judge_trial(
                self.inputs, self.references, self.context, self.suite, trial, self.output, self.recovery
            )
            verdicts = dict(StudyRecord.of(study).verdicts)  # fresh: other processes store theirs
            verdicts[number] = verdict
            store_verdicts(study, verdicts)
            if verdict.passed and not self.found(study):
                study.set_user_attr(study_record.RELEASABLE_TRIAL, number)
        return verdict.passed
