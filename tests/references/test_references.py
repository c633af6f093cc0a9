from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tune_unlearn.config.schema import ConfigError
from tune_unlearn.config.study_config import parse_study
from tune_unlearn.problems import DigitsProblem, ShapesProblem
from tune_unlearn.problems.forget import LabeledSet
from tune_unlearn.references import reference_models
from tune_unlearn.references.reference_models import ReferencePlan
from tune_unlearn.references.training import ReferenceCache, train_members, train_model
from tune_unlearn.trial.inputs import load_inputs

from ..helpers import tiny_study


def rates_of_one_training(monkeypatch: pytest.MonkeyPatch, problem: DigitsProblem) -> tuple[list[float], int]:
    """The learning rate of every optimizer step of one reference training, and the number of
    steps the recipe implies (epochs × batches per epoch)."""
    seen: list[float] = []
    step = torch.optim.Adam.step

    def recording_step(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        seen.append(float(self.param_groups[0]["lr"]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    data = problem.load_data()
    rows = torch.arange(300)
    labeled = LabeledSet(rows, torch.ones(len(rows), len(problem.tasks), dtype=torch.bool))
    train_model(problem, data, labeled, seed=0, progress=False)
    recipe = problem.recipe()
    return seen, recipe.epochs * math.ceil(len(rows) / recipe.batch_size)


def test_a_cosine_recipe_anneals_the_rate_to_zero_over_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    rates, total = rates_of_one_training(monkeypatch, DigitsProblem(epochs=3, lr=0.01, schedule="cosine"))
    # By hand: step t of T runs at lr · (1 + cos(π t / T)) / 2.
    expected = [0.01 * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)]
    assert len(rates) == total == 15
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert rates[-1] < 0.01 * 0.02  # the last steps barely move the weights


def test_a_constant_recipe_holds_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    rates, total = rates_of_one_training(monkeypatch, DigitsProblem(epochs=2, lr=0.01))
    assert rates == [0.01] * total


def test_the_schedule_is_part_of_the_reference_cache_key(tmp_path: Path) -> None:
    cache = ReferenceCache(tmp_path)
    keys = {cache.key("original", ShapesProblem(schedule=s), seed=0) for s in ("constant", "cosine")}
    assert len(keys) == 2
    assert ShapesProblem().recipe().schedule == "cosine"  # the CNN's default, see its docstring


def test_an_unknown_schedule_is_refused_at_its_path() -> None:
    raw = tiny_study(Path("/tmp")).model_dump(mode="json")
    raw["problem"]["params"] = {**raw["problem"].get("params", {}), "schedule": "linear"}
    with pytest.raises(ConfigError, match=r"problem.params: .*schedule must be one of constant, cosine"):
        parse_study(raw)


def ensemble_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **ensemble: object) -> ReferencePlan:
    """The tiny study's reference plan on a machine of two cores."""
    monkeypatch.setattr(reference_models.os, "cpu_count", lambda: 2)
    config = tiny_study(
        tmp_path, references={"cache_dir": str(tmp_path / "cache"), "retrain": {"seeds": 5, **ensemble}}
    )
    return load_inputs(config).reference_plan


def test_the_ensemble_trains_in_processes_only_where_they_save_more_than_they_cost_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # By hand, two cores and five members: in two processes they train in ceil(5/2) = 3 rounds,
    # one after another in 5, so processes save 2 rounds of s seconds, worth their start-up
    # (PROCESS_START_SECONDS = 10) from s = 5 on.
    assert reference_models.PROCESS_START_SECONDS == 10.0
    plan = ensemble_plan(tmp_path, monkeypatch)
    plan.__dict__["seconds_per_model"] = 4.99  # the cached estimate, set instead of measured
    assert plan.jobs(5) == 1
    assert plan.missing_cost() == (6, pytest.approx(4.99 * 6))  # the original, then five in a row
    plan.__dict__["seconds_per_model"] = 5.0
    assert plan.jobs(5) == 2
    assert plan.missing_cost() == (6, pytest.approx(5.0 * (1 + 3)))
    assert plan.jobs(1) == 1


def test_an_ensembles_given_process_count_is_kept_however_cheap_its_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = ensemble_plan(tmp_path, monkeypatch, n_jobs=3)
    plan.__dict__["seconds_per_model"] = 0.01
    assert plan.jobs(5) == 3


def test_members_trained_here_on_one_thread_match_those_trained_in_worker_processes() -> None:
    """Whether the members train in processes is timed, so it may differ from run to run; the
    members themselves must not, so in this process they train on one thread, as a worker does,
    and the thread count is given back after."""
    problem = DigitsProblem(hidden=16, epochs=2)
    data = problem.load_data()
    rows = torch.arange(200)
    labeled = LabeledSet(rows, torch.ones(len(rows), len(problem.tasks), dtype=torch.bool))
    threads = torch.get_num_threads()
    here = train_members(problem, data, labeled, [0, 1], n_jobs=1, progress=False, one_thread=True)
    assert torch.get_num_threads() == threads
    workers = train_members(problem, data, labeled, [0, 1], n_jobs=2, progress=False)
    for (mine, _), (theirs, _) in zip(here, workers, strict=True):
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[name], theirs[name]) for name in mine)
