"""`npo`: negative preference optimization in its classifier form (Zhang, Lin, Bai and Mei,
"Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning", 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from tune_unlearn.hyperparameters import hyperparameter
from tune_unlearn.methods._base import ForgetRetainLoss, UnlearningSetup
from tune_unlearn.methods._frozen_original import FrozenOriginal
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients


@dataclass(kw_only=True)
class NegativePreference(ForgetRetainLoss):
    """Descent on ``forget_weight·L_NPO + L_r`` with, per target task and forget sample,
    ``L_NPO = (2/β)·softplus(β·(ℓ_ref − ℓ_θ))``: the forget loss ``ℓ_θ = −log π_θ(y|x)`` against
    the original's ``ℓ_ref`` (for a regression task, the squared error as a Gaussian negative
    log-likelihood up to a constant). Unlike gradient ascent its gradient fades once the model
    is less likely than the original on the sample, which is what keeps NPO from collapsing.

    Deviation: ``ℓ_ref`` comes from a frozen copy of the original made when the run starts,
    evaluated on each step's forget batch (one extra forward pass, no backward pass).
    """

    beta: float = hyperparameter(
        0.1,
        gt=0.0,
        doc="β, the inverse temperature of the preference loss",
        search={"low": 0.01, "high": 10.0, "log": True},
    )

    name: ClassVar[str] = "npo"

    def prepare(self, layout: ParameterLayout, setup: UnlearningSetup, seed: int) -> None:
        super().prepare(layout, setup, seed)
        self.reference_ = FrozenOriginal(layout.model)

    def forget_term(self, grads: StepGradients, column: int, step: int) -> Tensor:
        batch = grads.forget_batch
        assert batch is not None
        task = grads.tasks[column]
        labels = batch.labels[task.name]
        current = task.per_sample_loss(grads.forget_outputs[task.name], labels)
        original = task.per_sample_loss(self.reference_.outputs("forget", batch, step)[task.name], labels)
        return 2.0 / self.beta * F.softplus(self.beta * (original - current))
