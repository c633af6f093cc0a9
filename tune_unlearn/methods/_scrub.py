"""`scrub`: a student that moves away from its teacher (the original) on the forget set and stays
with it on the retain set (Kurmanji, Triantafillou, Hayes and Triantafillou, "Towards Unbounded
Machine Unlearning", NeurIPS 2023)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from tune_unlearn.hyperparameters import hyperparameter
from tune_unlearn.methods._base import ForgetRetainLoss, UnlearningSetup
from tune_unlearn.methods._frozen_original import FrozenOriginal
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients
from tune_unlearn.problems import Task


def distillation_divergence(task: Task, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Per-sample ``KL(p_teacher ‖ p_student)`` at ``temperature`` (scaled by ``T²``, as in
    distillation, so gradients keep their size across temperatures); for a regression task the
    KL of unit-variance Gaussians, ``½(μ_s − μ_t)²``. Outputs are ``[batch, channels, …]``: a
    dense task's divergence is the mean over its pixels, as its loss is."""
    if not task.categorical:
        divergence = 0.5 * (student - teacher).pow(2).sum(dim=1)
    else:
        log_student = F.log_softmax(student / temperature, dim=1)
        log_teacher = F.log_softmax(teacher / temperature, dim=1)
        kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="none").sum(dim=1)
        divergence = kl * temperature**2
    return divergence.flatten(start_dim=1).mean(dim=1) if divergence.dim() > 1 else divergence


@dataclass(kw_only=True)
class Scrub(ForgetRetainLoss):
    """Descent on ``α·KL_r + L_r − forget_weight·KL_f``: ``KL_f`` is the divergence of the
    student (the model being unlearned) from its teacher (the original, frozen) on the forget
    batch's target tasks, maximised during the first ``max_steps`` steps only; ``KL_r`` the
    divergence on the retain batch over every task it labels, ``L_r`` the retain task loss.

    Deviation: the paper alternates epochs of max-steps (forget) and min-steps (retain); here
    each step descends both terms on its two batches, and the max term stops after
    ``max_steps`` as the paper's ``msteps`` does, leaving min-steps to repair the retain set.
    """

    alpha: float = hyperparameter(
        1.0,
        ge=0.0,
        doc="α, weight of the retain distillation term",
        search={"low": 0.1, "high": 10.0, "log": True},
    )
    temperature: float = hyperparameter(4.0, gt=0.0, doc="distillation temperature")
    max_steps: int = hyperparameter(25, ge=0, doc="steps that maximise the forget divergence")

    name: ClassVar[str] = "scrub"

    def prepare(self, layout: ParameterLayout, setup: UnlearningSetup, seed: int) -> None:
        super().prepare(layout, setup, seed)
        self.teacher_ = FrozenOriginal(layout.model)

    def forget_term(self, grads: StepGradients, column: int, step: int) -> Tensor:
        batch = grads.forget_batch
        assert batch is not None
        task = grads.tasks[column]
        student = grads.forget_outputs[task.name]
        if step >= self.max_steps:  # min-steps only from here
            return torch.zeros(len(student), device=student.device)
        teacher = self.teacher_.outputs("forget", batch, step)[task.name]
        return -distillation_divergence(task, student, teacher, self.temperature)

    def loss(self, grads: StepGradients, step: int) -> Tensor:
        batch = grads.retain_batch
        assert batch is not None
        teacher = self.teacher_.outputs("retain", batch, step)
        terms = []
        for column, task in enumerate(grads.tasks):
            weight = batch.mask[:, column].float()
            per_sample = distillation_divergence(
                task, grads.retain_outputs[task.name], teacher[task.name], self.temperature
            )
            terms.append((per_sample * weight).sum() / weight.sum().clamp(min=1.0))
        return super().loss(grads, step) + self.alpha * torch.stack(terms).sum()
