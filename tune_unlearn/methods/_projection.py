"""Pure projection rules of the interference-aware family (DESIGN §3), on flat tensors."""

from __future__ import annotations

import torch
from torch import Tensor

#: Directions with a singular value below this share of the largest are numerically absent.
_RANK_TOLERANCE = 1e-6
#: Extra random directions for the randomized SVD (Halko et al.): the top ``rank`` come out
#: far more accurately when the sketch is a little wider than ``rank``.
_OVERSAMPLING = 5


def pcgrad(u: Tensor, task_grads: Tensor, order: list[int], strength: float) -> Tensor:
    """PCGrad-style: for each task in ``order``, remove λ times the conflicting component.

    ``u ← u − λ·max(⟨u, g_t⟩, 0)/‖g_t‖²·g_t``; no host sync (the max is a clamp).
    """
    for t in order:
        g = task_grads[t]
        coefficient = (u @ g).clamp(min=0.0) / (g @ g).clamp(min=1e-20)
        u = u - strength * coefficient * g
    return u


def project_out(vectors: Tensor, basis: Tensor, strength: float) -> Tensor:
    """``v − λ·B(Bᵀv)`` for a vector ``[P]`` or rows ``[N, P]``; ``basis`` is ``[P, k]``."""
    if basis.shape[1] == 0:
        return vectors
    projected: Tensor = vectors - strength * (vectors @ basis) @ basis.T
    return projected


def orthonormal_basis(columns: Tensor) -> Tensor:
    """An orthonormal basis of the span of ``columns`` (``[P, m]``), as ``[P, m]``.

    DESIGN §3 names QR; but batches drawn with replacement repeat samples, and on linearly
    dependent columns QR's extra ``Q`` columns are arbitrary directions outside the span. The
    left singular vectors span exactly the same space as QR's ``Q`` when the columns are
    independent, and stay exact when they are not. Directions with a negligible singular
    value (zero gradients of unlabeled samples, repeats) are zeroed rather than dropped: a zero
    column changes no projection ``B(Bᵀv)``, and a fixed shape needs no host sync.
    """
    if columns.shape[1] == 0:
        return columns
    left, singular, _ = torch.linalg.svd(columns, full_matrices=False)
    keep = singular > _RANK_TOLERANCE * singular.amax().clamp(min=1e-30)
    basis: Tensor = left * keep.to(left.dtype)
    return basis


def task_subspace_basis(per_task_samples: Tensor, rank: int) -> Tensor:
    """Task-aware subspace: the union of each task's top-``rank`` right singular vectors.

    ``per_task_samples`` is ``[T, B, P]`` (per-sample retain gradients of each task); the top
    right singular vectors come from randomized SVD (``torch.svd_lowrank``), and the union is
    orthonormalised. Returns ``[P, T·rank]``; directions that are absent are zero columns.
    """
    directions = [per_task_samples.new_zeros(per_task_samples.shape[2], 0)]
    for samples in per_task_samples:
        q = min(rank + _OVERSAMPLING, *samples.shape)
        _, singular, v = torch.svd_lowrank(samples, q=q, niter=2)
        singular, v = singular[:rank], v[:, :rank]
        keep = singular > _RANK_TOLERANCE * singular.amax().clamp(min=1e-30)
        directions.append(v * keep.to(v.dtype))
    return orthonormal_basis(torch.cat(directions, dim=1))
