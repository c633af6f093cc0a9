"""Gradients of one unlearning step, computed lazily and kept as flat vectors on the device.

Every method needs a different subset: `graddiff` needs the forget gradient and the total retain
gradient; task projection needs one retain gradient per task; instance orthogonalization needs
per-sample gradients (``torch.func.vmap``). :class:`StepGradients` computes each on first use,
reusing one forward pass per batch, so a method pays only for what it asks.

Flat layout: the backbone (shared) parameters first, then the heads; ``num_shared`` marks the
boundary. Projections act on ``vector[:num_shared]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from tune_unlearn.problems import MultiTaskModel, Task


@dataclass(frozen=True)
class Batch:
    """Inputs, labels per task, and which labels count (``mask[i, t]``)."""

    inputs: Tensor
    labels: dict[str, Tensor]
    mask: Tensor


def masked_task_losses(outputs: dict[str, Tensor], batch: Batch, tasks: tuple[Task, ...]) -> Tensor:
    """Per-task mean loss over the samples whose label for that task counts, shape ``[T]``."""
    losses = []
    for column, task in enumerate(tasks):
        weight = batch.mask[:, column].float()
        per_sample = task.per_sample_loss(outputs[task.name], batch.labels[task.name])
        losses.append((per_sample * weight).sum() / weight.sum().clamp(min=1.0))
    return torch.stack(losses)


def flatten(grads: tuple[Tensor | None, ...], params: list[Tensor]) -> Tensor:
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


class ParameterLayout:
    """The model's trainable parameters in flat order: shared (backbone) first, then heads."""

    def __init__(self, model: MultiTaskModel) -> None:
        self.model = model
        self.shared_names = [f"backbone.{n}" for n, _ in model.backbone.named_parameters()]
        self.head_names = [f"heads.{n}" for n, _ in model.heads.named_parameters()]
        named = dict(model.named_parameters())
        self.params: list[Tensor] = [named[n] for n in self.shared_names + self.head_names]
        self.num_shared = sum(named[n].numel() for n in self.shared_names)
        self.numels = [p.numel() for p in self.params]

    @torch.no_grad()
    def add_(self, delta: Tensor) -> None:
        """θ ← θ + delta, for a flat ``delta`` in this layout."""
        views = [d.view_as(p) for d, p in zip(delta.split(self.numels), self.params, strict=True)]
        torch._foreach_add_(self.params, views)


class StepGradients:
    """Lazily computed gradients of one step, on one forget batch and one retain batch."""

    def __init__(
        self,
        layout: ParameterLayout,
        tasks: tuple[Task, ...],
        target: Tensor,
        forget: Batch | None,
        retain: Batch | None,
    ) -> None:
        self.layout, self.tasks, self.target = layout, tasks, target
        self.forget_batch, self.retain_batch = forget, retain

    # -- batch-level -------------------------------------------------------------------------
    @cached_property
    def _forget_loss_graph(self) -> Tensor:
        if self.forget_batch is None:
            raise RuntimeError("this method was given no forget batch")
        outputs = self.layout.model(self.forget_batch.inputs)
        return masked_task_losses(outputs, self.forget_batch, self.tasks)[self.target].sum()

    @cached_property
    def _retain_losses_graph(self) -> Tensor:
        if self.retain_batch is None:
            raise RuntimeError("this method was given no retain batch")
        outputs = self.layout.model(self.retain_batch.inputs)
        return masked_task_losses(outputs, self.retain_batch, self.tasks)

    @property
    def forget_loss(self) -> Tensor:
        return self._forget_loss_graph.detach()

    @property
    def retain_losses(self) -> Tensor:
        return self._retain_losses_graph.detach()

    @cached_property
    def forget(self) -> Tensor:
        """``g_f``: gradient of the summed target-task losses on the forget batch."""
        grads = torch.autograd.grad(self._forget_loss_graph, self.layout.params, allow_unused=True)
        return flatten(grads, self.layout.params)

    @cached_property
    def retain_by_task(self) -> Tensor:
        """``g_r^t`` for every task, stacked as ``[T, P]`` (one retained graph, T backwards)."""
        losses = self._retain_losses_graph
        rows = [
            flatten(
                torch.autograd.grad(loss, self.layout.params, retain_graph=True, allow_unused=True),
                self.layout.params,
            )
            for loss in losses
        ]
        return torch.stack(rows)

    @cached_property
    def retain(self) -> Tensor:
        """``g_r = Σ_t g_r^t``; one backward unless the per-task gradients exist already."""
        if "retain_by_task" in self.__dict__:
            return self.retain_by_task.sum(dim=0)
        grads = torch.autograd.grad(self._retain_losses_graph.sum(), self.layout.params, allow_unused=True)
        return flatten(grads, self.layout.params)

    # -- per-sample (shared parameters only) -------------------------------------------------
    def _per_sample(self, batch: Batch, task_weights: Tensor) -> Tensor:
        """Per-sample gradients on the shared parameters, ``[W, B, P_shared]`` for W weightings.

        Sample i's loss is ``Σ_t w[t]·mask[i, t]·loss_t(i)``; each row of ``task_weights`` is one
        weighting, so all tasks' per-sample gradients come from one nested ``vmap``.
        """
        model = self.layout.model
        named = dict(model.named_parameters())
        shared = {n: named[n].detach() for n in self.layout.shared_names}
        heads = {n: named[n].detach() for n in self.layout.head_names}
        tasks = self.tasks

        def sample_loss(
            shared_params: dict[str, Tensor],
            x: Tensor,
            labels: dict[str, Tensor],
            mask: Tensor,
            weights: Tensor,
        ) -> Tensor:
            outputs = functional_call(model, {**shared_params, **heads}, (x.unsqueeze(0),))
            total = x.new_zeros(())
            for column, task in enumerate(tasks):
                loss = task.per_sample_loss(outputs[task.name], labels[task.name].unsqueeze(0))
                total = total + weights[column] * mask[column] * loss.squeeze(0)
            return total

        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0, 0, None))
        per_weighting = vmap(per_sample, in_dims=(None, None, None, None, 0))
        grads = per_weighting(shared, batch.inputs, batch.labels, batch.mask.float(), task_weights)
        return torch.cat([grads[n].flatten(start_dim=2) for n in self.layout.shared_names], dim=2)

    def per_sample_forget(self) -> Tensor:
        """Per-sample forget gradients on the shared parameters, ``[B_f, P_shared]``."""
        if self.forget_batch is None:
            raise RuntimeError("this method was given no forget batch")
        return self._per_sample(self.forget_batch, self.target.float().unsqueeze(0))[0]

    def per_sample_retain(self) -> Tensor:
        """Per-sample retain gradients (all tasks summed) on the shared parameters."""
        if self.retain_batch is None:
            raise RuntimeError("this method was given no retain batch")
        ones = torch.ones(1, len(self.tasks), device=self.target.device)
        return self._per_sample(self.retain_batch, ones)[0]

    def per_sample_retain_by_task(self) -> Tensor:
        """Per-sample retain gradients of each task, ``[T, B_r, P_shared]``."""
        if self.retain_batch is None:
            raise RuntimeError("this method was given no retain batch")
        eye = torch.eye(len(self.tasks), device=self.target.device)
        return self._per_sample(self.retain_batch, eye)
