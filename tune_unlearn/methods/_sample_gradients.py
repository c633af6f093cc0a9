"""Per-sample gradients on the shared parameters, held as what the projections use of them.

The instance and subspace projections never need the ``[B, P]`` matrix of per-sample gradients
itself: only its Gram matrix ``GGᵀ``, its products ``Gv`` with a few vectors, and combinations
``cᵀG`` of its rows. :class:`SampleGradients` offers exactly those three, in float64, for ``W``
weightings of the tasks at once (``[W, B, P]``, e.g. one per task).

Two forms:

- :class:`DenseSampleGradients` holds the matrix, as ``torch.func.vmap`` computes it: any model.
- :class:`LinearSampleGradients` never forms it. When every shared parameter belongs to an
  ``nn.Linear`` applied once to a ``[B, d_in]`` input, sample ``b``'s gradient of layer ``l`` is
  the outer product ``δ_b a_bᵀ`` of the gradient at the layer's output and the layer's input
  (with a column of ones for the bias), so ``⟨g_b, g_c⟩ = Σ_l (a_b·a_c)(δ_b·δ_c)``, and products
  and combinations go through ``a`` and ``δ`` too (Goodfellow, "Efficient per-example gradient
  computations", 2015). One forward and one backward pass replace ``vmap``, and the Gram matrix
  costs ``B²(d_in + d_out)`` per layer instead of ``B²·d_in·d_out``. On a small MLP, where a step
  is a few milliseconds of per-operation overhead, this is most of the projected methods' cost.

The two are the same linear algebra: the tests check one against the other on real batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn

from tune_unlearn.problems import Batch, MultiTaskModel, Task


class SampleGradients(ABC):
    """``W`` weightings × ``B`` samples of per-sample gradients of ``dim`` shared parameters."""

    #: Samples per weighting, parameters per gradient, and the dtype the gradients live in.
    count: int
    dim: int
    dtype: torch.dtype

    @abstractmethod
    def gram(self) -> Tensor:
        """``G Gᵀ`` per weighting, ``[W, B, B]``, float64."""

    @abstractmethod
    def inner(self, vectors: Tensor) -> Tensor:
        """``⟨v_n, g_wb⟩`` for rows ``vectors`` ``[N, P]``: ``[W, N, B]``, float64."""

    @abstractmethod
    def combine(self, coefficients: Tensor) -> Tensor:
        """``Σ_b c[w, n, b]·g_wb`` for ``coefficients`` ``[W, N, B]``: ``[W, N, P]``, float64."""

    @abstractmethod
    def summed(self) -> SampleGradients:
        """The per-sample gradients of the weightings' sum (``W = 1``)."""


class DenseSampleGradients(SampleGradients):
    """The per-sample gradient matrix itself, ``[W, B, P]``."""

    def __init__(self, matrix: Tensor) -> None:
        self.matrix = matrix
        self.count, self.dim, self.dtype = matrix.shape[1], matrix.shape[2], matrix.dtype

    @classmethod
    def of_columns(cls, columns: Tensor) -> DenseSampleGradients:
        """One weighting whose gradients are the columns of ``[P, B]``."""
        return cls(columns.T.unsqueeze(0))

    @cached_property
    def _wide(self) -> Tensor:
        return self.matrix.double()

    def gram(self) -> Tensor:
        return self._wide @ self._wide.transpose(1, 2)

    def inner(self, vectors: Tensor) -> Tensor:
        return vectors.double() @ self._wide.transpose(1, 2)

    def combine(self, coefficients: Tensor) -> Tensor:
        return coefficients @ self._wide

    def summed(self) -> SampleGradients:
        return DenseSampleGradients(self.matrix.sum(dim=0, keepdim=True))


@dataclass(frozen=True)
class _LinearLayer:
    """One ``nn.Linear``'s share of the flat shared parameters: its input ``a`` ``[B, k]`` (with a
    column of ones when it has a bias) and its output gradients ``δ`` ``[W, B, d_out]``, float64."""

    offset: int
    inputs: Tensor
    output_grads: Tensor
    has_bias: bool

    @property
    def weight_size(self) -> int:
        return self.output_grads.shape[-1] * (self.inputs.shape[-1] - self.has_bias)

    @property
    def size(self) -> int:
        return self.output_grads.shape[-1] * self.inputs.shape[-1]


