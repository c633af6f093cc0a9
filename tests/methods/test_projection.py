"""Each projection does what its formula in DESIGN §3 says."""

from __future__ import annotations

import pytest
import torch

from tune_unlearn.methods import (
    METHODS,
    GradDiff,
    InstanceOrthogonalization,
    SubspaceProjection,
    TaskProjection,
)
from tune_unlearn.methods._projection import orthonormal_basis, pcgrad, project_off_span, project_out
from tune_unlearn.trial.study_references import LoadedStudy

from .helpers import original_model, step_gradients


def test_pcgrad_removes_exactly_the_conflicting_component_of_one_task() -> None:
    u = torch.tensor([1.0, 1.0, 0.0])
    conflicting = torch.tensor([2.0, 0.0, 0.0])  # ⟨u, g⟩ = 2 > 0
    agreeing = torch.tensor([0.0, -1.0, 1.0])  # ⟨u, g⟩ = −1: left alone
    projected = pcgrad(u, torch.stack([conflicting, agreeing]), order=[0, 1], strength=1.0)
    assert torch.allclose(projected, torch.tensor([0.0, 1.0, 0.0]))
    assert float(projected @ conflicting) == pytest.approx(0.0)
    half = pcgrad(u, torch.stack([conflicting, agreeing]), order=[0, 1], strength=0.5)
    assert torch.allclose(half, torch.tensor([0.5, 1.0, 0.0]))
    untouched = pcgrad(u, agreeing.unsqueeze(0), order=[0], strength=1.0)
    assert torch.equal(untouched, u)


def test_task_projection_applies_pcgrad_to_the_real_shared_gradients(tiny_values: LoadedStudy) -> None:
    model = original_model(tiny_values)
    grads = step_gradients(tiny_values, model)
    method = TaskProjection(projection_strength=1.0)
    method.prepare(grads.layout, tiny_values.inputs.setup, seed=0)
    u = method.forget_direction(grads, step=0)
    n = grads.layout.num_shared
    shared_tasks = grads.retain_by_task[:, :n]
    expected = pcgrad(grads.forget[:n], shared_tasks, method.task_order_, 1.0)
    assert torch.allclose(u[:n], expected)
    assert torch.equal(u[n:], grads.forget[n:])  # heads take the raw g_f
    last = method.task_order_[-1]
    assert float(u[:n] @ shared_tasks[last]) <= 1e-6 * float(shared_tasks[last].norm() * u[:n].norm())


def test_subspace_projection_leaves_u_orthogonal_to_its_basis(tiny_values: LoadedStudy) -> None:
    model = original_model(tiny_values)
    grads = step_gradients(tiny_values, model)
    method = SubspaceProjection(projection_strength=1.0, subspace_rank=3)
    u = method.forget_direction(grads, step=0)
    n = grads.layout.num_shared
    basis = method.basis_
    assert basis.shape[0] == n and basis.shape[1] <= 3 * len(tiny_values.inputs.task_names)
    gram = basis.T @ basis  # orthonormal columns, and zero columns for absent directions
    rank = int(gram.diagonal().round().sum())
    assert rank >= 3
    assert torch.allclose(gram, torch.diag(gram.diagonal().round()), atol=1e-5)
    assert float((basis.T @ u[:n]).norm()) < 1e-5 * float(u[:n].norm() + grads.forget[:n].norm())
    # each task's top singular direction lies in the basis
    per_task = grads.per_sample_retain_by_task
    for samples in per_task:
        top = torch.linalg.svd(samples, full_matrices=False).Vh[0]
        assert float((top - basis @ (basis.T @ top)).norm()) < 1e-3


def test_the_basis_spans_exactly_the_columns_even_with_repeated_samples() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 1, generator=generator), torch.randn(50, 1, generator=generator)
    columns = torch.cat([a, a, b, torch.zeros(50, 1), 2 * b], dim=1)  # rank 2
    basis = orthonormal_basis(columns)
    assert int((basis.norm(dim=0) > 0.5).sum()) == 2
    assert torch.allclose(basis @ (basis.T @ columns), columns, atol=1e-5)  # spans them
    outside = torch.randn(50, generator=generator)
    residual = project_out(outside, basis, 1.0)
    assert float((columns.T @ residual).abs().max()) < 1e-4  # and removes only their span


