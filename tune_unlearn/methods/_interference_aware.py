"""`interference_aware`: task-aware subspace projection, then instance orthogonalization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tune_unlearn.methods._gradients import StepGradients
from tune_unlearn.methods._instance_orthogonalization import orthogonalized_forget
from tune_unlearn.methods._projection import project_out
from tune_unlearn.methods._subspace_projection import SubspaceProjection


@dataclass(kw_only=True)
class InterferenceAware(SubspaceProjection):
    """The full method: per-sample forget gradients leave the task subspaces first (coarse,
    task level), then the span of the batch's per-sample retain gradients (fine, instance
    level)."""

    name: ClassVar[str] = "interference_aware"

    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        n = grads.layout.num_shared
        strength = self.projection_strength
        per_sample = project_out(grads.per_sample_forget(), self.subspace(grads, step), strength)
        u = grads.forget.clone()
        u[:n] = orthogonalized_forget(grads, per_sample, strength)
        return u
