"""Adam's per-weight step (Kingma and Ba, 2015) for one gradient stream, on the device.

A method whose ``optimizer`` is ``adam`` passes each stream it steps along (the forget
direction, the retain gradient, a loss method's gradient) through its own moments, so that each
rate is a per-weight step size: a rate then means the same on a model whose gradients are 100×
larger, which plain gradient descent's does not.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The moments' decays and the denominator's guard, ``torch.optim.Adam``'s defaults.
BETAS, EPSILON = (0.9, 0.999), 1e-8
#: How a method turns its direction into a step: plain gradient descent, or Adam's.
OPTIMIZERS = ("sgd", "adam")


class AdamMoments:
    """The first and second moment estimates of one gradient stream (no host sync)."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.first = torch.zeros(size, device=device)
        self.second = torch.zeros(size, device=device)

    def direction(self, gradient: Tensor, step: int) -> Tensor:
        """``m̂/(√v̂ + ε)`` after folding in ``gradient`` at ``step`` (0-based): the moments'
        bias-corrected ratio, about ±1 per weight on a steady gradient."""
        self.first.mul_(BETAS[0]).add_(gradient, alpha=1.0 - BETAS[0])
        self.second.mul_(BETAS[1]).addcmul_(gradient, gradient, value=1.0 - BETAS[1])
        corrected_first = self.first / (1.0 - BETAS[0] ** (step + 1))
        corrected_second = self.second / (1.0 - BETAS[1] ** (step + 1))
        return corrected_first / (corrected_second.sqrt() + EPSILON)