def test_instance_orthogonalization_leaves_every_projected_sample_orthogonal(
    tiny_values: LoadedStudy,
) -> None:
    model = original_model(tiny_values)
    grads = step_gradients(tiny_values, model)
    retain_basis = orthonormal_basis(grads.per_sample_retain().T)
    projected = project_out(grads.per_sample_forget(), retain_basis, 1.0)
    scale = float(grads.per_sample_forget().norm())
    assert float((projected @ retain_basis).abs().max()) < 1e-5 * scale
    u = InstanceOrthogonalization(projection_strength=1.0).forget_direction(grads, step=0)
    n = grads.layout.num_shared
    assert torch.allclose(u[:n], projected.mean(dim=0), atol=1e-6)


def test_per_sample_gradients_average_to_the_batch_gradient(tiny_values: LoadedStudy) -> None:
    grads = step_gradients(tiny_values, original_model(tiny_values))
    n = grads.layout.num_shared
    assert torch.allclose(grads.per_sample_forget().mean(dim=0), grads.forget[:n], atol=1e-6)
    by_task = grads.per_sample_retain_by_task
    assert torch.allclose(by_task.sum(dim=0), grads.per_sample_retain(), atol=1e-6)


@pytest.mark.parametrize(
    "name", ["task_projection", "subspace_projection", "instance_orthogonalization", "interference_aware"]
)
@pytest.mark.parametrize("space", ["parameters", "representation"])
def test_zero_projection_strength_equals_graddiff(tiny_values: LoadedStudy, name: str, space: str) -> None:
    hyper = {"steps": 5, "batch_size": 8, "ascent_lr": 0.02, "retain_lr": 0.05}
    reference = original_model(tiny_values)
    GradDiff(**hyper).unlearn(reference, tiny_values.inputs.setup, seed=11)
    projected = original_model(tiny_values)
    METHODS.get(name)(**hyper, projection_strength=0.0, projection_space=space).unlearn(
        projected, tiny_values.inputs.setup, seed=11
    )
    for a, b in zip(reference.parameters(), projected.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    # and a non-zero strength does change the update
    other = original_model(tiny_values)
    METHODS.get(name)(**hyper, projection_strength=1.0, projection_space=space).unlearn(
        other, tiny_values.inputs.setup, seed=11
    )
    assert any(
        not torch.allclose(a, b, atol=1e-5)
        for a, b in zip(reference.parameters(), other.parameters(), strict=True)
    )


@pytest.mark.parametrize("strength", [1.0, 0.3])
def test_projecting_off_the_span_equals_projecting_out_its_basis(strength: float) -> None:
    """``project_off_span`` never forms the basis; it must still remove exactly the span, for
    repeated, zero and badly scaled columns (per-sample gradients of fitted samples are tiny)."""
    generator = torch.Generator().manual_seed(1)
    columns = torch.randn(400, 12, generator=generator) * torch.logspace(0, -5, 12)
    columns[:, 3] = columns[:, 1]
    columns[:, 7] = 0.0
    vectors = torch.randn(5, 400, generator=generator)
    expected = project_out(vectors.double(), orthonormal_basis(columns.double()), strength)
    for rows in (vectors, vectors[0]):
        got = project_off_span(rows, columns, strength)
        assert got.dtype == rows.dtype and got.shape == rows.shape
        want = expected if rows.dim() == 2 else expected[0]
        assert float((got.double() - want).norm()) <= 1e-6 * float(want.norm())
    residual = project_off_span(vectors.double(), columns.double(), 1.0)
    assert float((residual @ columns.double()).abs().max()) < 1e-9
    assert project_off_span(vectors, columns[:, :0], strength) is vectors
