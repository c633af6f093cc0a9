"""Loss-defined methods run in the same step loop as direction-defined ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tune_unlearn import StepGradients, hyperparameter
from tune_unlearn.methods import GradDiff, L1Sparse, LossMethod, RandomLabel
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.study_references import LoadedStudy

from .helpers import original_model


@dataclass(kw_only=True)
class GradDiffAsALoss(LossMethod):
    """GradDiff written as a loss: ``−η_a·L_f + η_r·L_r``, descended with rate 1."""

    ascent_lr: float = hyperparameter(0.01, ge=0.0)
    retain_lr: float = hyperparameter(0.05, ge=0.0)
    lr: float = hyperparameter(1.0, gt=0.0)
    name: ClassVar[str] = "graddiff_as_a_loss"

    def loss(self, grads: StepGradients, step: int) -> Tensor:
        _, forget = grads._forget_graph
        return -self.ascent_lr * forget + self.retain_lr * grads.retain_task_losses.sum()


def test_a_loss_defined_method_and_a_direction_defined_one_take_the_same_step(
    tiny_values: LoadedStudy,
) -> None:
    as_direction, as_loss = original_model(tiny_values), original_model(tiny_values)
    GradDiff(steps=3, batch_size=8).unlearn(as_direction, tiny_values.inputs.setup, seed=2)
    log = GradDiffAsALoss(steps=3, batch_size=8).unlearn(as_loss, tiny_values.inputs.setup, seed=2)
    for a, b in zip(as_direction.parameters(), as_loss.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert log.sample_gradients == 3 * (8 + 8)  # one backward over both batches per step
    assert bool(torch.isfinite(log.forget_loss[:3]).all() and torch.isfinite(log.retain_loss[:3]).all())


def test_random_labels_lower_the_forget_score_and_l1_sparsity_shrinks_the_weights(
    tiny_values: LoadedStudy,
) -> None:
    relabelled = original_model(tiny_values)
    RandomLabel(steps=40, batch_size=16, lr=0.1, forget_weight=2.0).unlearn(
        relabelled, tiny_values.inputs.setup, seed=0
    )
    metrics = configuration_run.measure(*tiny_values, relabelled)
    assert metrics["score/unlearned/forget/digit"] < metrics["score/original/forget/digit"] - 0.2

    def l1(model: torch.nn.Module) -> float:
        return float(sum(p.detach().abs().sum() for p in model.parameters()))

    plain, sparse = original_model(tiny_values), original_model(tiny_values)
    L1Sparse(steps=10, batch_size=16, lr=0.05, l1_weight=0.0).unlearn(plain, tiny_values.inputs.setup, seed=0)
    L1Sparse(steps=10, batch_size=16, lr=0.05, l1_weight=1e-2).unlearn(
        sparse, tiny_values.inputs.setup, seed=0
    )
    assert l1(sparse) < l1(plain)


def test_a_random_label_is_never_the_true_one(tiny_values: LoadedStudy) -> None:
    """With the retain term gone, the loss is the random-label loss alone; its labels are
    checked by recomputing them from the same generator state."""
    method = RandomLabel(steps=1, batch_size=64, forget_weight=1.0)
    method.prepare(None, tiny_values.inputs.setup, seed=0)  # type: ignore[arg-type]
    state = method.generator_.get_state()
    labels = tiny_values.inputs.data.labels["digit"][tiny_values.inputs.setup.forget.indices[:64]]
    offset = torch.randint(1, 10, labels.shape, generator=torch.Generator().set_state(state))
    assert bool(((labels + offset) % 10 != labels).all())


def test_npo_lowers_the_forget_score(
    tiny_values: LoadedStudy,
) -> None:
    from tune_unlearn.methods import NegativePreference

    model = original_model(tiny_values)
    NegativePreference(steps=40, batch_size=16, lr=0.1, beta=0.5, forget_weight=2.0).unlearn(
        model, tiny_values.inputs.setup, seed=0
    )
    metrics = configuration_run.measure(*tiny_values, model)
    assert metrics["score/unlearned/forget/digit"] < metrics["score/original/forget/digit"] - 0.2
