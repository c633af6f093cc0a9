"""Pure projection rules of the interference-aware family (DESIGN §3), on flat tensors."""

from __future__ import annotations

import torch
from torch import Tensor

#: Directions with a singular value below this share of the largest are numerically absent.
_RANK_TOLERANCE = 1e-6


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
    return vectors - strength * (vectors @ basis) @ basis.T


def orthonormal_basis(columns: Tensor) -> Tensor:
    """An orthonormal basis of the span of ``columns`` (``[P, m]``) by QR, ``[P, k]``.

    Zero columns (samples without a label for the task, say) are dropped first, so the basis
    spans exactly what the gradients span and nothing the projection would remove in vain.
    """
    norms = columns.norm(dim=0)
    keep = norms > _RANK_TOLERANCE * norms.max().clamp(min=1e-30)
    q, r = torch.linalg.qr(columns[:, keep])
    # With linearly dependent columns, QR leaves near-zero diagonal entries; their Q columns
    # are arbitrary directions, not part of the span.
    diagonal = r.diagonal().abs()
    return q[:, diagonal > _RANK_TOLERANCE * diagonal.max().clamp(min=1e-30)]


def task_subspace_basis(per_task_samples: Tensor, rank: int) -> Tensor:
    """Task-aware subspace: the union of each task's top-``rank`` right singular vectors.

    ``per_task_samples`` is ``[T, B, P]`` (per-sample retain gradients of each task); the top
    right singular vectors come from randomized SVD (``torch.svd_lowrank``), and the union is
    orthonormalised by QR. Returns ``[P, k]`` with ``k ≤ T·rank``.
    """
    directions = []
    for samples in per_task_samples:
        q = min(rank, *samples.shape)
        _, singular, v = torch.svd_lowrank(samples, q=q, niter=2)
        directions.append(v[:, singular > _RANK_TOLERANCE * singular.max().clamp(min=1e-30)])
    return orthonormal_basis(torch.cat(directions, dim=1))
