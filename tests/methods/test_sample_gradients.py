"""Per-sample gradients without the matrix (a backbone of linear layers) are the ``vmap`` matrix's
Gram matrix, products and combinations, and every other backbone falls back to the matrix."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tune_unlearn.methods import InterferenceAware
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients
from tune_unlearn.methods._sample_gradients import (
    DenseSampleGradients,
    LinearSampleGradients,
    SampleGradients,
)
from tune_unlearn.problems import Batch, MultiTaskModel, Task
from tune_unlearn.trial.study_references import LoadedStudy

from .helpers import original_model, step_gradients


def close(a: Tensor, b: Tensor, tolerance: float = 1e-6) -> bool:
    scale = max(float(a.norm()), float(b.norm()), 1e-12)
    return float((a.double() - b.double()).norm()) <= tolerance * scale


def _agree(implicit: SampleGradients, matrix: Tensor) -> None:
    """Everything the projections use of the gradients equals the same from the matrix."""
    dense = DenseSampleGradients(matrix)
    assert (implicit.count, implicit.dim, implicit.dtype) == (dense.count, dense.dim, dense.dtype)
    generator = torch.Generator().manual_seed(1)
    vectors = torch.randn(3, dense.dim, generator=generator)
    coefficients = torch.randn(matrix.shape[0], 3, dense.count, generator=generator, dtype=torch.float64)
    # float32 per-sample gradients against float64 outer products: agreement to float32 rounding
    assert close(implicit.gram(), dense.gram(), 1e-5)
    assert close(implicit.inner(vectors), dense.inner(vectors), 1e-5)
    assert close(implicit.combine(coefficients), dense.combine(coefficients), 1e-5)
    assert close(implicit.summed().gram(), dense.summed().gram(), 1e-5)


def test_a_linear_backbone_gives_the_vmap_gradients_without_the_matrix(tiny_values: LoadedStudy) -> None:
    grads = step_gradients(tiny_values, original_model(tiny_values))
    assert grads.layout.shared_linear_layers is not None  # digits' MLP: the implicit form applies
    by_task = grads.retain_samples_by_task
    assert isinstance(by_task, LinearSampleGradients)
    _agree(by_task, grads.per_sample_retain_by_task)
    summed = step_gradients(tiny_values, original_model(tiny_values)).retain_samples()
    assert isinstance(summed, LinearSampleGradients)
    _agree(summed, grads.per_sample_retain().unsqueeze(0))


def test_both_forms_count_the_same_sample_gradients(tiny_values: LoadedStudy) -> None:
    implicit = step_gradients(tiny_values, original_model(tiny_values))
    _ = implicit.retain_samples_by_task
    dense = step_gradients(tiny_values, original_model(tiny_values))
    _ = dense.per_sample_retain_by_task
    assert implicit.sample_gradients == dense.sample_gradients > 0


def _layout_of(backbone: nn.Module) -> ParameterLayout:
    return ParameterLayout(MultiTaskModel(backbone, {"y": nn.Linear(4, 3)}))


def test_a_backbone_with_another_parameterised_layer_is_not_treated_as_linear() -> None:
    assert _layout_of(nn.Sequential(nn.Linear(6, 4), nn.Tanh())).shared_linear_layers is not None
    assert _layout_of(nn.Sequential(nn.Linear(6, 4, bias=False))).shared_linear_layers is not None
    assert _layout_of(nn.Sequential(nn.Linear(6, 4), nn.LayerNorm(4))).shared_linear_layers is None
    dropout = nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.1))
    assert _layout_of(dropout.train()).shared_linear_layers is None
    assert _layout_of(dropout.eval()).shared_linear_layers is not None


class _Twice(nn.Module):
    """One linear layer applied twice: the outer-product form does not hold."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.layer(torch.tanh(self.layer(x))))


@pytest.mark.parametrize(
    "backbone",
    [
        nn.Sequential(nn.Linear(4, 5, bias=False), nn.Tanh(), nn.Linear(5, 4), nn.Tanh()),
        _Twice(),
    ],
    ids=["linear without bias", "a layer applied twice"],
)
def test_the_projected_step_is_the_same_with_and_without_the_matrix(backbone: nn.Module) -> None:
    """On a toy problem (a classification and a regression task, labels partly masked):
    interference_aware's forget direction from the implicit form, or from its fallback for a
    layer applied twice, equals the one from the ``vmap`` matrix."""
    torch.manual_seed(0)
    model = MultiTaskModel(backbone, {"a": nn.Linear(4, 3), "b": nn.Linear(4, 1)})
    tasks = (Task("a", "classification", num_classes=3), Task("b", "regression"))
    generator = torch.Generator().manual_seed(2)

    def batch(rows: int) -> Batch:
        labels = {
            "a": torch.randint(3, (rows,), generator=generator),
            "b": torch.randn(rows, generator=generator),
        }
        mask = torch.rand(rows, 2, generator=generator) > 0.3
        return Batch(torch.randn(rows, 4, generator=generator), labels, mask)

    forget, retain = batch(6), batch(9)
    target = torch.tensor([True, False])

    def direction(layout: ParameterLayout) -> Tensor:
        grads = StepGradients(layout, tasks, target, forget, retain)
        return InterferenceAware(projection_strength=0.7, subspace_rank=2).forget_direction(grads, step=0)

    implicit, dense = ParameterLayout(model), ParameterLayout(model)
    dense.shared_linear_layers = None  # the vmap matrix, as on any other backbone
    plain = StepGradients(dense, tasks, target, forget, retain).forget
    assert not close(direction(dense), plain, 1e-3)  # the projection does change the direction
    assert close(direction(implicit), direction(dense), 1e-5)
