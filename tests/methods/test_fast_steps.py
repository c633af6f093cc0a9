"""The optimised steps give the updates of the reference formulas of DESIGN §3.

The references here are the formulas written the slow, obvious way: one backward pass per
task, an SVD of the tall per-sample gradient matrix, each per-sample forget gradient projected
before the mean, and an exact SVD per task for the subspace.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tune_unlearn.methods import (
    METHODS,
    InstanceOrthogonalization,
    InterferenceAware,
    SubspaceProjection,
    TaskProjection,
)
from tune_unlearn.methods._gradients import flatten
from tune_unlearn.methods._projection import (
    orthonormal_basis,
    pcgrad_coefficients,
    project_out,
    task_subspace_basis,
)
from tune_unlearn.trial.study_references import LoadedStudy

from .helpers import original_model, step_gradients


def svd_basis(columns: Tensor) -> Tensor:
    """Reference: left singular vectors of the columns with a non-negligible singular value."""
    left, singular, _ = torch.linalg.svd(columns.double(), full_matrices=False)
    return left[:, singular > 1e-6 * singular.max()]


def projector(basis: Tensor) -> Tensor:
    basis = basis.double()
    return basis @ basis.T


def close(a: Tensor, b: Tensor, tolerance: float = 1e-4) -> bool:
    """Equal up to ``tolerance`` relative to the larger norm (float32 gradients)."""
    scale = max(float(a.norm()), float(b.norm()), 1e-12)
    return float((a.double() - b.double()).norm()) <= tolerance * scale


def test_gram_basis_spans_the_same_space_as_the_svd_on_real_per_sample_gradients(
    tiny_values: LoadedStudy,
) -> None:
    grads = step_gradients(tiny_values, original_model(tiny_values))
    columns = grads.per_sample_retain().T
    assert close(projector(orthonormal_basis(columns)), projector(svd_basis(columns)))


def test_task_subspace_is_each_tasks_exact_top_singular_directions() -> None:
    generator = torch.Generator().manual_seed(0)
    # Three tasks of 20 samples in 300 dimensions with well separated singular values.
    scales = torch.tensor([10.0, 6.0, 3.0, 1.0, 0.5, 0.1])
    samples = torch.stack(
        [
            torch.randn(20, 6, generator=generator)
            @ torch.diag(scales)
            @ torch.randn(6, 300, generator=generator)
            for _ in range(3)
        ]
    )
    rank = 2
    expected = svd_basis(
        torch.cat([torch.linalg.svd(s.double(), full_matrices=False).Vh[:rank].T for s in samples], dim=1)
    )
    assert close(projector(task_subspace_basis(samples, rank)), projector(expected))


def test_batched_per_task_gradients_equal_one_backward_per_task(tiny_values: LoadedStudy) -> None:
    grads = step_gradients(tiny_values, original_model(tiny_values))
    losses = grads._retain_graph[1]
    params = grads.layout.params
    looped = torch.stack(
        [
            flatten(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params)
            for loss in losses
        ]
    )
    assert close(grads.retain_by_task, looped, 1e-5)
    assert close(grads.retain, looped.sum(dim=0), 1e-5)


def _reference_instance(grads_forget_rows: Tensor, retain_rows: Tensor, strength: float) -> Tensor:
    basis = svd_basis(retain_rows.T).to(grads_forget_rows.dtype)
    return project_out(grads_forget_rows, basis, strength).mean(dim=0)


@pytest.mark.parametrize("strength", [1.0, 0.4])
def test_instance_orthogonalization_equals_projecting_each_per_sample_gradient(
    tiny_values: LoadedStudy, strength: float
) -> None:
    grads = step_gradients(tiny_values, original_model(tiny_values))
    n = grads.layout.num_shared
    u = InstanceOrthogonalization(projection_strength=strength).forget_direction(grads, step=0)
    expected = _reference_instance(grads.per_sample_forget(), grads.per_sample_retain(), strength)
    assert close(u[:n], expected)
    assert torch.equal(u[n:], grads.forget[n:])


def test_interference_aware_equals_the_per_sample_reference(tiny_values: LoadedStudy) -> None:
    grads = step_gradients(tiny_values, original_model(tiny_values))
    n = grads.layout.num_shared
    method = InterferenceAware(projection_strength=0.8, subspace_rank=3)
    u = method.forget_direction(grads, step=0)
    per_sample = project_out(grads.per_sample_forget(), method.basis_, 0.8)
    expected = _reference_instance(per_sample, grads.per_sample_retain(), 0.8)
    assert close(u[:n], expected)


def test_a_refresh_step_reuses_the_per_task_per_sample_gradients(tiny_values: LoadedStudy) -> None:
    grads = step_gradients(tiny_values, original_model(tiny_values))
    fresh = step_gradients(tiny_values, original_model(tiny_values)).per_sample_retain()
    _ = grads.per_sample_retain_by_task
    assert close(grads.per_sample_retain(), fresh, 1e-5)


# -- the representation-level approximate form ---------------------------------------------------


def test_pulling_back_the_unprojected_representation_gradient_gives_g_f(tiny_values: LoadedStudy) -> None:
    grads = step_gradients(tiny_values, original_model(tiny_values))
    n = grads.layout.num_shared
    assert close(grads.shared_forget_pullback(grads.forget_at_representation), grads.forget[:n], 1e-5)


def test_representation_task_projection_applies_its_coefficients_to_the_parameter_gradients(
    tiny_values: LoadedStudy,
) -> None:
    # seed 6: a batch whose forget gradient conflicts with three tasks' at the representation
    grads = step_gradients(tiny_values, original_model(tiny_values), seed=6)
    n = grads.layout.num_shared
    method = TaskProjection(projection_space="representation")
    method.prepare(grads.layout, tiny_values.inputs.setup, seed=3)
    u = method.forget_direction(grads, step=0)
    at_z = grads.retain_at_representation_by_task.sum(dim=1)
    c = pcgrad_coefficients(grads.forget_at_representation.sum(dim=0), at_z, method.task_order_, 1.0)
    assert float(c.abs().sum()) > 0  # the batch does conflict, so the check is not vacuous
    assert close(u[:n], grads.forget[:n] - c @ grads.retain_by_task[:, :n], 1e-5)
    # the representation-space forget direction no longer conflicts with the last task in order
    last = method.task_order_[-1]
    projected = grads.forget_at_representation.sum(dim=0) - c @ at_z
    assert float(projected @ at_z[last]) <= 1e-5 * float(projected.norm() * at_z[last].norm())


def test_representation_subspace_projection_removes_the_subspace_before_the_pullback(
    tiny_values: LoadedStudy,
) -> None:
    grads = step_gradients(tiny_values, original_model(tiny_values))
    method = SubspaceProjection(projection_space="representation", subspace_rank=2)
    u = method.forget_direction(grads, step=0)
    basis = method.basis_
    assert basis.shape[0] == grads.forget_at_representation.shape[1]  # D, not P
    projected = project_out(grads.forget_at_representation, basis, 1.0)
    assert float((projected @ basis).abs().max()) < 1e-5 * float(grads.forget_at_representation.norm())
    assert close(u[: grads.layout.num_shared], grads.shared_forget_pullback(projected), 1e-5)


@pytest.mark.parametrize("name", ["subspace_projection", "instance_orthogonalization", "interference_aware"])
def test_representation_form_changes_the_direction_and_is_cheaper_in_kind(
    tiny_values: LoadedStudy, name: str
) -> None:
    grads = step_gradients(tiny_values, original_model(tiny_values))
    u = METHODS.get(name)(projection_space="representation").forget_direction(grads, step=0)
    n = grads.layout.num_shared
    assert not close(u[:n], grads.forget[:n], 1e-3)
    # no per-sample parameter gradient was needed
    assert "per_sample_retain_by_task" not in grads.__dict__


def test_an_unknown_projection_space_is_refused() -> None:
    with pytest.raises(ValueError, match="projection_space: expected one of parameters, representation"):
        TaskProjection(projection_space="features")  # type: ignore[arg-type]
