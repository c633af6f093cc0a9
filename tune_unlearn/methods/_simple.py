"""The baselines: fine-tuning, gradient ascent and GradDiff."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tune_unlearn.hyperparameters import hyperparameter
from tune_unlearn.methods._base import ASCENT_RATES, DESCENT_RATES, UnlearningMethod
from tune_unlearn.methods._gradients import StepGradients


@dataclass(kw_only=True)
class Finetune(UnlearningMethod):
    """Descent on the retain set only: forgetting by catastrophic interference."""

    retain_lr: float = hyperparameter(
        0.05,
        ge=0.0,
        doc="η_r, the retain descent rate",
        rate=True,
        search=DESCENT_RATES,
    )

    name: ClassVar[str] = "finetune"
    uses_forget: ClassVar[bool] = False

    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        raise RuntimeError("finetune takes no forget direction")


@dataclass(kw_only=True)
class GradientAscent(UnlearningMethod):
    """Ascent on the forget loss, with nothing to hold the retained knowledge in place."""

    ascent_lr: float = hyperparameter(
        0.01,
        ge=0.0,
        doc="η_a, the forget ascent rate",
        rate=True,
        search=ASCENT_RATES,
    )

    name: ClassVar[str] = "gradient_ascent"
    uses_retain: ClassVar[bool] = False

    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        return grads.forget


@dataclass(kw_only=True)
class GradDiff(UnlearningMethod):
    """Ascent on the forget loss and descent on the retain loss, unprojected."""

    ascent_lr: float = hyperparameter(
        0.01,
        ge=0.0,
        doc="η_a, the forget ascent rate",
        rate=True,
        search=ASCENT_RATES,
    )
    retain_lr: float = hyperparameter(
        0.05,
        ge=0.0,
        doc="η_r, the retain descent rate",
        rate=True,
        search=DESCENT_RATES,
    )

    name: ClassVar[str] = "graddiff"

    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        return grads.forget
