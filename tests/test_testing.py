"""The contract checks of tune_unlearn.testing, on every built-in plugin and on broken ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import Tensor

from tune_unlearn.methods import METHODS, GradDiff, StepGradients
from tune_unlearn.problems import DigitsProblem, MultiTaskModel, ScenesProblem, ShapesProblem
from tune_unlearn.testing import check_method, check_problem

BUILT_IN_PROBLEMS = {
    "digits": lambda: DigitsProblem(hidden=8, epochs=2),
    "shapes": lambda: ShapesProblem(num_samples=400, epochs=1, channels=4),
    "scenes": lambda: ScenesProblem(num_samples=120, image_size=8, channels=2, epochs=1),
}


@pytest.mark.parametrize("name", METHODS.names())
def test_every_built_in_method_meets_the_contract(name: str) -> None:
    check_method(METHODS.get(name))


@pytest.mark.parametrize("name", sorted(BUILT_IN_PROBLEMS))
def test_every_built_in_problem_meets_the_contract(name: str) -> None:
    check_problem(BUILT_IN_PROBLEMS[name]())


class Positional(GradDiff):  # not a keyword-only dataclass of its own
    name: ClassVar[str] = "positional"

    def __init__(self, ascent_lr: float = 0.01) -> None:
        super().__init__(ascent_lr=ascent_lr)


@dataclass(kw_only=True)
class Frozen(GradDiff):
    name: ClassVar[str] = "frozen"

    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        return torch.zeros_like(grads.forget)

    @property
    def learning_rates(self) -> tuple[float, float]:
        return 0.0, 0.0


def test_a_method_that_breaks_the_contract_is_told_why() -> None:
    with pytest.raises(AssertionError, match="keyword-only"):
        check_method(Positional)
    with pytest.raises(AssertionError, match="unchanged"):
        check_method(Frozen)


@dataclass
class WrongHead(DigitsProblem):
    hidden: int = 8
    epochs: int = 1

    def build_model(self) -> MultiTaskModel:
        model = super().build_model()
        model.heads["parity"] = torch.nn.Linear(8, 3)
        return model


@dataclass
class OverlappingSplits(DigitsProblem):
    """Every sample in train: the holdout overlaps what trials read."""

    hidden: int = 8
    epochs: int = 1

    def split(self, num_samples: int, seed: int) -> dict[str, Tensor]:
        everything = torch.arange(num_samples)
        return {"train": everything, "val": everything[:100], "holdout": everything[100:200]}


def test_a_problem_that_breaks_the_contract_is_told_why() -> None:
    with pytest.raises(AssertionError, match="head 'parity' must output"):
        check_problem(WrongHead())
    with pytest.raises(AssertionError, match="disjoint"):
        check_problem(OverlappingSplits())


from tune_unlearn.scoring.metrics import METRICS  # noqa: E402
from tune_unlearn.testing import (  # noqa: E402
    check_metric,
    check_probe_family,
    parametrize_with_checks,
)
from tune_unlearn.validation import PROBES  # noqa: E402


@parametrize_with_checks([METRICS.get(name) for name in METRICS.names()])
def test_every_built_in_metric_passes_each_named_check(check) -> None:  # type: ignore[no-untyped-def]
    check()


@parametrize_with_checks([PROBES.get(name) for name in PROBES.names()])
def test_every_built_in_probe_family_passes_each_named_check(check) -> None:  # type: ignore[no-untyped-def]
    check()


def test_a_metric_or_probe_family_that_breaks_the_contract_is_told_why() -> None:
    from tune_unlearn.hyperparameters import Param
    from tune_unlearn.scoring.metrics import Metric, MetricContext
    from tune_unlearn.validation import Probe, ProbeFamily, ValidationContext

    class Sideways(Metric):
        name = "sideways"
        direction = "sideways"  # type: ignore[assignment]

        def compute(self, ctx: MetricContext) -> float:
            return 0.0

    with pytest.raises(AssertionError, match="unknown direction 'sideways'"):
        check_metric(Sideways)

    class Leaky(ProbeFamily):
        name = "leaky"
        parameters: ClassVar[dict[str, Param]] = {}

        def build(self, ctx: ValidationContext) -> Probe:  # draws from train: not allowed
            train = ctx.inputs.train[:10]
            return Probe(self.name, ctx.all_tasks(train))

    with pytest.raises(AssertionError, match="holdout split only"):
        check_probe_family(Leaky)


def test_parametrize_with_checks_names_each_case() -> None:
    mark = parametrize_with_checks([METHODS.get("graddiff")])
    ids = [param.id for param in mark.args[1]]
    assert "GradDiff-keyword_only" in ids and "GradDiff-declared_ranges_refused" in ids
