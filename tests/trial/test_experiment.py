"""What a trial measures, and where its time goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tune_unlearn.study.runner import run_study
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.experiment import Experiment

from ..helpers import tiny_study


def test_the_retain_set_is_scored_on_a_seeded_sample_and_the_other_sets_whole(tmp_path: Path) -> None:
    sampled = Experiment(tiny_study(tmp_path, evaluation={"retain_sample": 100}), progress=False)
    whole = Experiment(tiny_study(tmp_path, evaluation={"retain_sample": None}), progress=False)
    assert len(sampled.scored_sets["retain"]) == 100 < len(whole.scored_sets["retain"])
    assert len(whole.scored_sets["retain"]) == len(whole.sets["retain"])  # the method's set is whole
    assert len(sampled.sets["retain"]) == len(whole.sets["retain"])
    for name in ("val", "forget", "kept"):
        assert sampled.scored_sets[name] is sampled.sets[name]
    again = Experiment(tiny_study(tmp_path, evaluation={"retain_sample": 100}), progress=False)
    assert sampled.scored_sets["retain"].indices.equal(again.scored_sets["retain"].indices)  # seeded
    # the sample's score estimates the whole set's, and the other metrics do not depend on it
    model = sampled.original_model()
    a, b = configuration_run.measure(sampled, model), configuration_run.measure(whole, model)
    assert a["score/unlearned/retain/digit"] == pytest.approx(b["score/unlearned/retain/digit"], abs=0.05)
    for key in ("forget_efficacy", "retained_utility", "uis"):
        assert a[key] == b[key]


def test_each_trial_records_where_its_wall_time_went(tmp_path: Path) -> None:
    run = run_study(tiny_study(tmp_path, n_trials=2), progress=False)
    for trial in run.study.trials:
        seconds = trial.user_attrs["seconds"]
        assert set(seconds) == {"unlearning", "evaluation", "tracking", "storage", "total"}
        parts = seconds["unlearning"] + seconds["evaluation"] + seconds["tracking"] + seconds["storage"]
        assert 0 < parts <= seconds["total"]
        assert seconds["tracking"] == 0.0  # tracking is off in the tiny study
