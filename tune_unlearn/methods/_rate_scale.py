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

A gradient scale sets how far the *weights* move, not how far each task's *output* moves: on
scenes a retain rate in the middle of the default range moves the depth head's log-depth enough
to fail its δ < 1.25 test on most pixels (benchmarks/RESULTS.md, "Why the default spaces do not
transfer to scenes"). The third scale, ``retain_probe``, is measured on the outputs instead: the
largest retain rate, on a grid of ratios of the retain gradient's scale, at which a few
retain-only descent steps (fine-tuning's step, bounded as every method's) keep every task's
score on a seeded retain sample within :data:`PROBE_TOLERANCE` of the original's. A range
relative to it (``scale: retain_probe``, e.g. ``low: 0.01, high: 1``) stays below the rate at
which the retain step alone starts to cost a task. It is measured only for a study that names
it (the probe runs up to ``len(PROBE_RATIOS) × PROBE_STEPS`` steps), and a model on which no
probed rate keeps every task is refused rather than given a guess.

The fourth, ``ascent_probe``, does for the ascent rate what ``retain_probe`` does for the
retain rate: in units of the forget gradient's scale, the ascent rate at which a run collapses
sits one decade lower on scenes' ResNet than on digits' MLP and the shapes CNN, while the rate
at which forgetting begins lies 0.3–0.6 decades below the collapse on all three
(benchmarks/RESULTS.md, "Where forgetting begins and where the model collapses"). The scale is
the largest ascent rate, on a grid of ratios of the forget gradient's scale tried from the top
down, at which plain gradient ascent over the study's own step budget and batch keeps the
collapse guard's utility at or above its floor at every check (each ``every`` steps and at the
end). A range relative to it put the window at one place on the three built-in problems, and
the default ascent range is relative to it (``ASCENT_RATES`` in ``methods/_base.py``). It costs at most
``len(ASCENT_PROBE_RATIOS) × steps`` ascent steps (the collapsing rates stop at their first
failed check), counted in the request's all-in cost like everything else the scales spend.

The fifth, ``retain_curvature``, is the retain loss's stability limit ``2/λ_max``: plain descent
on a quadratic overshoots and grows along the Hessian's top eigenvector once its rate passes
it, whatever the gradient's norm, and a converged model's small gradient makes the gradient
scale large. On scenes' ResNet (in eval mode, as the methods step) the retain step breaks the
kept depth task there (a drop of 0.06 at 0.3 × the limit, 0.77–0.91 at 3 ×), where the
gradient scale puts the limit at 2.4e-4 × ``s_retain``; the shapes CNN's tasks hold to about
3 × its limit, digits' MLP past 30 × (benchmarks/RESULTS.md, "The retain step's stability
limit"). ``λ_max`` comes from :data:`CURVATURE_ITERATIONS` Hessian-vector products (power
iteration) of the summed retain loss on one seeded retain batch of the study's batch size.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor

from tune_unlearn.methods._base import DivergenceError, UnlearningSetup
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients
from tune_unlearn.methods._simple import Finetune, GradientAscent
from tune_unlearn.problems import MultiTaskModel

Scale = Literal["forget_gradient", "retain_gradient", "retain_probe", "ascent_probe", "retain_curvature"]
SCALES: tuple[Scale, ...] = get_args(Scale)
#: Batches and samples per batch behind the measured norms.
BATCHES, BATCH_SIZE = 4, 64
#: The retain probe: ratios of the retain gradient's scale tried (the default retain range's
#: half-decades), descent steps at each, the largest drop of a task's mean score it allows,
#: and the retain samples scored.
PROBE_RATIOS = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
PROBE_STEPS = 10
PROBE_TOLERANCE = 0.02
PROBE_SAMPLES = 256
#: The ascent probe's ratios of the forget gradient's scale, tried from the largest down: the
#: half-decades of the default ascent range ``[1e-6, 1e-3]``.
ASCENT_PROBE_RATIOS = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
#: Power iterations behind ``retain_curvature``'s ``λ_max``: by 20 the Rayleigh quotient is its
#: value after 100 to four digits on digits, shapes and scenes (benchmarks/retain_sharpness.py).
CURVATURE_ITERATIONS = 20


@dataclass
class ScaleMeasurement:
    """The measured scales and the sample-gradients measuring them cost (the all-in cost
    counts them, in retrain units, as ``rate_scales_cost``)."""

    scales: dict[Scale, float] = field(default_factory=dict)
    sample_gradients: int = 0


@dataclass(frozen=True)
class AscentProbeBudget:
    """What the ascent probe takes from the study: its step budget and batch, its step bound,
    and its collapse guard's test (``utility`` of a model, its ``floor``, checked every
    ``every`` steps)."""

    steps: int
    batch_size: int
    max_step: float
    every: int
    floor: float
    utility: Callable[[MultiTaskModel], float]


