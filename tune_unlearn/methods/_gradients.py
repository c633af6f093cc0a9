"""Gradients of one unlearning step, computed lazily and kept as flat vectors on the device.

Every method needs a different subset: `graddiff` needs the forget gradient and the total retain
gradient; task projection needs one retain gradient per task (one batched backward pass);
instance orthogonalization needs per-sample gradients (``torch.func.vmap``); the
representation-level forms need gradients at the backbone's output ``z`` and one pull-back to
the parameters. :class:`StepGradients` computes each on first use, reusing one forward pass per
batch, so a method pays only for what it asks.

Flat layout: the backbone (shared) parameters first, then the heads; ``num_shared`` marks the
boundary. Projections act on ``vector[:num_shared]``.
"""

from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from tune_unlearn.methods._sample_gradients import (
    DenseSampleGradients,
    SampleGradients,
    linear_sample_gradients,
    shared_linear_layers,
)
from tune_unlearn.problems import Batch, MultiTaskModel, Task, masked_task_losses


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
        #: The backbone's linear layers when they hold every shared parameter: per-sample
        #: gradients then come from their inputs and output gradients, without ``vmap``.
        self.shared_linear_layers = shared_linear_layers(model, self.shared_names)

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
        #: Sample-gradients this step paid for: a backward pass over a batch of b samples counts
        #: b, K batched vector–Jacobian products K·b, W weightings of per-sample gradients W·B.
        #: A plain count (no timing): the deterministic compute cost the sampler learns from.
        self.sample_gradients = 0

    @staticmethod
    def _rows(batch: Batch | None) -> int:
        return 0 if batch is None else len(batch.inputs)

    # -- batch-level -------------------------------------------------------------------------
    @cached_property
    def _forget_forward(self) -> tuple[Tensor, dict[str, Tensor]]:
        if self.forget_batch is None:
            raise RuntimeError("this method was given no forget batch")
        return self.layout.model.features_and_outputs(self.forget_batch.inputs)

    @cached_property
    def _retain_forward(self) -> tuple[Tensor, dict[str, Tensor]]:
        if self.retain_batch is None:
            raise RuntimeError("this method was given no retain batch")
        return self.layout.model.features_and_outputs(self.retain_batch.inputs)

    @cached_property
    def _forget_graph(self) -> tuple[Tensor, Tensor]:
        representation, outputs = self._forget_forward
        assert self.forget_batch is not None
        loss = masked_task_losses(outputs, self.forget_batch, self.tasks)[self.target].sum()
        return representation, loss

    @cached_property
    def _retain_graph(self) -> tuple[Tensor, Tensor]:
        representation, outputs = self._retain_forward
        assert self.retain_batch is not None
        return representation, masked_task_losses(outputs, self.retain_batch, self.tasks)

    @property
    def retain_task_losses(self) -> Tensor:
        """Per-task mean losses on the retain batch, ``[T]``, attached to the graph (for a loss
        a method builds; :attr:`retain_losses` is the detached copy)."""
        return self._retain_graph[1]

    @property
    def forget_outputs(self) -> dict[str, Tensor]:
        """The model's outputs per task on the forget batch (one forward pass, shared with every
        gradient of the forget batch this step)."""
        return self._forget_forward[1]

    @property
    def retain_outputs(self) -> dict[str, Tensor]:
        """The model's outputs per task on the retain batch."""
        return self._retain_forward[1]

    def gradient_of(self, loss: Tensor, rows: int) -> Tensor:
        """Flat ∇ of a scalar ``loss`` built from this step's outputs, over every trainable
        parameter; ``rows`` samples' worth of sample-gradients (for ``compute_cost``)."""
        return self._grad(loss, self.layout.params, rows)

    @property
    def forget_loss(self) -> Tensor:
        return self._forget_graph[1].detach()

    @property
    def retain_losses(self) -> Tensor:
        return self._retain_graph[1].detach()

    def _grad(
        self, output: Tensor, inputs: list[Tensor], rows: int, cotangents: Tensor | None = None
    ) -> Tensor:
        """Flat ∇ of ``output`` w.r.t. ``inputs``; with ``cotangents`` ``[K, *output.shape]``,
        K vector–Jacobian products in one batched backward pass, ``[K, ...]``. The graph is
        kept: other gradients of the same step may still need it. ``rows``: the batch size of
        the graph, for the cost count."""
        batched = cotangents is not None
        self.sample_gradients += rows * (len(cotangents) if cotangents is not None else 1)
        grads = torch.autograd.grad(
            output,
            inputs,
            grad_outputs=cotangents,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=batched,
        )
        if not batched:
            return flatten(grads, inputs)
        assert cotangents is not None
        return torch.cat(
            [
                (g if g is not None else p.new_zeros(len(cotangents), *p.shape)).flatten(start_dim=1)
                for g, p in zip(grads, inputs, strict=True)
            ],
            dim=1,
        )

    @cached_property
    def forget(self) -> Tensor:
        """``g_f``: gradient of the summed target-task losses on the forget batch."""
        return self._grad(self._forget_graph[1], self.layout.params, self._rows(self.forget_batch))

    @cached_property
    def retain_by_task(self) -> Tensor:
        """``g_r^t`` for every task, stacked as ``[T, P]``: T vector–Jacobian products of the
        per-task losses, batched into one backward pass (``is_grads_batched``)."""
        losses = self._retain_graph[1]
        eye = torch.eye(len(losses), device=losses.device)
        return self._grad(losses, self.layout.params, self._rows(self.retain_batch), eye)

    @cached_property
    def retain(self) -> Tensor:
        """``g_r = Σ_t g_r^t``; one backward unless the per-task gradients exist already."""
        if "retain_by_task" in self.__dict__:
            return self.retain_by_task.sum(dim=0)
        return self._grad(self._retain_graph[1].sum(), self.layout.params, self._rows(self.retain_batch))

    def forget_sample_mean(self) -> Tensor:
        """The mean of the per-sample forget gradients on the shared parameters, ``[P_shared]``.

        When every forget sample counts on the same tasks (always so for a forget request),
        each target task's mean loss divides by the batch size, so this *is* ``g_f`` on the
        shared parameters: the instance-level projections, linear in each per-sample gradient,
        can then act on ``g_f`` once instead of on B per-sample gradients.
        """
        batch = self.forget_batch
        if batch is None:
            raise RuntimeError("this method was given no forget batch")
        if batch.uniform_mask:
            return self.forget[: self.layout.num_shared]
        return self.per_sample_forget().mean(dim=0)

    # -- representation-level (the approximate projections) ----------------------------------
    @cached_property
    def forget_at_representation(self) -> Tensor:
        """``∂L_f/∂z`` per forget sample, ``[B_f, D]``: the forget gradient at the shared
        representation, a heads-only backward pass."""
        representation, loss = self._forget_graph
        self.sample_gradients += len(representation)
        (gradient,) = torch.autograd.grad(loss, representation, retain_graph=True)
        return gradient.flatten(start_dim=1)

    @cached_property
    def retain_at_representation_by_task(self) -> Tensor:
        """``∂L_r^t/∂z`` per task and retain sample, ``[T, B_r, D]`` (heads-only, batched)."""
        representation, losses = self._retain_graph
        eye = torch.eye(len(losses), device=losses.device)
        self.sample_gradients += len(losses) * len(representation)
        (gradient,) = torch.autograd.grad(
            losses, representation, grad_outputs=eye, retain_graph=True, is_grads_batched=True
        )
        return gradient.flatten(start_dim=2)

    def shared_forget_pullback(self, cotangent: Tensor) -> Tensor:
        """``∇_shared ⟨z_f, cotangent⟩``: a representation-space direction ``[B_f, D]`` on the
        forget batch, pulled back to the shared parameters (one backbone backward)."""
        representation, _ = self._forget_graph
        shared = self.layout.params[: len(self.layout.shared_names)]
        cotangents = cotangent.reshape(1, *representation.shape)
        return self._grad(representation, shared, len(representation), cotangents)[0]

    def shared_retain_combination(self, weights: Tensor) -> Tensor:
        """``∇_shared Σ_t w_t L_r^t`` on the shared parameters, one backward pass."""
        _, losses = self._retain_graph
        shared = self.layout.params[: len(self.layout.shared_names)]
        return self._grad(losses, shared, self._rows(self.retain_batch), weights.unsqueeze(0))[0]

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

        self.sample_gradients += len(task_weights) * len(batch.inputs)
        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0, 0, None))
        arguments = (shared, batch.inputs, batch.labels, batch.mask.float())
        if len(task_weights) == 1:  # one weighting: no outer vmap level to pay for
            grads = {n: g.unsqueeze(0) for n, g in per_sample(*arguments, task_weights[0]).items()}
        else:
            grads = vmap(per_sample, in_dims=(None, None, None, None, 0))(*arguments, task_weights)
        return torch.cat([grads[n].flatten(start_dim=2) for n in self.layout.shared_names], dim=2)

    def _sample_gradients(self, batch: Batch, task_weights: Tensor) -> SampleGradients:
        """:meth:`_per_sample` as the projections use it: without the matrix when the backbone is
        linear layers (:class:`LinearSampleGradients`), else the ``vmap`` matrix. The count of
        sample-gradients is the same either way: the same gradients, computed another way."""
        layers = self.layout.shared_linear_layers
        if layers is not None:
            implicit = linear_sample_gradients(self.layout.model, layers, batch, self.tasks, task_weights)
            if implicit is not None:
                self.sample_gradients += len(task_weights) * len(batch.inputs)
                return implicit
        return DenseSampleGradients(self._per_sample(batch, task_weights))

    def _retain_weightings(self, by_task: bool) -> tuple[Batch, Tensor]:
        """The retain batch, and one task weighting per task (``by_task``) or one for their sum."""
        if self.retain_batch is None:
            raise RuntimeError("this method was given no retain batch")
        count, device = len(self.tasks), self.target.device
        weights = torch.eye(count, device=device) if by_task else torch.ones(1, count, device=device)
        return self.retain_batch, weights

    def retain_samples(self) -> SampleGradients:
        """Per-sample retain gradients (all tasks summed) on the shared parameters, as the
        projections use them (:mod:`tune_unlearn.methods._sample_gradients`)."""
        if "retain_samples_by_task" in self.__dict__:  # a subspace refresh step paid already
            return self.retain_samples_by_task.summed()
        return self._sample_gradients(*self._retain_weightings(by_task=False))

    @cached_property
    def retain_samples_by_task(self) -> SampleGradients:
        """Per-sample retain gradients of each task (one weighting per task)."""
        return self._sample_gradients(*self._retain_weightings(by_task=True))

    def per_sample_forget(self) -> Tensor:
        """Per-sample forget gradients on the shared parameters, ``[B_f, P_shared]``."""
        if self.forget_batch is None:
            raise RuntimeError("this method was given no forget batch")
        return self._per_sample(self.forget_batch, self.target.float().unsqueeze(0))[0]

    def per_sample_retain(self) -> Tensor:
        """Per-sample retain gradients (all tasks summed) on the shared parameters, the matrix."""
        if "per_sample_retain_by_task" in self.__dict__:  # a subspace refresh step paid already
            return self.per_sample_retain_by_task.sum(dim=0)
        return self._per_sample(*self._retain_weightings(by_task=False))[0]

    @cached_property
    def per_sample_retain_by_task(self) -> Tensor:
        """Per-sample retain gradients of each task, ``[T, B_r, P_shared]``, the matrix."""
        return self._per_sample(*self._retain_weightings(by_task=True))
