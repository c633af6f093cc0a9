"""`random_label`: forget by learning wrong labels on the forget set, keep by descending on the
retain set (Graves, Nagisetty and Ganesh, "Amnesiac Machine Learning", AAAI 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tune_unlearn.methods._base import ForgetRetainLoss, UnlearningSetup
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients


@dataclass(kw_only=True)
class RandomLabel(ForgetRetainLoss):
    """Descent on ``forget_weight · L_rl + L_r``: ``L_rl`` is each target task's loss on the
    forget batch against labels drawn at random from the *wrong* ones (a uniformly random other
    class; for a regression task, another forget sample's target), ``L_r`` the retain loss.

    Deviation: the paper relabels the forget set once and fine-tunes on it together with the
    retain set; here wrong labels are redrawn each step (seeded), which spreads the forget
    samples over every wrong class rather than one.
    """

    name: ClassVar[str] = "random_label"

    def prepare(self, layout: ParameterLayout, setup: UnlearningSetup, seed: int) -> None:
        super().prepare(layout, setup, seed)
        self.generator_ = torch.Generator(device=setup.data.device).manual_seed(seed + 1)

    def forget_term(self, grads: StepGradients, column: int, step: int) -> Tensor:
        assert grads.forget_batch is not None
        task = grads.tasks[column]
        labels = grads.forget_batch.labels[task.name]
        if task.categorical:  # another class per sample, or per pixel
            offset = torch.randint(
                1, task.num_classes, labels.shape, generator=self.generator_, device=labels.device
            )
            wrong = (labels + offset) % task.num_classes
        else:
            wrong = labels[torch.randperm(len(labels), generator=self.generator_, device=labels.device)]
        return task.per_sample_loss(grads.forget_outputs[task.name], wrong)