class LinearSampleGradients(SampleGradients):
    """Per-sample gradients of a backbone of linear layers, from each layer's ``a`` and ``δ``."""

    def __init__(self, layers: list[_LinearLayer], dim: int, dtype: torch.dtype) -> None:
        self.layers, self.dim, self.dtype = layers, dim, dtype
        self.count = layers[0].inputs.shape[0]

    def gram(self) -> Tensor:
        return sum(
            (layer.inputs @ layer.inputs.T) * (layer.output_grads @ layer.output_grads.transpose(1, 2))
            for layer in self.layers
        )  # type: ignore[return-value]

    def _parameters_of(self, layer: _LinearLayer, vectors: Tensor) -> Tensor:
        """Rows of flat vectors ``[N, P]`` as this layer's ``[N, d_out, k]`` (bias last)."""
        outputs = layer.output_grads.shape[-1]
        weight = vectors[:, layer.offset : layer.offset + layer.weight_size].reshape(
            len(vectors), outputs, -1
        )
        if not layer.has_bias:
            return weight
        bias = vectors[:, layer.offset + layer.weight_size : layer.offset + layer.size]
        return torch.cat([weight, bias.unsqueeze(-1)], dim=-1)

    def inner(self, vectors: Tensor) -> Tensor:
        wide = vectors.double()
        total = wide.new_zeros(self.layers[0].output_grads.shape[0], len(vectors), self.count)
        for layer in self.layers:
            applied = self._parameters_of(layer, wide) @ layer.inputs.T  # [N, d_out, B]
            total += torch.einsum("wbo,nob->wnb", layer.output_grads, applied)
        return total

    def combine(self, coefficients: Tensor) -> Tensor:
        pieces = []
        for layer in self.layers:
            weighted = coefficients.unsqueeze(-1) * layer.output_grads.unsqueeze(1)  # [W, N, B, d_out]
            gradient = weighted.transpose(2, 3) @ layer.inputs  # [W, N, d_out, k]
            if layer.has_bias:
                pieces += [gradient[..., :-1].flatten(start_dim=2), gradient[..., -1]]
            else:
                pieces.append(gradient.flatten(start_dim=2))
        return torch.cat(pieces, dim=-1)

    def summed(self) -> SampleGradients:
        layers = [
            _LinearLayer(
                layer.offset, layer.inputs, layer.output_grads.sum(dim=0, keepdim=True), layer.has_bias
            )
            for layer in self.layers
        ]
        return LinearSampleGradients(layers, self.dim, self.dtype)


def shared_linear_layers(model: MultiTaskModel, shared_names: list[str]) -> list[nn.Linear] | None:
    """The backbone's linear layers in flat-parameter order, when they hold every shared parameter
    (each layer's weight then its bias, as ``named_parameters`` lists them); ``None`` otherwise,
    or when a dropout module is active (its per-sample masks would differ from ``vmap``'s)."""
    modules = dict(model.named_modules())
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.training for m in model.backbone.modules()):
        return None
    layers: list[nn.Linear] = []
    expected: list[str] = []
    for name in shared_names:
        owner = name.rpartition(".")[0]
        module = modules.get(owner)
        if not isinstance(module, nn.Linear):
            return None
        if not layers or layers[-1] is not module:
            layers.append(module)
            expected += [f"{owner}.weight"] + ([f"{owner}.bias"] if module.bias is not None else [])
    return layers if expected == shared_names else None


def linear_sample_gradients(
    model: MultiTaskModel,
    layers: list[nn.Linear],
    batch: Batch,
    tasks: tuple[Task, ...],
    task_weights: Tensor,
) -> LinearSampleGradients | None:
    """Per-sample gradients of ``Σ_t w[t]·mask[b, t]·loss_t(b)`` for each row ``w`` of
    ``task_weights`` ``[W, T]``, from one forward pass and one batched backward pass to the layers'
    outputs. ``None`` when a layer is not applied exactly once to a ``[B, d_in]`` input (then the
    outer-product form does not hold, and the caller falls back to ``vmap``)."""
    captured: dict[int, list[tuple[Tensor, Tensor]]] = {id(layer): [] for layer in layers}

    def keep(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        captured[id(module)].append((inputs[0], output))

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        _, outputs = model.features_and_outputs(batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    calls = [captured[id(layer)] for layer in layers]
    if any(len(c) != 1 or c[0][0].dim() != 2 for c in calls):
        return None
    mask = batch.mask.to(task_weights.dtype)
    summed_losses = torch.stack(
        [
            (task.per_sample_loss(outputs[task.name], batch.labels[task.name]) * mask[:, column]).sum()
            for column, task in enumerate(tasks)
        ]
    )
    layer_outputs = [c[0][1] for c in calls]
    batched = len(task_weights) > 1
    grads = torch.autograd.grad(
        summed_losses,
        layer_outputs,
        task_weights if batched else task_weights[0],
        allow_unused=True,
        is_grads_batched=batched,
    )
    pieces, offset = [], 0
    for layer, call, output_grad in zip(layers, calls, grads, strict=True):
        output = call[0][1]
        if output_grad is None:  # a layer the losses do not reach
            output_grad = output.new_zeros(len(task_weights), *output.shape)
        output_grads = output_grad if batched else output_grad.unsqueeze(0)
        inputs = call[0][0].detach().double()
        if layer.bias is not None:
            inputs = torch.cat([inputs, inputs.new_ones(len(inputs), 1)], dim=1)
        piece = _LinearLayer(offset, inputs, output_grads.double(), layer.bias is not None)
        pieces.append(piece)
        offset += piece.size
    return LinearSampleGradients(pieces, offset, layers[0].weight.dtype)
