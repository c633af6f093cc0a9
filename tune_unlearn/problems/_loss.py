"""The training loss every part shares: a batch with per-task label masks, and the per-task
mean loss over the labels that count. References train with it, methods descend and ascend it,
and the attacks and plants fine-tune with it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tune_unlearn.problems._base import Task


@dataclass(frozen=True)
class Batch:
    """Inputs, labels per task, and which labels count (``mask[i, t]``)."""

    inputs: Tensor
    labels: dict[str, Tensor]
    mask: Tensor
    #: Every row of ``mask`` is the same (known when the batch is drawn, to spare a host sync).
    uniform_mask: bool = False


def masked_task_losses(outputs: dict[str, Tensor], batch: Batch, tasks: tuple[Task, ...]) -> Tensor:
    """Per-task mean loss over the samples whose label for that task counts, shape ``[T]``."""
    losses = []
    for column, task in enumerate(tasks):
        weight = batch.mask[:, column].float()
        per_sample = task.per_sample_loss(outputs[task.name], batch.labels[task.name])
        losses.append((per_sample * weight).sum() / weight.sum().clamp(min=1.0))
    return torch.stack(losses)
