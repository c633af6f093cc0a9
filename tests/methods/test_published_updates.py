"""Each method's first step equals its published update, computed here by hand:
``θ₁ = θ₀ − η·∇L(θ₀)`` with ``L`` written out from the paper's formula (plain softmax and
cross-entropy, no library helpers of the method), on the batches the step loop draws. For the
unprojected direction methods ``L`` is ``−η_a·L_f + η_r·L_r`` with ``η = 1``; the projected
ones are checked against their per-sample references in ``test_fast_steps.py`` and
``test_projection.py``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from tune_unlearn.methods import (
    Finetune,
    GradDiff,
    GradientAscent,
    L1Sparse,
    NegativePreference,
    RandomLabel,
    SalUn,
    Scrub,
    ShrinkPerturb,
    UnlearningMethod,
)
from tune_unlearn.methods._base import StepLog
from tune_unlearn.methods._gradients import ParameterLayout
from tune_unlearn.methods._shrink_perturb import SCHEDULES, scheduled_rate, shrink_and_perturb
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.trial.study_references import LoadedStudy

from .helpers import original_model

SEED, BATCH = 3, 8


@dataclass
class Rows:
    """One batch as the reference sees it: inputs, labels per task, which labels count."""

    inputs: Tensor
    labels: dict[str, Tensor]
    mask: Tensor


def first_batches(experiment: LoadedStudy, method: UnlearningMethod) -> tuple[Rows | None, Rows | None]:
    """The step loop's first forget and retain batches: positions from a generator seeded with
    the run's seed, forget drawn before retain."""
    setup, data = experiment.inputs.setup, experiment.inputs.data
    generator = torch.Generator().manual_seed(SEED)
    out: list[Rows | None] = []
    for uses, labeled in ((method.uses_forget, setup.forget), (method.uses_retain, setup.retain)):
        if not uses:
            out.append(None)
            continue
        positions = torch.randint(len(labeled), (method.batch_size,), generator=generator)
        rows = labeled.indices[positions]
        out.append(
            Rows(data.inputs[rows], {k: v[rows] for k, v in data.labels.items()}, labeled.mask[positions])
        )
    return out[0], out[1]


