"""Planted faults: models whose verdict is known by construction, to measure how often a suite
catches a fault (``benchmarks/gate_power.py``) and to test that it names one. Fault injection
for tests and benchmarks, beside the plugin contract tests (:mod:`tune_unlearn.testing`), not
part of the validators it measures.

:class:`RetainMemorised` makes a masked collapse out of any damaged model: it answers the
retain *training* inputs from a memory and everything else with the damaged model, so a check
on training samples (``static_retain``) sees nothing while held-out knowledge is gone. That is
how a large network that memorised its training set hides damage; the digits MLP generalises
from its retain set to the neighbours too well for an unlearning run to do it on its own.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from tune_unlearn.problems import Batch, MultiTaskModel, masked_task_losses
from tune_unlearn.problems.forget import LabeledSet
from tune_unlearn.trial.inputs import StudyInputs
from tune_unlearn.validation import ValidationContext


class RetainMemorised(MultiTaskModel):
    """``damaged`` everywhere except on ``inputs``, where it answers what ``memory`` answered.

    Its parameters are ``damaged``'s (attacks fine-tune and quantize those); the memory is
    buffers: the inputs, sorted by a random projection for an exact-match lookup, and the
    memory model's outputs on them."""

    direction: Tensor
    keys: Tensor
    rows: Tensor

    def __init__(self, damaged: MultiTaskModel, memory: MultiTaskModel, inputs: Tensor) -> None:
        super().__init__(damaged.backbone, dict(damaged.heads.items()))
        flat = inputs.flatten(1).float()
        direction = torch.randn(
            flat.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        keys = flat.double() @ direction.to(flat.device)
        order = keys.argsort()
        self.register_buffer("direction", direction)
        self.register_buffer("keys", keys[order])
        self.register_buffer("rows", flat[order])
        with torch.no_grad():
            stored = memory(inputs[order])
        for name, value in stored.items():
            self.register_buffer(f"stored_{name}", value.detach())

    def forward(self, inputs: Tensor) -> dict[str, Tensor]:
        outputs = super().forward(inputs)
        flat = inputs.flatten(1).float()
        at = torch.searchsorted(self.keys, flat.double() @ self.direction).clamp(max=len(self.keys) - 1)
        hit = (self.rows[at] == flat).all(dim=1)
        return {
            name: torch.where(
                hit.view(-1, *([1] * (value.dim() - 1))),
                getattr(self, f"stored_{name}")[at].to(value.dtype),
                value,
            )
            for name, value in outputs.items()
        }


def finetuned(
    inputs: StudyInputs,
    model: MultiTaskModel,
    labeled: LabeledSet,
    steps: int,
    lr: float,
    seed: int,
    ascend: LabeledSet | None = None,
) -> MultiTaskModel:
    """``steps`` Adam steps of descent on batches of ``labeled`` (and ascent on ``ascend``)."""
    model = copy.deepcopy(model)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    tasks, data = inputs.problem.tasks, inputs.data

    def batch(source: LabeledSet) -> Batch:
        pick = torch.randint(len(source), (32,), generator=generator)
        rows = source.indices[pick]
        return Batch(data.inputs[rows], {k: v[rows] for k, v in data.labels.items()}, source.mask[pick])

    for _ in range(steps):
        b = batch(labeled)
        loss = masked_task_losses(model(b.inputs), b, tasks).sum()
        if ascend is not None:
            a = batch(ascend)
            # Bounded ascent (a hinge on the loss) damages the neighbours without diverging.
            loss = loss - masked_task_losses(model(a.inputs), a, tasks).clamp(max=3.0).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return model


def val_neighbours(ctx: ValidationContext, k: int = 5) -> LabeledSet:
    """The ``k`` nearest ``val`` samples of each forget instance (on the original's features),
    every task judged: knowledge next to the forgotten data that no probe reads."""
    val = ctx.inputs.val
    distances = torch.cdist(ctx.features(ctx.inputs.request.indices), ctx.features(val))
    rows = val[distances.topk(k, dim=1, largest=False).indices.flatten().unique()]
    return ctx.all_tasks(rows)
