"""The study-level record: keys spelled once, values typed when read back."""

from __future__ import annotations

import optuna

from tune_unlearn.report import study_record
from tune_unlearn.report.study_record import StudyRecord, Verdict, store_verdicts


def test_a_new_study_reads_back_empty_and_stored_values_come_back_typed() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    empty = StudyRecord.of(study)
    assert (empty.parent_run, empty.finalized, empty.budget, empty.sampler_streams) == (None, None, 0, 0)
    assert empty.verdicts == {} and empty.pareto_trials == [] and empty.recommended_trial is None

    verdicts = {
        3: Verdict("release", "fail", False, ["probe/unrelated"]),
        7: Verdict("release", "pass", True, []),
    }
    store_verdicts(study, verdicts)
    # JSON keys are strings in the storage; the record gives the trial numbers back as ints
    assert set(study.user_attrs[study_record.VALIDATION]) == {"3", "7"}
    study.set_user_attr(study_record.BUDGET, 12)
    study.set_user_attr(study_record.PARENT_RUN, "abc123")
    study.set_user_attr(study_record.PARETO_TRIALS, [3, 7])
    study.set_user_attr(study_record.RECOMMENDED_TRIAL, 7)
    record = StudyRecord.of(study)
    assert record.verdicts == verdicts
    assert (record.budget, record.parent_run, record.pareto_trials, record.recommended_trial) == (
        12,
        "abc123",
        [3, 7],
        7,
    )
