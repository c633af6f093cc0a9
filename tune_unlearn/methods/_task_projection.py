"""`task_projection`: PCGrad-style projection of the forget direction, task by task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tune_unlearn.methods._base import UnlearningSetup
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients
from tune_unlearn.methods._projected import ProjectedGradDiff
from tune_unlearn.methods._projection import pcgrad, pcgrad_coefficients


@dataclass(kw_only=True)
class TaskProjection(ProjectedGradDiff):
    """GradDiff whose ascent direction drops, per task, its component that raises that task's
    retain loss (``⟨u, g_r^t⟩ > 0``), in a seeded random task order drawn once per run.
    Deviation: PCGrad reshuffles the order every step (docs/reference.md); one order per run
    makes a configuration's trajectory depend on its seed only.

    At the representation, the coefficients come from the batch-summed gradients ``∂L/∂z`` of
    the forget loss and of each task's retain loss, and are applied to the parameter
    gradients: ``u = g_f − Σ_t c_t·∇_shared L_r^t``, one weighted backward pass.
    """

    name: ClassVar[str] = "task_projection"

    def prepare(self, layout: ParameterLayout, setup: UnlearningSetup, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.task_order_ = torch.randperm(len(setup.tasks), generator=generator).tolist()

    def project_at_parameters(self, grads: StepGradients, step: int) -> Tensor:
        n = grads.layout.num_shared
        return pcgrad(
            grads.forget[:n], grads.retain_by_task[:, :n], self.task_order_, self.projection_strength
        )

    def project_at_representation(self, grads: StepGradients, step: int) -> Tensor:
        forget = grads.forget_at_representation.sum(dim=0)
        by_task = grads.retain_at_representation_by_task.sum(dim=1)
        coefficients = pcgrad_coefficients(forget, by_task, self.task_order_, self.projection_strength)
        shared_forget: Tensor = grads.forget[: grads.layout.num_shared]
        return shared_forget - grads.shared_retain_combination(coefficients)
