"""``optimizer: adam``: each stream a method steps along passes through its own Adam moments,
checked against ``torch.optim.Adam`` and against first steps worked by hand."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tune_unlearn.methods import GradDiff, NegativePreference
from tune_unlearn.methods._adam import AdamMoments
from tune_unlearn.trial.study_references import LoadedStudy

from .helpers import original_model
from .test_published_updates import BATCH, SEED, first_batches, forget_loss, npo_loss, retain_loss

EPS = 1e-8


def test_moments_times_the_rate_are_torch_adams_updates() -> None:
    """Three steps on fixed gradients: ``−η·direction`` equals the update torch's Adam takes."""
    gradients = [torch.tensor([0.3, -2.0, 1e-3, 0.0]), torch.tensor([-0.1, -1.0, 4.0, 0.5])]
    gradients.append(torch.tensor([2.0, 0.2, -4.0, 0.5]))
    weight = torch.nn.Parameter(torch.zeros(4))
    adam = torch.optim.Adam([weight], lr=0.01)
    moments = AdamMoments(4, torch.device("cpu"))
    for step, gradient in enumerate(gradients):
        before = weight.detach().clone()
        weight.grad = gradient.clone()
        adam.step()
        assert torch.allclose(weight.detach() - before, -0.01 * moments.direction(gradient, step), atol=1e-7)


def gradient_of(loss: torch.Tensor, model: torch.nn.Module) -> list[torch.Tensor]:
    params = list(model.parameters())
    found = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(found, params, strict=True)]


def test_graddiff_first_adam_step_normalises_forget_and_retain_each_on_its_own(
    tiny_values: LoadedStudy,
) -> None:
    """Adam's first step is ``g/(|g| + ε)`` per weight, so GradDiff's is
    ``η_a·g_f/(|g_f| + ε) − η_r·g_r/(|g_r| + ε)``: two streams, two sets of moments (one set
    for ``η_a·g_f − η_r·g_r`` would move every weight by the same ±η)."""
    method = GradDiff(
        steps=1, batch_size=BATCH, ascent_lr=0.003, retain_lr=0.001, optimizer="adam", max_step=1e9
    )
    unlearned = original_model(tiny_values)
    method.unlearn(unlearned, tiny_values.inputs.setup, seed=SEED)

    by_hand = original_model(tiny_values)
    by_hand.eval()
    forget, retain = first_batches(tiny_values, method)
    assert forget is not None and retain is not None
    g_forget = gradient_of(forget_loss(by_hand, tiny_values, forget), by_hand)
    g_retain = gradient_of(retain_loss(by_hand, tiny_values, retain), by_hand)
    with torch.no_grad():
        for parameter, f, r in zip(by_hand.parameters(), g_forget, g_retain, strict=True):
            parameter.add_(0.003 * f / (f.abs() + EPS) - 0.001 * r / (r.abs() + EPS))
    steps = []
    for expected, actual, before in zip(
        by_hand.parameters(), unlearned.parameters(), original_model(tiny_values).parameters(), strict=True
    ):
        assert torch.allclose(actual, expected, atol=1e-6), "GradDiff's Adam step"
        steps.append((actual - before).detach().abs().flatten())
    moved = torch.cat(steps)
    moved = moved[moved > 1e-4]
    # A weight both streams reach moves by η_a ± η_r (0.004 or 0.002), one stream reaches by its
    # rate alone, never by a gradient's size (all but weights whose |g| is near ε).
    nearest = (moved[:, None] - torch.tensor([0.001, 0.002, 0.003, 0.004])).abs().min(dim=1).values
    assert float((nearest < 1e-6).float().mean()) > 0.95


def test_a_loss_methods_first_adam_step_is_the_rate_times_the_gradients_sign(
    tiny_values: LoadedStudy,
) -> None:
    method = NegativePreference(
        steps=1, batch_size=BATCH, lr=0.002, forget_weight=1.5, beta=0.7, optimizer="adam", max_step=1e9
    )
    unlearned = original_model(tiny_values)
    method.unlearn(unlearned, tiny_values.inputs.setup, seed=SEED)

    by_hand = original_model(tiny_values)
    by_hand.eval()
    forget, retain = first_batches(tiny_values, method)
    gradient = gradient_of(npo_loss(method, tiny_values, by_hand, forget, retain), by_hand)
    with torch.no_grad():
        for parameter, g in zip(by_hand.parameters(), gradient, strict=True):
            parameter.sub_(0.002 * g / (g.abs() + EPS))
    for expected, actual in zip(by_hand.parameters(), unlearned.parameters(), strict=True):
        assert torch.allclose(actual, expected, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_run_starts_from_fresh_moments(tiny_values: LoadedStudy, optimizer: str) -> None:
    """The same method object run twice from the original gives the same model: no Adam state
    carried from one trial's run into the next."""
    method = GradDiff(steps=3, batch_size=BATCH, ascent_lr=0.003, retain_lr=0.001, optimizer=optimizer)
    first, second = original_model(tiny_values), original_model(tiny_values)
    method.unlearn(first, tiny_values.inputs.setup, seed=SEED)
    method.unlearn(second, tiny_values.inputs.setup, seed=SEED)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sgd_is_the_default_and_an_unknown_optimizer_is_refused() -> None:
    assert GradDiff().optimizer == "sgd"
    with pytest.raises(ValueError, match="optimizer"):
        dataclasses.replace(GradDiff(), optimizer="rmsprop")