@torch.no_grad()
def _flat_norm(layout: ParameterLayout) -> float:
    return float(torch.linalg.vector_norm(torch.cat([p.detach().reshape(-1) for p in layout.params])))


def measure_rate_scales(
    model: MultiTaskModel, setup: UnlearningSetup, seed: int = 0, spent: ScaleMeasurement | None = None
) -> dict[Scale, float]:
    """``{"forget_gradient": ‖θ‖/‖g_f‖, "retain_gradient": ‖θ‖/‖g_r‖}`` at ``model``: ``g_f``
    the target tasks' forget-batch gradient, ``g_r`` the retain-batch gradient over every task
    it labels, both on all trainable parameters, mean norms over :data:`BATCHES` batches. The
    sample-gradients are added to ``spent`` when given."""
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
        if spent is not None:
            spent.sample_gradients += grads.sample_gradients
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


@torch.no_grad()
def _task_scores(model: MultiTaskModel, setup: UnlearningSetup, positions: Tensor) -> Tensor:
    """``[T]``: each task's mean score over the retain samples at ``positions`` that label it."""
    batch = setup.batch(setup.retain, positions)
    outputs = model(batch.inputs)
    columns = [
        task.per_sample_correct(outputs[task.name], batch.labels[task.name]).float() for task in setup.tasks
    ]
    correct, mask = torch.stack(columns, dim=1), batch.mask.float()
    return (correct * mask).sum(dim=0) / mask.sum(dim=0).clamp(min=1.0)


def probe_retain_rate(
    model: MultiTaskModel,
    setup: UnlearningSetup,
    retain_scale: float,
    seed: int = 0,
    spent: ScaleMeasurement | None = None,
) -> float:
    """The ``retain_probe`` scale. The rates ``PROBE_RATIOS × retain_scale`` are tried from the
    smallest up: each runs :data:`PROBE_STEPS` steps of retain-only descent (``finetune`` at that
    rate, on a fresh copy of ``model``) and passes when every task's mean score on a seeded retain
    sample ends no more than :data:`PROBE_TOLERANCE` below ``model``'s. The scale is the last rate
    that passes before the first that fails (a larger rate moves the outputs further). Raises
    ``ValueError`` when the smallest already fails."""
    was_training = model.training
    model.eval()
    device = setup.data.device
    generator = torch.Generator(device=device).manual_seed(seed)
    size = min(PROBE_SAMPLES, len(setup.retain))
    positions = torch.randperm(len(setup.retain), generator=generator, device=device)[:size]
    before = _task_scores(model, setup, positions)
    safe: float | None = None
    for ratio in PROBE_RATIOS:
        probed = copy.deepcopy(model)
        rate = ratio * retain_scale
        log = Finetune(retain_lr=rate, steps=PROBE_STEPS, batch_size=BATCH_SIZE).unlearn(
            probed, setup, seed=seed
        )
        if spent is not None:
            spent.sample_gradients += log.sample_gradients
        drop = before - _task_scores(probed, setup, positions)
        column = int(drop.argmax())
        if float(drop[column]) > PROBE_TOLERANCE:
            break
        safe = rate
    model.train(was_training)
    if safe is None:  # the loop broke at the smallest rate: its worst task is the one to name
        raise ValueError(
            f"no probed retain rate keeps every task within {PROBE_TOLERANCE} of the original: at the "
            f"smallest ({PROBE_RATIOS[0]:g} × the retain gradient's scale, {PROBE_STEPS} steps) "
            f"'{setup.tasks[column].name}' drops by {float(drop[column]):.3f}; give the retain rate's "
            "range in absolute units"
        )
    return safe


def _ascent_survives(
    model: MultiTaskModel, setup: UnlearningSetup, rate: float, budget: AscentProbeBudget, seed: int
) -> tuple[bool, int]:
    """Whether plain ascent at ``rate`` over ``budget.steps`` (one run, seeded ``seed``, as a
    trial runs) keeps the guard's utility at or above its floor at every ``budget.every`` steps
    and after the last, and the sample-gradients it spent. A collapse ends the run at the check
    that finds it; a diverging run counts as collapsed, at its full budget's cost (the steps it
    ran before are not returned)."""
    ascent = GradientAscent(
        ascent_lr=rate, steps=budget.steps, batch_size=budget.batch_size, max_step=budget.max_step
    )

    def collapsed(_step: int, probed: MultiTaskModel) -> bool:
        return budget.utility(probed) < budget.floor

    try:
        log = ascent.unlearn(model, setup, seed=seed, monitor=collapsed, monitor_every=budget.every)
    except DivergenceError:
        return False, budget.steps * budget.batch_size
    finished = log.steps_run == budget.steps and not collapsed(budget.steps, model)
    return finished, log.sample_gradients


