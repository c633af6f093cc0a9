"""The contract every registered method meets; a new method is covered by registering it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tune_unlearn.methods import METHODS, DivergenceError, GradientAscent
from tune_unlearn.trial.study_references import LoadedStudy

from .helpers import original_model

ALL_METHODS = METHODS.names()


@pytest.mark.parametrize("name", ALL_METHODS)
def test_hyperparameters_are_keyword_arguments_with_defaults_that_round_trip(name: str) -> None:
    cls = METHODS.get(name)
    hyper = cls.hyperparameters()
    assert {"steps", "batch_size"} <= set(hyper)
    assert all(value is not dataclasses.MISSING for value in hyper.values())
    method = cls(**hyper)
    assert method.get_params() == hyper
    declared = cls.constraints()

    def other(name: str, value: object) -> object:  # another valid value of each number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        doubled = value * 2
        return doubled if declared[name].problem(doubled) is None else type(value)(value / 2)

    changed = {k: other(k, v) for k, v in hyper.items()}
    assert changed != hyper
    assert cls(**changed).get_params() == changed
    for name, param in declared.items():  # every declaration is checked at construction
        if param.ge is not None or param.gt is not None:
            bad = (param.ge if param.ge is not None else param.gt) - 1  # type: ignore[operator]
            with pytest.raises(ValueError, match=name):
                cls(**{name: bad})
    with pytest.raises(TypeError):
        cls(1)  # type: ignore[misc]  # positional hyperparameters are refused


@pytest.mark.parametrize("name", ALL_METHODS)
def test_unlearning_moves_the_model_and_is_deterministic_under_a_seed(
    tiny_values: LoadedStudy, name: str
) -> None:
    method = METHODS.get(name)(steps=4, batch_size=8)
    first, second = original_model(tiny_values), original_model(tiny_values)
    before = [p.detach().clone() for p in first.parameters()]
    log = method.unlearn(first, tiny_values.inputs.setup, seed=5)
    method.unlearn(second, tiny_values.inputs.setup, seed=5)
    assert log.steps_run == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, first.parameters(), strict=True))
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    # every step's losses were recorded, finite, for the terms the method uses
    if method.uses_forget:
        assert bool(torch.isfinite(log.forget_loss[:4]).all())
    if method.uses_retain:
        assert bool(torch.isfinite(log.retain_loss[:4]).all())


@pytest.mark.parametrize("name", ALL_METHODS)
def test_a_monitor_that_returns_true_ends_the_run_there_and_keeps_it(
    tiny_values: LoadedStudy, name: str
) -> None:
    """What ``collapse_guard.on_collapse: infeasible`` rests on: the log counts the steps that
    ran and only their sample-gradients."""
    method = METHODS.get(name)(steps=8, batch_size=8)
    setup = tiny_values.inputs.setup
    full = method.unlearn(original_model(tiny_values), setup, seed=5)
    seen: list[int] = []

    def stop_at_four(step: int, model: object) -> bool:
        seen.append(step)
        return step == 4

    stopped = method.unlearn(
        original_model(tiny_values), setup, seed=5, monitor=stop_at_four, monitor_every=2
    )
    assert seen == [s for s in (2, 4) if s >= method.monitor_from * 8]  # [4] from half the budget
    assert (stopped.steps_run, full.steps_run) == (4, 8)
    assert 0 < stopped.sample_gradients < full.sample_gradients


def test_a_huge_ascent_rate_raises_divergence_when_steps_are_unbounded(tiny_values: LoadedStudy) -> None:
    model = original_model(tiny_values)
    with pytest.raises(DivergenceError, match="diverged"):
        GradientAscent(steps=40, ascent_lr=1e6, max_step=1e12).unlearn(
            model, tiny_values.inputs.setup, seed=0
        )


@pytest.mark.parametrize("name", ["gradient_ascent", "interference_aware", "npo"])
def test_the_step_bound_caps_each_update_at_max_step_of_the_parameter_norm(
    tiny_values: LoadedStudy, name: str
) -> None:
    cls = METHODS.get(name)
    huge = {key: 1e6 for key, param in cls.constraints().items() if param.rate}
    model = original_model(tiny_values)

    def flat() -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    for _ in range(3):  # each step is taken from where the last one ended
        before = flat()
        cls(steps=1, max_step=0.02, **huge).unlearn(model, tiny_values.inputs.setup, seed=0)
        moved = (flat() - before).norm() / before.norm()
        assert moved == pytest.approx(0.02, rel=1e-3)  # asked far more: scaled down to the bound
    log = cls(steps=40, **huge).unlearn(model, tiny_values.inputs.setup, seed=0)
    assert bool(torch.isfinite(log.forget_loss).all())


def test_a_hyperparameter_declares_its_default_search_once() -> None:
    """The default space is derived from each field's ``search=``: a subclass inherits its
    parent's declarations and adds its own; no separate dict to keep in step."""
    from typing import ClassVar

    from torch import Tensor

    from tune_unlearn.hyperparameters import hyperparameter
    from tune_unlearn.methods import StepGradients, UnlearningMethod
    from tune_unlearn.testing import method_checks

    @dataclasses.dataclass(kw_only=True)
    class Ascent(UnlearningMethod):
        ascent_lr: float = hyperparameter(
            0.01, gt=0.0, rate=True, search={"low": 1e-4, "high": 0.1, "log": True}
        )
        unsearched: int = hyperparameter(3, ge=1)
        name: ClassVar[str] = "ascent"

        def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
            return grads.forget

    @dataclasses.dataclass(kw_only=True)
    class Wider(Ascent):
        rank: int = hyperparameter(4, ge=1, search={"low": 1, "high": 8})
        name: ClassVar[str] = "wider"

    assert Ascent.default_search == {"ascent_lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True}}
    assert Wider.default_search == {**Ascent.default_search, "rank": {"type": "int", "low": 1, "high": 8}}

    @dataclasses.dataclass(kw_only=True)
    class Outside(Ascent):  # a default range below the declared one: the contract says so
        ascent_lr: float = hyperparameter(0.01, gt=0.0, search={"low": -1.0, "high": 0.1})
        name: ClassVar[str] = "outside"

    (fits,) = [
        check for name, check in method_checks(Outside) if name == "default_search_fits_the_declarations"
    ]
    with pytest.raises(AssertionError, match="does not fit its declaration"):
        fits()


@pytest.mark.parametrize(("name", "expected"), [("finetune", [1, 2, 3]), ("shrink_perturb", [2, 3])])
def test_the_monitor_looks_from_the_share_of_the_budget_the_method_declares(
    tiny_values: LoadedStudy, name: str, expected: list[int]
) -> None:
    """``monitor_from`` 0.5 (shrink_perturb, which starts below the guard's floor by design):
    of 4 steps the monitor sees 2 and 3, never 1; never the last step, whose run is finished."""
    seen: list[int] = []

    def record(step: int, _model: object) -> bool:
        seen.append(step)
        return False

    method = METHODS.get(name)(steps=4, batch_size=8)
    method.unlearn(
        original_model(tiny_values), tiny_values.inputs.setup, seed=0, monitor=record, monitor_every=1
    )
    assert seen == expected
