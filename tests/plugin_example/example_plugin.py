"""A package outside tune_unlearn that adds a method and a problem through entry points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tune_unlearn.methods import GradDiff, StepGradients
from tune_unlearn.problems import DigitsProblem


@dataclass(kw_only=True)
class DampedGradDiff(GradDiff):
    """GradDiff whose ascent direction is scaled down on the shared backbone."""

    damping: float = 0.5

    name: ClassVar[str] = "damped_graddiff"

    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        u = grads.forget.clone()
        u[: grads.layout.num_shared] *= self.damping
        return u


@dataclass
class SmallDigits(DigitsProblem):
    """Digits with a narrow backbone, as a user's own problem would be."""

    hidden: int = 12
    epochs: int = 6
