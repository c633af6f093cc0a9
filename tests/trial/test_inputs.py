"""A study's fixed inputs as values: what a trial scores, what loading them costs, and where a
trial's time goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tune_unlearn.study.runner import run_study
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.inputs import load_inputs
from tune_unlearn.trial.study_references import load_study_references, load_study_values

from ..helpers import tiny_study


def test_the_retain_set_is_scored_on_a_seeded_sample_and_the_other_sets_whole(tmp_path: Path) -> None:
    sampled = load_study_values(tiny_study(tmp_path, evaluation={"retain_sample": 100}))
    whole = load_study_values(tiny_study(tmp_path, evaluation={"retain_sample": None}))
    assert len(sampled.inputs.scored["retain"]) == 100 < len(whole.inputs.scored["retain"])
    assert len(whole.inputs.scored["retain"]) == len(whole.inputs.sets.retain)  # the method's set is whole
    assert len(sampled.inputs.sets.retain) == len(whole.inputs.sets.retain)
    for name in ("val", "forget", "kept"):
        assert sampled.inputs.scored[name] is sampled.inputs.sets.named()[name]
    again = load_study_values(tiny_study(tmp_path, evaluation={"retain_sample": 100}))
    assert sampled.inputs.scored["retain"].indices.equal(again.inputs.scored["retain"].indices)  # seeded
    # the sample's score estimates the whole set's, and the other metrics do not depend on it
    model = sampled.references.original_model()
    a, b = configuration_run.measure(*sampled, model), configuration_run.measure(*whole, model)
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


def test_loading_the_inputs_trains_nothing_and_the_references_come_after(tmp_path: Path) -> None:
    """``check`` and ``stream`` stop at the inputs: no model is trained or cached, and the plan
    says what the references would cost; loading them then trains into the cache once."""
    config = tiny_study(tmp_path)
    inputs = load_inputs(config)
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*.pt"))
    count, seconds = inputs.reference_plan.missing_cost()
    assert count == 1 + 5 and seconds > 0  # the original and the default ensemble of five
    references = load_study_references(inputs, progress=False)
    assert references.trained == ("original", "retrain ×5")
    assert inputs.reference_plan.missing_cost() == (0, 0.0)
    again = load_study_references(load_inputs(config), progress=False)
    assert again.trained == ()  # from the cache
    assert again.scores == references.scores


def test_the_sample_sets_are_named_as_scores_report_them(tmp_path: Path) -> None:
    partial = load_inputs(tiny_study(tmp_path))
    assert list(partial.sets.named()) == ["val", "forget", "retain", "kept"]
    assert partial.sets.peers is None and partial.sets.nonmembers is partial.sets.val
    # Reference-free, on a random half of a group: the group's held-out peers are the non-members.
    free = load_inputs(
        tiny_study(
            tmp_path,
            forget={"mode": "full", "where": {"digit": 3}, "fraction": 0.5},
            references={"cache_dir": str(tmp_path / "cache"), "retrain": False},
        )
    )
    assert list(free.sets.named()) == ["val", "forget", "retain", "peers"]
    peers = free.sets.nonmembers
    assert peers is free.sets.peers and len(peers) > 0
    assert bool((free.data.labels["digit"][peers.indices] == 3).all())
