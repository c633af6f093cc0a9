"""`salun`: random-label unlearning restricted to the weights most salient for the forget set
(Fan, Liu, Zhang, Wei, Wong and Liu, "SalUn: Empowering Machine Unlearning via Gradient-based
Weight Saliency in Both Image Classification and Generation", ICLR 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tune_unlearn.hyperparameters import hyperparameter
from tune_unlearn.methods._base import StepLog, UnlearningSetup
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients, flatten
from tune_unlearn.methods._random_label import RandomLabel
from tune_unlearn.problems import masked_task_losses

#: Forget samples per forward/backward pass of the saliency gradient: bounds its memory.
_SALIENCY_CHUNK = 512


@dataclass(kw_only=True)
class SalUn(RandomLabel):
    """:class:`RandomLabel`'s update ``−η·∇(forget_weight·L_rl + L_r)``, multiplied elementwise
    by the saliency mask ``m = 1[|∇_θ L_f(θ_o)| ≥ γ]``: ``L_f`` is the target tasks' loss on the
    *whole* forget set at the original weights, and ``γ`` keeps the ``saliency_fraction`` of
    weights with the largest gradient magnitude, exactly that share (the paper's default keeps
    half; :meth:`saliency_mask`). Weights outside the mask never move.

    The mask costs one gradient over the forget set when the run starts; it is counted in
    ``compute_cost`` with the first step.
    """

    saliency_fraction: float = hyperparameter(
        0.5,
        gt=0.0,
        le=1.0,
        doc="fraction of weights updated: those most salient for the forget loss",
        search={"low": 0.05, "high": 0.95},
    )

    name: ClassVar[str] = "salun"

    def prepare(self, layout: ParameterLayout, setup: UnlearningSetup, seed: int) -> None:
        super().prepare(layout, setup, seed)
        magnitude = self.forget_gradient(layout, setup).abs()
        self.mask_ = self.saliency_mask(magnitude, self.saliency_fraction)
        self.saliency_rows_ = len(setup.forget)

    @staticmethod
    def saliency_mask(magnitude: Tensor, fraction: float) -> Tensor:
        """1 on exactly ``round(fraction × n)`` weights (at least one) of largest magnitude,
        ties broken by position (the earlier weight first). Not ``magnitude ≥ k-th largest``:
        where many gradients are exactly 0 (heads the forget loss does not reach, dead units)
        that threshold is 0 at any fraction above the non-zero share and keeps every weight."""
        kept = max(1, round(fraction * magnitude.numel()))
        order = torch.sort(magnitude, descending=True, stable=True).indices
        mask = torch.zeros_like(magnitude)
        mask[order[:kept]] = 1.0
        return mask

    @staticmethod
    def forget_gradient(layout: ParameterLayout, setup: UnlearningSetup) -> Tensor:
        """``∇_θ`` of the target tasks' summed per-sample loss over the whole forget set, flat."""
        total = torch.zeros(sum(layout.numels), device=setup.data.device)
        forget = setup.forget
        for start in range(0, len(forget), _SALIENCY_CHUNK):
            positions = torch.arange(
                start, min(start + _SALIENCY_CHUNK, len(forget)), device=setup.data.device
            )
            batch = setup.batch(forget, positions)
            losses = masked_task_losses(layout.model(batch.inputs), batch, setup.tasks)
            # Per-task means × counted samples: the chunks add up to the forget set's sum.
            counts = batch.mask.float().sum(dim=0)
            loss = (losses * counts)[setup.target].sum()
            grads = torch.autograd.grad(loss, layout.params, allow_unused=True)
            total.add_(flatten(grads, layout.params))
        return total

    def step_delta(self, grads: StepGradients, step: int, log: StepLog) -> Tensor:
        if step == 0:  # the saliency gradient, paid once
            log.sample_gradients += self.saliency_rows_
        return super().step_delta(grads, step, log).mul_(self.mask_)
