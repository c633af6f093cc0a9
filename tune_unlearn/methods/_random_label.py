"""`random_label`: forget by learning wrong labels on the forget set, keep by descending on the
retain set (Graves, Nagisetty and Ganesh, "Amnesiac Machine Learning", AAAI 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tune_unlearn.hyperparameters import hyperparameter
from tune_unlearn.methods._base import LossMethod, UnlearningSetup
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients


@dataclass(kw_only=True)
class RandomLabel(LossMethod):
    """Descent on ``forget_weight · L_rl + L_r``: ``L_rl`` is each target task's loss on the
    forget batch against labels drawn at random from the *wrong* ones (a uniformly random other
    class; for a regression task, another forget sample's target), ``L_r`` the retain loss.

    Deviation: the paper relabels the forget set once and fine-tunes on it together with the
    retain set; here wrong labels are redrawn each step (seeded), which spreads the forget
    samples over every wrong class rather than one.
    """

    lr: float = hyperparameter(0.05, gt=0.0, doc="learning rate of the combined descent")
    forget_weight: float = hyperparameter(1.0, ge=0.0, doc="weight of the random-label loss")

    name: ClassVar[str] = "random_label"
    default_search: ClassVar[dict[str, dict[str, object]]] = {
        "lr": {"type": "float", "low": 1e-3, "high": 0.5, "log": True},
        "forget_weight": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
    }

    def prepare(self, layout: ParameterLayout, setup: UnlearningSetup, seed: int) -> None:
        # Which tasks to relabel, read once per run (a host read), and a generator of its own.
        self.target_columns_ = [int(c) for c in setup.target.nonzero().flatten().tolist()]
        self.generator_ = torch.Generator(device=setup.data.device).manual_seed(seed + 1)

    def loss(self, grads: StepGradients, step: int) -> Tensor:
        batch = grads.forget_batch
        assert batch is not None
        outputs = grads.forget_outputs
        terms = []
        for column in self.target_columns_:
            task = grads.tasks[column]
            labels = batch.labels[task.name]
            if task.kind == "classification":
                offset = torch.randint(
                    1, task.num_classes, labels.shape, generator=self.generator_, device=labels.device
                )
                wrong = (labels + offset) % task.num_classes
            else:
                order = torch.randperm(len(labels), generator=self.generator_, device=labels.device)
                wrong = labels[order]
            weight = batch.mask[:, column].float()
            per_sample = task.per_sample_loss(outputs[task.name], wrong)
            terms.append((per_sample * weight).sum() / weight.sum().clamp(min=1.0))
        return self.forget_weight * torch.stack(terms).sum() + grads.retain_task_losses.sum()
