"""`instance_orthogonalization`: OrthoGrad-style per-sample orthogonalization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tune_unlearn.methods._gradients import StepGradients
from tune_unlearn.methods._projection import orthonormal_basis, project_out
from tune_unlearn.methods._simple import GradDiff


def orthogonalized_forget(grads: StepGradients, per_sample_forget: Tensor, strength: float) -> Tensor:
    """Each per-sample forget gradient loses λ of its component in the span of the batch's
    per-sample retain gradients; ``u`` on the shared parameters is their mean."""
    basis = orthonormal_basis(grads.per_sample_retain().T)
    return project_out(per_sample_forget, basis, strength).mean(dim=0)


@dataclass(kw_only=True)
class InstanceOrthogonalization(GradDiff):
    """GradDiff whose per-sample forget gradients are orthogonalised against the retain batch."""

    projection_strength: float = 1.0

    name: ClassVar[str] = "instance_orthogonalization"

    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        n = grads.layout.num_shared
        u = grads.forget.clone()  # heads of target tasks take the raw g_f
        u[:n] = orthogonalized_forget(grads, grads.per_sample_forget(), self.projection_strength)
        return u
