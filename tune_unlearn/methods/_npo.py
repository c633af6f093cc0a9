"""`npo`: negative preference optimization in its classifier form (Zhang, Lin, Bai and Mei,
"Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning", 2024)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from tune_unlearn.hyperparameters import hyperparameter
from tune_unlearn.methods._base import LossMethod, UnlearningSetup
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients


@dataclass(kw_only=True)
class NegativePreference(LossMethod):
    """Descent on ``forget_weight·L_NPO + L_r`` with, per target task and forget sample,
    ``L_NPO = (2/β)·softplus(β·(ℓ_ref − ℓ_θ))``: the forget loss ``ℓ_θ = −log π_θ(y|x)`` against
    the original's ``ℓ_ref`` (for a regression task, the squared error as a Gaussian negative
    log-likelihood up to a constant). Unlike gradient ascent its gradient fades once the model
    is less likely than the original on the sample, which is what keeps NPO from collapsing.

    Deviation: ``ℓ_ref`` comes from a frozen copy of the original made when the run starts,
    evaluated on each step's forget batch (one extra forward pass, no backward pass).
    """

    lr: float = hyperparameter(0.05, gt=0.0, doc="learning rate of the combined descent")
    beta: float = hyperparameter(0.1, gt=0.0, doc="β, the inverse temperature of the preference loss")
    forget_weight: float = hyperparameter(1.0, ge=0.0, doc="weight of the NPO loss against the retain loss")

    name: ClassVar[str] = "npo"
    default_search: ClassVar[dict[str, dict[str, object]]] = {
        "lr": {"type": "float", "low": 1e-3, "high": 0.5, "log": True},
        "beta": {"type": "float", "low": 0.01, "high": 10.0, "log": True},
        "forget_weight": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
    }

    def prepare(self, layout: ParameterLayout, setup: UnlearningSetup, seed: int) -> None:
        # The model is still the original when the run starts: freeze a copy as the reference.
        self.reference_ = copy.deepcopy(layout.model).eval().requires_grad_(False)
        self.target_columns_ = [int(c) for c in setup.target.nonzero().flatten().tolist()]

    def loss(self, grads: StepGradients, step: int) -> Tensor:
        batch = grads.forget_batch
        assert batch is not None
        outputs = grads.forget_outputs
        with torch.no_grad():
            reference = self.reference_(batch.inputs)
        terms = []
        for column in self.target_columns_:
            task = grads.tasks[column]
            labels = batch.labels[task.name]
            current = task.per_sample_loss(outputs[task.name], labels)
            original = task.per_sample_loss(reference[task.name], labels)
            preference = 2.0 / self.beta * F.softplus(self.beta * (original - current))
            weight = batch.mask[:, column].float()
            terms.append((preference * weight).sum() / weight.sum().clamp(min=1.0))
        return self.forget_weight * torch.stack(terms).sum() + grads.retain_task_losses.sum()
