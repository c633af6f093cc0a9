"""One batched evaluation pass per model, and per-task scores of any labeled set from it.

A model is run once over the union of every sample the metrics need; each set's score is then
an indexed mean of the per-sample results, so adding a set costs no extra forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tune_unlearn.forget import LabeledSet
from tune_unlearn.problems import MultiTaskData, MultiTaskModel, Task


@dataclass(frozen=True)
class PerSample:
    """Per-sample correctness and loss of one model, ``[n, T]``, for the samples in ``rows``."""

    rows: Tensor
    correct: Tensor
    loss: Tensor

    def positions(self, indices: Tensor) -> Tensor:
        lookup = torch.full((int(self.rows.max()) + 1,), -1, dtype=torch.long, device=self.rows.device)
        lookup[self.rows] = torch.arange(len(self.rows), device=self.rows.device)
        positions = lookup[indices.to(self.rows.device)]
        if bool((positions < 0).any()):
            raise KeyError("asked to score samples that were not evaluated")
        return positions

    def scores(self, labeled: LabeledSet, task_names: list[str]) -> dict[str, float]:
        """Mean correctness per task over the samples whose label for that task counts."""
        positions = self.positions(labeled.indices)
        mask = labeled.mask.to(self.correct.device).float()
        totals = (self.correct[positions] * mask).sum(dim=0)
        counts = mask.sum(dim=0)
        values = (totals / counts.clamp(min=1.0)).tolist()
        present = (counts > 0).tolist()
        return {n: v for n, v, p in zip(task_names, values, present, strict=True) if p}


@torch.no_grad()
def evaluate(
    model: MultiTaskModel,
    data: MultiTaskData,
    rows: Tensor,
    tasks: tuple[Task, ...],
    batch_size: int = 256,
) -> PerSample:
    """Run ``model`` over ``rows`` in eval mode; one device-to-host copy at the end."""
    was_training = model.training
    model.eval()
    rows = rows.to(data.device)
    correct, loss = [], []
    for chunk, inputs in data.input_batches(rows, data.evaluation_batch(batch_size)):
        outputs = model(inputs)
        correct.append(
            torch.stack([t.per_sample_correct(outputs[t.name], data.labels[t.name][chunk]) for t in tasks], 1)
        )
        loss.append(
            torch.stack([t.per_sample_loss(outputs[t.name], data.labels[t.name][chunk]) for t in tasks], 1)
        )
    model.train(was_training)
    return PerSample(rows.cpu(), torch.cat(correct).cpu(), torch.cat(loss).cpu())
