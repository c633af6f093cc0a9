"""`subspace_projection`: project the forget direction off low-rank task subspaces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tune_unlearn.hyperparameters import hyperparameter
from tune_unlearn.methods._gradients import StepGradients
from tune_unlearn.methods._projected import ProjectedGradDiff
from tune_unlearn.methods._projection import project_out, task_subspace_basis


@dataclass(kw_only=True)
class SubspaceProjection(ProjectedGradDiff):
    """GradDiff whose ascent direction avoids each task's dominant retain-gradient directions.

    Every ``refresh_every`` steps the basis ``B`` is rebuilt from the per-sample retain gradients
    of the current retain batch (top ``subspace_rank`` right singular vectors per task, their
    union orthonormalised); in between, the step reuses it, which amortises the per-sample
    gradients and the decomposition. At the representation, the per-sample gradients are
    ``∂L_r^t/∂z`` (no ``vmap``), and each forget sample's ``∂L_f/∂z`` leaves the subspace
    before it is pulled back to the parameters.
    """

    subspace_rank: int = hyperparameter(
        4,
        ge=1,
        doc="basis vectors per task (at most the retain batch size)",
        search={"low": 1, "high": 16, "log": True},
    )
    refresh_every: int = hyperparameter(10, ge=1, doc="steps between rebuilds of the subspace basis")

    name: ClassVar[str] = "subspace_projection"

    def subspace(self, grads: StepGradients, step: int) -> Tensor:
        if step % self.refresh_every == 0 or not hasattr(self, "basis_"):
            per_task = (
                grads.retain_samples_by_task
                if self.projection_space == "parameters"
                else grads.retain_at_representation_by_task
            )
            self.basis_ = task_subspace_basis(per_task, self.subspace_rank)
        return self.basis_

    def project_at_parameters(self, grads: StepGradients, step: int) -> Tensor:
        shared_forget = grads.forget[: grads.layout.num_shared]
        return project_out(shared_forget, self.subspace(grads, step), self.projection_strength)

    def project_at_representation(self, grads: StepGradients, step: int) -> Tensor:
        basis = self.subspace(grads, step)
        projected = project_out(grads.forget_at_representation, basis, self.projection_strength)
        return grads.shared_forget_pullback(projected)
