"""Pure projection rules of the interference-aware family, on flat tensors.

The bases are built from Gram matrices rather than from SVDs of the tall gradient matrices:
with ``m`` gradients of ``P`` parameters (``m`` a batch size or a few times the subspace rank,
``P`` tens of thousands), ``MᵀM`` is ``m × m`` and its eigendecomposition is nearly free, while
an SVD of ``[P, m]`` or a randomized SVD per task is not. The Gram matrix is formed in float64,
so squaring the condition number costs no accuracy at the rank tolerance used below.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tune_unlearn.methods._sample_gradients import DenseSampleGradients, SampleGradients

#: Directions with a singular value below this share of the largest are numerically absent.
_RANK_TOLERANCE = 1e-6


def pcgrad_coefficients(u: Tensor, task_grads: Tensor, order: list[int], strength: float) -> Tensor:
    """The coefficients ``c`` of PCGrad-style projection, so that the result is ``u − cᵀG``.

    For each task in ``order``: ``u ← u − λ·max(⟨u, g_t⟩, 0)/‖g_t‖²·g_t``. No host sync (the
    max is a clamp). Returned separately so that the coefficients can be found in one space
    (the shared representation) and applied in another (the shared parameters).
    """
    coefficients = task_grads.new_zeros(task_grads.shape[0])
    for t in order:
        g = task_grads[t]
        c = strength * (u @ g).clamp(min=0.0) / (g @ g).clamp(min=1e-20)
        u = u - c * g
        coefficients[t] = coefficients[t] + c
    return coefficients


def pcgrad(u: Tensor, task_grads: Tensor, order: list[int], strength: float) -> Tensor:
    """PCGrad-style: for each task in ``order``, remove λ times the conflicting component."""
    projected: Tensor = u - pcgrad_coefficients(u, task_grads, order, strength) @ task_grads
    return projected


def project_out(vectors: Tensor, basis: Tensor, strength: float) -> Tensor:
    """``v − λ·B(Bᵀv)`` for a vector ``[P]`` or rows ``[N, P]``; ``basis`` is ``[P, k]``."""
    if basis.shape[1] == 0:
        return vectors
    projected: Tensor = vectors - strength * (vectors @ basis) @ basis.T
    return projected


def _top_eigenvectors(gram: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Eigenvalues (descending) and eigenvectors of symmetric ``[..., m, m]``, the top ``count``;
    eigenvalues under the rank tolerance are returned as zero."""
    values, vectors = torch.linalg.eigh(gram)  # ascending
    values, vectors = values.flip(-1)[..., :count], vectors.flip(-1)[..., :count]
    largest = values[..., :1].clamp(min=1e-300)
    values = torch.where(values > _RANK_TOLERANCE**2 * largest, values, torch.zeros_like(values))
    return values, vectors


def _directions(columns: Tensor, values: Tensor, vectors: Tensor) -> Tensor:
    """``columns · vectors / √values``: unit directions in the column space; zero where absent."""
    scale = torch.where(values > 0, values.clamp(min=1e-300).rsqrt(), torch.zeros_like(values))
    return columns @ (vectors * scale.unsqueeze(-2))


def orthonormal_basis(columns: Tensor) -> Tensor:
    """An orthonormal basis of the span of ``columns`` (``[P, m]``), as ``[P, m]``.

    The specification names QR; but batches drawn with replacement repeat samples, and on linearly
    dependent columns QR's extra ``Q`` columns are arbitrary directions outside the span. The
    eigenvectors of the Gram matrix give the left singular vectors, which span exactly the same
    space as QR's ``Q`` when the columns are independent and stay exact when they are not.
    Directions with a negligible singular value (zero gradients of unlabeled samples, repeats)
    are zero columns rather than dropped: a zero column changes no projection ``B(Bᵀv)``, and a
    fixed shape needs no host sync.
    """
    if columns.shape[1] == 0:
        return columns
    wide = columns.double()
    values, vectors = _top_eigenvectors(wide.T @ wide, columns.shape[1])
    return _directions(wide, values, vectors).to(columns.dtype)


def project_off_span(vectors: Tensor, columns: Tensor | SampleGradients, strength: float) -> Tensor:
    """``v − λ·Πv`` for a vector ``[P]`` or rows ``[N, P]``, with ``Π`` the orthogonal projector
    onto the span of ``columns`` (``[P, m]``, or per-sample gradients held as
    :class:`SampleGradients`): ``project_out(v, orthonormal_basis(M), λ)`` without forming the basis.

    ``Π = M V Λ⁺ Vᵀ Mᵀ`` from the eigendecomposition ``MᵀM = V Λ Vᵀ`` (directions under the rank
    tolerance dropped, as in ``orthonormal_basis``), so ``Πv`` is two products with ``M`` and
    one with an ``m × m`` matrix, where the basis costs a third ``[P, m] × [m, m]`` product. Both
    products stay in float64: the coefficients ``Λ⁺VᵀMᵀv`` grow as ``1/σ`` along weak
    directions, and only the product with ``M`` brings them back to scale.
    """
    samples = columns if isinstance(columns, SampleGradients) else DenseSampleGradients.of_columns(columns)
    if samples.count == 0:
        return vectors
    values, eigenvectors = _top_eigenvectors(samples.gram()[0], samples.count)
    inverse = torch.where(values > 0, values.clamp(min=1e-300).reciprocal(), torch.zeros_like(values))
    rows = vectors.reshape(-1, vectors.shape[-1])
    coefficients = (samples.inner(rows)[0] @ eigenvectors) * inverse @ eigenvectors.T
    correction = samples.combine(coefficients.unsqueeze(0))[0].reshape(vectors.shape)
    projected: Tensor = vectors - strength * correction.to(vectors.dtype)
    return projected


def task_subspace_basis(per_task_samples: Tensor | SampleGradients, rank: int) -> Tensor:
    """Task-aware subspace: the union of each task's top-``rank`` right singular vectors.

    ``per_task_samples`` is ``[T, B, P]`` (per-sample retain gradients of each task, or the same
    held as :class:`SampleGradients` with one weighting per task). The top right singular vectors
    come exactly, for all tasks at once, from the eigenvectors of the ``[T, B, B]`` Gram matrices
    (the specification names randomized SVD, which approximates these; docs/reference.md); the
    union is orthonormalised. The rank is capped at the batch size B: a batch spans at most B
    directions per task. Returns ``[P, T·rank]``; absent directions are zero columns.
    """
    samples = (
        per_task_samples
        if isinstance(per_task_samples, SampleGradients)
        else DenseSampleGradients(per_task_samples)
    )
    count = min(rank, samples.count)
    values, vectors = _top_eigenvectors(samples.gram(), count)
    # [T, count, P]: Sᵀ q / √λ is the right singular vector for the left one q.
    scale = torch.where(values > 0, values.clamp(min=1e-300).rsqrt(), torch.zeros_like(values))
    per_task = samples.combine((vectors * scale.unsqueeze(-2)).transpose(1, 2))
    union = per_task.reshape(-1, samples.dim).T
    return orthonormal_basis(union).to(samples.dtype)
