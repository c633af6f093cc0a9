from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tune_unlearn.config.schema import ConfigError
from tune_unlearn.config.study_config import parse_study
from tune_unlearn.problems import DigitsProblem, ShapesProblem
from tune_unlearn.problems.forget import LabeledSet
from tune_unlearn.references.training import ReferenceCache, train_model

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
