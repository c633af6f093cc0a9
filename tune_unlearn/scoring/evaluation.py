"""One batched evaluation pass per model, and per-task scores of any labeled set from it.

A model is run once over the union of every sample the metrics need; each set's score is then
an indexed mean of the per-sample results, so adding a set costs no extra forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from tune_unlearn.problems import MultiTaskData, MultiTaskModel, Task
from tune_unlearn.problems.forget import LabeledSet


@dataclass(frozen=True)
class PerSample:
    """Per-sample correctness and loss of one model, ``[n, T]``, for the samples in ``rows``."""

    rows: Tensor
    correct: Tensor
    loss: Tensor
    #: Per-sample figures reported beside the scores (a dense task's error measures,
    #: :meth:`Task.reported_scores`), ``{(task, figure): [n]}``; never judged on.
    reported: dict[tuple[str, str], Tensor] = field(default_factory=dict)

    def positions(self, indices: Tensor) -> Tensor:
        lookup = torch.full((int(self.rows.max()) + 1,), -1, dtype=torch.long, device=self.rows.device)
        lookup[self.rows] = torch.arange(len(self.rows), device=self.rows.device)
        positions = lookup[indices.to(self.rows.device)]
        if bool((positions < 0).any()):
            raise KeyError("asked to score samples that were not evaluated")
        return positions

    def reported_means(self, labeled: LabeledSet, task_names: list[str]) -> dict[tuple[str, str], float]:
        """Each reported figure's mean over the samples whose label for its task counts."""
        if not self.reported:
            return {}
        positions = self.positions(labeled.indices)
        mask = labeled.mask.to(self.correct.device)
        out = {}
        for (task, figure), values in self.reported.items():
            counts = mask[:, task_names.index(task)]
            if bool(counts.any()):
                out[(task, figure)] = float(values[positions][counts].mean())
        return out

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
    reported: dict[tuple[str, str], list[Tensor]] = {}
    for chunk, inputs in data.input_batches(rows, data.evaluation_batch(batch_size)):
        outputs = model(inputs)
        for t in tasks:
            for figure, values in t.reported_scores(outputs[t.name], data.labels[t.name][chunk]).items():
                reported.setdefault((t.name, figure), []).append(values)
        correct.append(
            torch.stack([t.per_sample_correct(outputs[t.name], data.labels[t.name][chunk]) for t in tasks], 1)
        )
        loss.append(
            torch.stack([t.per_sample_loss(outputs[t.name], data.labels[t.name][chunk]) for t in tasks], 1)
        )
    model.train(was_training)
    return PerSample(
        rows.cpu(),
        torch.cat(correct).cpu(),
        torch.cat(loss).cpu(),
        {key: torch.cat(parts).cpu() for key, parts in reported.items()},
    )
