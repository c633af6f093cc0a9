"""`task_projection`: PCGrad-style projection of the forget direction, task by task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tune_unlearn.methods._base import UnlearningSetup
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients
from tune_unlearn.methods._projection import pcgrad
from tune_unlearn.methods._simple import GradDiff


@dataclass(kw_only=True)
class TaskProjection(GradDiff):
    """GradDiff whose ascent direction drops, per task, its component that raises that task's
    retain loss (``⟨u, g_r^t⟩ > 0``), in a seeded random task order as PCGrad does."""

    projection_strength: float = 1.0

    name: ClassVar[str] = "task_projection"

    def prepare(self, layout: ParameterLayout, setup: UnlearningSetup, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.task_order_ = torch.randperm(len(setup.tasks), generator=generator).tolist()

    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        n = grads.layout.num_shared
        u = grads.forget.clone()
        u[:n] = pcgrad(u[:n], grads.retain_by_task[:, :n], self.task_order_, self.projection_strength)
        return u
