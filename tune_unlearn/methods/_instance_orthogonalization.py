"""`instance_orthogonalization`: OrthoGrad-style per-sample orthogonalization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tune_unlearn.methods._gradients import StepGradients
from tune_unlearn.methods._projected import ProjectedGradDiff
from tune_unlearn.methods._projection import project_off_span


def orthogonalized_forget(grads: StepGradients, forget: Tensor, strength: float) -> Tensor:
    """Forget gradients (rows, or their mean) less λ of their component in the span of the
    batch's per-sample retain gradients on the shared parameters.

    The specification projects each per-sample forget gradient and takes the mean; the projection is
    linear, so projecting the mean (``StepGradients.forget_sample_mean``) gives the same ``u``
    without per-sample forget gradients. The basis is used once, so it is never formed
    (``project_off_span``), nor, on a backbone of linear layers, the per-sample gradients
    (``StepGradients.retain_samples``).
    """
    return project_off_span(forget, grads.retain_samples(), strength)


def orthogonalized_at_representation(grads: StepGradients, forget: Tensor, strength: float) -> Tensor:
    """Per-sample forget gradients at the representation ``[B_f, D]``, less λ of their component
    in the span of the retain batch's per-sample ``∂L_r/∂z``."""
    retain = grads.retain_at_representation_by_task.sum(dim=0)  # [B_r, D]
    return project_off_span(forget, retain.T, strength)


@dataclass(kw_only=True)
class InstanceOrthogonalization(ProjectedGradDiff):
    """GradDiff whose per-sample forget gradients are orthogonalised against the retain batch."""

    name: ClassVar[str] = "instance_orthogonalization"

    def project_at_parameters(self, grads: StepGradients, step: int) -> Tensor:
        return orthogonalized_forget(grads, grads.forget_sample_mean(), self.projection_strength)

    def project_at_representation(self, grads: StepGradients, step: int) -> Tensor:
        strength = self.projection_strength
        projected = orthogonalized_at_representation(grads, grads.forget_at_representation, strength)
        return grads.shared_forget_pullback(projected)
