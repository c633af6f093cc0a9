"""`interference_aware`: task-aware subspace projection, then instance orthogonalization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tune_unlearn.methods._gradients import StepGradients
from tune_unlearn.methods._instance_orthogonalization import (
    orthogonalized_at_representation,
    orthogonalized_forget,
)
from tune_unlearn.methods._projection import project_out
from tune_unlearn.methods._subspace_projection import SubspaceProjection


@dataclass(kw_only=True)
class InterferenceAware(SubspaceProjection):
    """The full method: per-sample forget gradients leave the task subspaces first (coarse,
    task level), then the span of the batch's per-sample retain gradients (fine, instance
    level). Both projections are linear, so they act on the mean forget gradient once."""

    name: ClassVar[str] = "interference_aware"

    def project_at_parameters(self, grads: StepGradients, step: int) -> Tensor:
        strength = self.projection_strength
        coarse = project_out(grads.forget_sample_mean(), self.subspace(grads, step), strength)
        return orthogonalized_forget(grads, coarse, strength)

    def project_at_representation(self, grads: StepGradients, step: int) -> Tensor:
        strength = self.projection_strength
        coarse = project_out(grads.forget_at_representation, self.subspace(grads, step), strength)
        return grads.shared_forget_pullback(orthogonalized_at_representation(grads, coarse, strength))