def log_softmax(logits: Tensor) -> Tensor:
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def nll(logits: Tensor, labels: Tensor) -> Tensor:
    """−log p_y per sample."""
    return -log_softmax(logits).gather(1, labels.long()[:, None]).squeeze(1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    weight = mask.float()
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def retain_loss(model: MultiTaskModel, experiment: LoadedStudy, retain: Rows) -> Tensor:
    outputs = model(retain.inputs)
    return sum(
        (
            masked_mean(nll(outputs[t.name], retain.labels[t.name]), retain.mask[:, c])
            for c, t in enumerate(experiment.inputs.problem.tasks)
        ),
        torch.zeros(()),
    )


def target_columns(experiment: LoadedStudy) -> list[int]:
    return [int(c) for c in experiment.inputs.setup.target.nonzero().flatten()]


def forget_loss(model: MultiTaskModel, experiment: LoadedStudy, forget: Rows) -> Tensor:
    """The target tasks' cross-entropy on the forget batch (masked mean per task, summed)."""
    outputs = model(forget.inputs)
    return sum(
        (
            masked_mean(
                nll(
                    outputs[experiment.inputs.problem.tasks[c].name],
                    forget.labels[experiment.inputs.problem.tasks[c].name],
                ),
                forget.mask[:, c],
            )
            for c in target_columns(experiment)
        ),
        torch.zeros(()),
    )


def graddiff_loss(
    method: GradDiff, experiment: LoadedStudy, model: MultiTaskModel, forget: Rows, retain: Rows
) -> Tensor:
    """GradDiff: ascent on the forget loss, descent on the retain loss, at their own rates."""
    return -method.ascent_lr * forget_loss(model, experiment, forget) + method.retain_lr * retain_loss(
        model, experiment, retain
    )


def gradient_ascent_loss(
    method: GradientAscent, experiment: LoadedStudy, model: MultiTaskModel, forget: Rows, retain: None
) -> Tensor:
    assert retain is None
    return -method.ascent_lr * forget_loss(model, experiment, forget)


def finetune_loss(
    method: Finetune, experiment: LoadedStudy, model: MultiTaskModel, forget: None, retain: Rows
) -> Tensor:
    assert forget is None
    return method.retain_lr * retain_loss(model, experiment, retain)


def random_label_loss(
    method: RandomLabel, experiment: LoadedStudy, model: MultiTaskModel, forget: Rows, retain: Rows
) -> Tensor:
    """Amnesiac ML: cross-entropy toward a uniformly drawn wrong class, plus the retain loss.
    The wrong labels come from a generator seeded with seed + 1, one draw per target task."""
    generator = torch.Generator().manual_seed(SEED + 1)
    outputs = model(forget.inputs)
    total = torch.zeros(())
    for column in target_columns(experiment):
        task = experiment.inputs.problem.tasks[column]
        true = forget.labels[task.name].long()
        wrong = (
            true + torch.randint(1, task.num_classes, true.shape, generator=generator)
        ) % task.num_classes
        assert bool((wrong != true).all())
        total = total + masked_mean(nll(outputs[task.name], wrong), forget.mask[:, column])
    return method.forget_weight * total + retain_loss(model, experiment, retain)


def npo_loss(
    method: NegativePreference, experiment: LoadedStudy, model: MultiTaskModel, forget: Rows, retain: Rows
) -> Tensor:
    """NPO: (2/β)·log(1 + (π_θ/π_ref)^β) per forget sample, i.e. (2/β)·log(1 + exp(β(ℓ_ref − ℓ_θ))),
    plus the retain loss."""
    reference = original_model(experiment)
    outputs, ref_outputs = model(forget.inputs), reference(forget.inputs)
    total = torch.zeros(())
    for column in target_columns(experiment):
        task = experiment.inputs.problem.tasks[column]
        labels = forget.labels[task.name]
        ratio = (
            torch.exp(-nll(outputs[task.name], labels))
            / torch.exp(-nll(ref_outputs[task.name], labels)).detach()
        )
        per_sample = 2.0 / method.beta * torch.log1p(ratio**method.beta)
        total = total + masked_mean(per_sample, forget.mask[:, column])
    return method.forget_weight * total + retain_loss(model, experiment, retain)


def l1_sparse_loss(
    method: L1Sparse, experiment: LoadedStudy, model: MultiTaskModel, forget: Rows | None, retain: Rows
) -> Tensor:
    """ℓ1-sparse: the retain loss plus γ·‖θ‖₁, γ at its first-step value (the schedule starts at
    the full weight)."""
    assert forget is None  # the method never reads the forget set
    norm = sum((p.abs().sum() for p in model.parameters()), torch.zeros(()))
    return retain_loss(model, experiment, retain) + method.l1_weight * norm


def kl_teacher_student(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(p_teacher ‖ p_student) per sample at a temperature, times T² (Hinton's scaling)."""
    p_teacher = log_softmax(teacher / temperature).exp()
    return (p_teacher * (log_softmax(teacher / temperature) - log_softmax(student / temperature))).sum(
        -1
    ) * temperature**2


def scrub_loss(
    method: Scrub, experiment: LoadedStudy, model: MultiTaskModel, forget: Rows, retain: Rows
) -> Tensor:
    """SCRUB during its max-steps: −forget_weight·KL_f (target tasks) + α·KL_r (all tasks) + L_r."""
    teacher = original_model(experiment)
    with torch.no_grad():
        teacher_forget, teacher_retain = teacher(forget.inputs), teacher(retain.inputs)
    student_forget, student_retain = model(forget.inputs), model(retain.inputs)
    kl_forget = sum(
        (
            masked_mean(
                kl_teacher_student(student_forget[t.name], teacher_forget[t.name], method.temperature),
                forget.mask[:, c],
            )
            for c, t in enumerate(experiment.inputs.problem.tasks)
            if c in target_columns(experiment)
        ),
        torch.zeros(()),
    )
    kl_retain = sum(
        (
            masked_mean(
                kl_teacher_student(student_retain[t.name], teacher_retain[t.name], method.temperature),
                retain.mask[:, c],
            )
            for c, t in enumerate(experiment.inputs.problem.tasks)
        ),
        torch.zeros(()),
    )
    return (
        -method.forget_weight * kl_forget + method.alpha * kl_retain + retain_loss(model, experiment, retain)
    )


def salun_mask(experiment: LoadedStudy) -> list[Tensor]:
    """SalUn's mask: 1 on exactly the top fraction of |∇θ Σ_forget ℓ(θ_o)|, ties to the earlier
    weight, from a Python sort of (magnitude, position) rather than the method's tensor sort."""
    model = original_model(experiment)
    forget = experiment.inputs.setup.forget
    rows = forget.indices
    outputs = model(experiment.inputs.data.inputs[rows])
    loss = sum(
        (
            (
                nll(
                    outputs[experiment.inputs.problem.tasks[c].name],
                    experiment.inputs.data.labels[experiment.inputs.problem.tasks[c].name][rows],
                )
                * forget.mask[:, c].float()
            ).sum()
            for c in target_columns(experiment)
        ),
        torch.zeros(()),
    )
    params = list(model.parameters())
    found = torch.autograd.grad(loss, params, allow_unused=True)  # other heads: no gradient
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(found, params, strict=True)]
    flat = torch.cat([g.reshape(-1) for g in grads]).abs().tolist()
    top = sorted(range(len(flat)), key=lambda i: (-flat[i], i))[: round(0.3 * len(flat))]
    keep = torch.zeros(len(flat))
    keep[top] = 1.0
    return [
        part.reshape(g.shape) for part, g in zip(keep.split([g.numel() for g in grads]), grads, strict=True)
    ]


CASES: dict[str, tuple[UnlearningMethod, Callable[..., Tensor]]] = {
    "graddiff": (GradDiff(steps=1, batch_size=BATCH, ascent_lr=0.05, retain_lr=0.2), graddiff_loss),
    "gradient_ascent": (GradientAscent(steps=1, batch_size=BATCH, ascent_lr=0.05), gradient_ascent_loss),
    "finetune": (Finetune(steps=1, batch_size=BATCH, retain_lr=0.2), finetune_loss),
    "random_label": (RandomLabel(steps=1, batch_size=BATCH, lr=0.2, forget_weight=1.5), random_label_loss),
    "npo": (NegativePreference(steps=1, batch_size=BATCH, lr=0.2, forget_weight=1.5, beta=0.7), npo_loss),
    "l1_sparse": (L1Sparse(steps=1, batch_size=BATCH, lr=0.2, l1_weight=1e-3), l1_sparse_loss),
    "scrub": (
        Scrub(steps=1, batch_size=BATCH, lr=0.2, forget_weight=1.5, alpha=0.5, temperature=2.0),
        scrub_loss,
    ),
    "salun": (
        SalUn(steps=1, batch_size=BATCH, lr=0.2, forget_weight=1.5, saliency_fraction=0.3),
        random_label_loss,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_first_step_is_the_published_update(tiny_values: LoadedStudy, name: str) -> None:
    method, reference_loss = CASES[name]
    # The published step is the one the step bound leaves alone (docs/reference.md).
    method = dataclasses.replace(method, max_step=1e9)
    unlearned = original_model(tiny_values)
    method.unlearn(unlearned, tiny_values.inputs.setup, seed=SEED)

    by_hand = original_model(tiny_values)
    by_hand.eval()
    forget, retain = first_batches(tiny_values, method)
    loss = reference_loss(method, tiny_values, by_hand, forget, retain)
    params = list(by_hand.parameters())
    found = torch.autograd.grad(loss, params, allow_unused=True)  # heads the loss never reads
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(found, params, strict=True)]
    mask = salun_mask(tiny_values) if name == "salun" else [torch.ones_like(g) for g in grads]
    lr = getattr(method, "lr", 1.0)  # direction methods: the rates are in the loss
    with torch.no_grad():
        for parameter, gradient, keep in zip(by_hand.parameters(), grads, mask, strict=True):
            parameter.sub_(lr * gradient * keep)
    moved = False
    for expected, actual, before in zip(
        by_hand.parameters(),
        unlearned.parameters(),
        original_model(tiny_values).parameters(),
        strict=True,
    ):
        assert torch.allclose(actual, expected, atol=1e-6, rtol=1e-5), name
        moved |= not torch.equal(actual, before)
    assert moved
    if name == "salun":  # weights outside the mask never moved, and some were outside it
        frozen = [~keep.bool() for keep in mask]
        assert any(bool(f.any()) for f in frozen)
        for actual, before, f in zip(
            unlearned.parameters(), original_model(tiny_values).parameters(), frozen, strict=True
        ):
            assert torch.equal(actual[f], before[f])


def test_salun_keeps_exactly_the_fraction_where_most_gradients_are_zero() -> None:
    # 70% exact zeros: "magnitude ≥ the k-th largest" is 0 at any fraction above 0.3 and kept
    # every weight; the published rule keeps exactly round(fraction × n), ties by position.
    magnitude = torch.zeros(1000)
    magnitude[::10] = torch.arange(1, 101, dtype=torch.float32)  # 100 distinct non-zeros
    magnitude[1::10] = 0.5  # 100 tied at 0.5
    magnitude[2::10] = 0.25
    for fraction, expected in ((0.05, 50), (0.25, 250), (0.8, 800), (0.95, 950)):
        mask = SalUn.saliency_mask(magnitude, fraction)
        assert int(mask.sum()) == expected, fraction
    mask = SalUn.saliency_mask(magnitude, 0.15)  # all 100 non-zeros and the first 50 ties
    assert bool(mask[::10].all()) and int(mask[1::10].sum()) == 50
    assert bool(mask[1:500:10].all()) and not bool(mask[501::10].any())
    assert torch.equal(mask, SalUn.saliency_mask(magnitude, 0.15))


def test_salun_mask_on_a_model_with_unreached_heads(tiny_values: LoadedStudy) -> None:
    method = SalUn(steps=1, batch_size=BATCH, lr=0.2, saliency_fraction=0.95)
    model = original_model(tiny_values)
    layout = ParameterLayout(model)
    method.prepare(layout, tiny_values.inputs.setup, seed=SEED)
    magnitude = method.forget_gradient(layout, tiny_values.inputs.setup).abs()
    assert float((magnitude == 0).float().mean()) > 0.05  # the other heads: exact zeros
    assert int(method.mask_.sum()) == round(0.95 * magnitude.numel())


def test_shrink_perturb_shrinks_then_takes_adams_first_step_on_the_retain_loss(
    tiny_values: LoadedStudy,
) -> None:
    """Without noise the weights are halved; Adam's first step is then ``−η·g/(|g| + ε)`` per
    weight (the bias-corrected moments are ``g`` and ``g²``), ``g`` the retain loss's gradient
    at the halved weights, on the batch the step loop draws."""
    method = ShrinkPerturb(steps=1, batch_size=BATCH, shrink=0.5, noise=0.0, retain_lr=0.01)
    unlearned = original_model(tiny_values)
    method.unlearn(unlearned, tiny_values.inputs.setup, seed=SEED)

    by_hand = original_model(tiny_values)
    by_hand.eval()
    with torch.no_grad():
        for parameter in by_hand.parameters():
            parameter.mul_(0.5)
    forget, retain = first_batches(tiny_values, method)
    assert forget is None and retain is not None
    params = list(by_hand.parameters())
    found = torch.autograd.grad(retain_loss(by_hand, tiny_values, retain), params, allow_unused=True)
    with torch.no_grad():
        for parameter, gradient in zip(params, found, strict=True):
            if gradient is not None:
                parameter.sub_(0.01 * gradient / (gradient.abs() + 1e-8))
    for expected, actual in zip(by_hand.parameters(), unlearned.parameters(), strict=True):
        assert torch.allclose(actual, expected, atol=1e-6, rtol=1e-5)


def test_shrink_and_perturb_adds_noise_in_units_of_each_tensors_rms(tiny_values: LoadedStudy) -> None:
    """``θ ← λθ + σ·rms(θ)·ε``: the noise drawn, tensor by tensor in order, from the generator."""
    model, reference = original_model(tiny_values), original_model(tiny_values)
    shrink_and_perturb(ParameterLayout(model), 0.7, 0.2, torch.Generator().manual_seed(11))
    draws = torch.Generator().manual_seed(11)
    for after, before in zip(model.parameters(), reference.parameters(), strict=True):
        rms = before.detach().pow(2).mean().sqrt()
        expected = 0.7 * before.detach() + 0.2 * rms * torch.randn(before.shape, generator=draws)
        assert torch.allclose(after.detach(), expected, atol=1e-6)


def test_shrink_perturb_cosine_schedule_scales_adams_step_by_the_hand_worked_factor() -> None:
    """Cosine: ``η·½(1 + cos(π·s/S))``: 1, 0.8536, 0.5, 0.1464 of η over four steps; the Adam
    direction itself is the constant schedule's, step by step on the same gradients."""
    assert scheduled_rate(0.01, "constant", 3, 4) == 0.01
    factors = [scheduled_rate(1.0, "cosine", s, 4) for s in range(4)]
    assert factors == pytest.approx([1.0, 0.853553, 0.5, 0.146447], abs=1e-6)
    gradients = [torch.tensor([0.3, -2.0, 1e-3]), torch.tensor([-0.1, -1.0, 4.0])] * 2
    deltas = {}
    for schedule in SCHEDULES:
        method = ShrinkPerturb(steps=4, batch_size=BATCH, retain_lr=0.01, schedule=schedule)
        log = StepLog.empty(4, 1, torch.device("cpu"))
        deltas[schedule] = [
            method.step_delta(SimpleNamespace(retain=g, retain_losses=torch.ones(1)), s, log)  # type: ignore[arg-type]
            for s, g in enumerate(gradients)
        ]
    for step, factor in enumerate(factors):
        assert torch.allclose(deltas["cosine"][step], factor * deltas["constant"][step])
    assert torch.allclose(deltas["constant"][0], -0.01 * torch.sign(gradients[0]), atol=1e-6)
