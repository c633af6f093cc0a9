"""`l1_sparse`: forget by fine-tuning on the retain set under an ℓ1 penalty on the weights
(Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tune_unlearn.hyperparameters import hyperparameter
from tune_unlearn.methods._base import DESCENT_RATES, LossMethod
from tune_unlearn.methods._gradients import StepGradients


@dataclass(kw_only=True)
class L1Sparse(LossMethod):
    """Descent on ``L_r + γ_s·‖θ‖₁`` over the retain set only, with ``γ_s = l1_weight·(1 −
    s/steps)`` decaying linearly to 0, the schedule the paper found best. The forget set is
    never touched: forgetting comes from the sparsity pressure and catastrophic interference.
    """

    lr: float = hyperparameter(
        0.05,
        gt=0.0,
        doc="learning rate of the retain descent",
        rate=True,
        search=DESCENT_RATES,
    )
    l1_weight: float = hyperparameter(
        1e-4,
        ge=0.0,
        doc="γ, the ℓ1 penalty's initial weight",
        search={"low": 1e-06, "high": 0.01, "log": True},
    )

    name: ClassVar[str] = "l1_sparse"
    uses_forget: ClassVar[bool] = False

    def loss(self, grads: StepGradients, step: int) -> Tensor:
        gamma = self.l1_weight * (1.0 - step / self.steps)
        penalty = sum(parameter.abs().sum() for parameter in grads.layout.params)
        return grads.retain_task_losses.sum() + gamma * penalty