def probe_ascent_rate(
    model: MultiTaskModel,
    setup: UnlearningSetup,
    forget_scale: float,
    budget: AscentProbeBudget,
    seed: int = 0,
    spent: ScaleMeasurement | None = None,
) -> float:
    """The ``ascent_probe`` scale: the first rate of ``ASCENT_PROBE_RATIOS × forget_scale``,
    from the largest down, at which plain gradient ascent on a fresh copy of ``model`` survives
    the study's budget under its collapse guard (:func:`_ascent_survives`). Raises
    ``ValueError`` when even the smallest collapses."""
    was_training = model.training
    try:
        for ratio in ASCENT_PROBE_RATIOS:
            rate = ratio * forget_scale
            survived, cost = _ascent_survives(copy.deepcopy(model), setup, rate, budget, seed)
            if spent is not None:
                spent.sample_gradients += cost
            if survived:
                return rate
    finally:
        model.train(was_training)
    raise ValueError(
        f"plain gradient ascent collapses the model (retained utility below {budget.floor:g}) within "
        f"{budget.steps} steps at every probed ascent rate, the smallest {ASCENT_PROBE_RATIOS[-1]:g} × the "
        "forget gradient's scale: give the ascent rate's range in absolute units"
    )


def retain_stability_limit(
    model: MultiTaskModel,
    setup: UnlearningSetup,
    batch_size: int,
    seed: int = 0,
    spent: ScaleMeasurement | None = None,
    iterations: int = CURVATURE_ITERATIONS,
) -> float:
    """The ``retain_curvature`` scale, ``2/λ_max``: ``λ_max`` the largest eigenvalue of the
    Hessian of the summed retain loss (every task it labels, as the methods' retain step) on one
    seeded retain batch of ``batch_size``, at ``model`` in eval mode, by power iteration from a
    seeded start (the Rayleigh quotient after ``iterations`` Hessian-vector products). Each
    product is counted as two backward passes over the batch. Raises ``ValueError`` when the
    loss has no positive curvature (no limit to give)."""
    was_training = model.training
    model.eval()
    layout = ParameterLayout(model)
    device = setup.data.device
    generator = torch.Generator(device=device).manual_seed(seed)
    positions = torch.randint(len(setup.retain), (batch_size,), generator=generator, device=device)
    grads = StepGradients(layout, setup.tasks, setup.target, None, setup.batch(setup.retain, positions))
    gradient = torch.autograd.grad(grads.retain_task_losses.sum(), layout.params, create_graph=True)
    vector = [torch.randn(p.shape, generator=generator, device=device) for p in layout.params]
    eigenvalue = torch.zeros((), device=device)
    for _ in range(iterations):
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in vector]))
        vector = [v / norm for v in vector]
        product = torch.autograd.grad(gradient, layout.params, vector, retain_graph=True)
        eigenvalue = sum((h * v).sum() for h, v in zip(product, vector, strict=True))  # type: ignore[assignment]
        vector = [h.detach() for h in product]
    if spent is not None:
        spent.sample_gradients += batch_size * (1 + 2 * iterations)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    top = float(eigenvalue)
    if not top > 0:
        raise ValueError(
            f"the retain loss has no positive curvature at the original (λ_max {top:g}): no "
            "retain_curvature scale; give the retain rate's range in absolute units"
        )
    return 2.0 / top


def measure_scales(
    model: MultiTaskModel,
    setup: UnlearningSetup,
    names: set[Scale],
    seed: int = 0,
    ascent: AscentProbeBudget | None = None,
    retain_batch: int | None = None,
) -> ScaleMeasurement:
    """The two gradient scales, ``retain_probe`` when ``names`` holds it, ``ascent_probe``
    when it does (each costs steps; ``ascent`` must then be given) and ``retain_curvature``
    (on a batch of ``retain_batch``, the study's; :data:`BATCH_SIZE` when not given), with
    what they cost."""
    measured = ScaleMeasurement()
    scales = measure_rate_scales(model, setup, seed, measured)
    if "retain_curvature" in names:
        batch = retain_batch or BATCH_SIZE
        scales["retain_curvature"] = retain_stability_limit(model, setup, batch, seed, measured)
    if "retain_probe" in names:
        scales["retain_probe"] = probe_retain_rate(model, setup, scales["retain_gradient"], seed, measured)
    if "ascent_probe" in names:
        if ascent is None:
            raise ValueError("the ascent probe needs the study's step budget and collapse guard")
        scales["ascent_probe"] = probe_ascent_rate(
            model, setup, scales["forget_gradient"], ascent, seed, measured
        )
    measured.scales = scales
    return measured
