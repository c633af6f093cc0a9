"""`subspace_projection`: project the forget direction off low-rank task subspaces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tune_unlearn.methods._gradients import StepGradients
from tune_unlearn.methods._projection import project_out, task_subspace_basis
from tune_unlearn.methods._simple import GradDiff


@dataclass(kw_only=True)
class SubspaceProjection(GradDiff):
    """GradDiff whose ascent direction avoids each task's dominant retain-gradient directions.

    Every ``refresh_every`` steps the basis ``B`` is rebuilt from the per-sample retain gradients
    of the current retain batch (top ``subspace_rank`` right singular vectors per task, their
    union orthonormalised); in between, the step reuses it, which amortises the SVD.
    """

    projection_strength: float = 1.0
    subspace_rank: int = 4
    refresh_every: int = 10

    name: ClassVar[str] = "subspace_projection"

    def subspace(self, grads: StepGradients, step: int) -> Tensor:
        if step % self.refresh_every == 0 or not hasattr(self, "basis_"):
            self.basis_ = task_subspace_basis(grads.per_sample_retain_by_task(), self.subspace_rank)
        return self.basis_

    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        n = grads.layout.num_shared
        u = grads.forget.clone()
        u[:n] = project_out(u[:n], self.subspace(grads, step), self.projection_strength)
        return u
