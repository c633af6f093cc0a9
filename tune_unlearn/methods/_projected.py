"""The common shape of the projection methods: GradDiff with a projected forget direction.

Each projection method says how it projects on the shared parameters (the exact form of
docs/reference.md) and, optionally, how it projects at the shared representation ``z`` (the cheaper
approximate form, as MGDA-UB takes task gradients at the representation rather than at the
parameters). ``projection_space`` picks one. The representation form needs no per-sample
parameter gradients and no backward pass per task: representation gradients come from the
heads alone, and the projected direction reaches the parameters through one backbone
backward pass.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor

from tune_unlearn.hyperparameters import hyperparameter
from tune_unlearn.methods._gradients import StepGradients
from tune_unlearn.methods._simple import GradDiff

ProjectionSpace = Literal["parameters", "representation"]
PROJECTION_SPACES: tuple[ProjectionSpace, ...] = ("parameters", "representation")


@dataclass(kw_only=True)
class ProjectedGradDiff(GradDiff):
    """GradDiff whose ascent direction on the shared parameters is projected; the heads of the
    target tasks take the raw ``g_f``."""

    projection_strength: float = hyperparameter(
        1.0,
        ge=0.0,
        le=1.0,
        doc="how much of the conflicting component is removed (1: all)",
        search={"low": 0.0, "high": 1.0},
    )
    projection_space: ProjectionSpace = hyperparameter(
        "parameters", choices=PROJECTION_SPACES, doc="exact (parameters) or approximate (representation)"
    )

    name: ClassVar[str] = ""

    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        n = grads.layout.num_shared
        u = grads.forget.clone()
        if self.projection_space == "parameters":
            u[:n] = self.project_at_parameters(grads, step)
        else:
            u[:n] = self.project_at_representation(grads, step)
        return u

    @abstractmethod
    def project_at_parameters(self, grads: StepGradients, step: int) -> Tensor:
        """``u`` on the shared parameters, ``[P_shared]``: the exact form."""

    @abstractmethod
    def project_at_representation(self, grads: StepGradients, step: int) -> Tensor:
        """``u`` on the shared parameters from projections at the representation."""
