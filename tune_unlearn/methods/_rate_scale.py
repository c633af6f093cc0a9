"""The scale that makes a learning rate mean the same on every model.

A plain step ``η·g`` moves the weights by ``η·‖g‖``; as a share of the weights, by
``η·‖g‖/‖θ‖``. The scale of a gradient is ``s = ‖θ‖ / ‖g‖`` at the original: the rate whose
first step moves the weights by their own norm. A search range written *relative* to it
(``scale: forget_gradient`` or ``scale: retain_gradient`` in a study's ``search``) is a range of
first-step trust ratios, and the rates tried are those ratios times ``s``: on digits' MLP
(``‖g_f‖`` 0.16) and on the shapes CNN (``‖g_f‖`` 20) the same relative range takes the same
share of the weights per step, where one absolute range moves one model 1,000× more than the
other (benchmarks/RESULTS.md, "Why ascent diverges").

The scale is measured once per study, before the first trial, on the original in eval mode
(as unlearning runs), as the mean gradient norm over a few seeded forget and retain batches;
every worker of the study uses the stored value, so all suggest from one space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

import torch

from tune_unlearn.methods._base import UnlearningSetup
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients
from tune_unlearn.problems import MultiTaskModel

Scale = Literal["forget_gradient", "retain_gradient"]
SCALES: tuple[Scale, ...] = get_args(Scale)
#: Batches and samples per batch behind the measured norms.
BATCHES, BATCH_SIZE = 4, 64


@torch.no_grad()
def _flat_norm(layout: ParameterLayout) -> float:
    return float(torch.linalg.vector_norm(torch.cat([p.detach().reshape(-1) for p in layout.params])))


def measure_rate_scales(model: MultiTaskModel, setup: UnlearningSetup, seed: int = 0) -> dict[Scale, float]:
    """``{"forget_gradient": ‖θ‖/‖g_f‖, "retain_gradient": ‖θ‖/‖g_r‖}`` at ``model``: ``g_f``
    the target tasks' forget-batch gradient, ``g_r`` the retain-batch gradient over every task
    it labels, both on all trainable parameters, mean norms over :data:`BATCHES` batches."""
    was_training = model.training
    model.eval()
    layout = ParameterLayout(model)
    device = setup.data.device
    generator = torch.Generator(device=device).manual_seed(seed)
    forget_norms, retain_norms = [], []
    for _ in range(BATCHES):
        batches = [
            setup.batch(
                labeled, torch.randint(len(labeled), (BATCH_SIZE,), generator=generator, device=device)
            )
            for labeled in (setup.forget, setup.retain)
        ]
        grads = StepGradients(layout, setup.tasks, setup.target, *batches)
        forget_norms.append(torch.linalg.vector_norm(grads.forget))
        retain_norms.append(torch.linalg.vector_norm(grads.retain))
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    theta = _flat_norm(layout)
    forget, retain = float(torch.stack(forget_norms).mean()), float(torch.stack(retain_norms).mean())
    if not (forget > 0 and retain > 0):
        raise ValueError(
            f"the original's gradients vanish (forget {forget:g}, retain {retain:g}): no rate scale"
        )
    return {"forget_gradient": theta / forget, "retain_gradient": theta / retain}


def describe_scales(scales: Mapping[str, float]) -> str:
    """``forget_gradient 128.8, retain_gradient 59.65``."""
    return ", ".join(f"{name} {value:.4g}" for name, value in scales.items())
