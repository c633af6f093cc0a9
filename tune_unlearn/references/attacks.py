"""The two recovery attacks, measured against honest retrains: one implementation for the gate's
``attack/*`` checks and for the ``relearn_recovery`` / ``quantization_recovery`` metrics.

A model can score like a retrain on the forget set while the knowledge still sits in its
weights, suppressed rather than removed. Two cheap attacks tell the difference, each judged
against the retrain ensemble under the same attack, so what honest deletion also allows is
never held against the candidate:

- *relearning*: fine-tune for a few steps on a small sample of the forget set (target-task
  labels only), and separately on a retain sample only; then score the forget instances *not*
  in the sample. The attack's strength is calibrated on the retrains: it runs the most steps
  (up to the spec's) that they withstand, since an attack under which honest retrains relearn
  too (one shapes retrain in five learns a class back from 16 examples in 10 steps) cannot tell
  suppressed knowledge from removed knowledge.
- *quantization*: round every parameter to a ``bits``-bit symmetric per-tensor grid; measure how
  far the forget-set score moves back toward the original's.

Each outcome's **excess** is the candidate's figure minus the retrains' mean minus their seed
band (:func:`seed_band`): what came back beyond what honest deletion allows. The gate fails an
excess above the spec's ``margin``; the metrics report the worst excess, so that the constraint
``relearn_recovery <= 0.1`` asks of a trial what the gate's check asks of a candidate.

The retrains' side of each attack is the same for every candidate of a study: each attack
object computes it once, on first use, and counts its sample-gradients then
(:attr:`RelearningAttack.sample_gradients`; quantization costs forward passes only).
Fine-tuning runs with batch-norm statistics frozen (the model in eval mode): the attacker
moves the weights, and statistics from 16 samples would damage every model alike.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from tune_unlearn.config.attack_specs import QuantizationSpec, RelearningSpec
from tune_unlearn.problems import Batch, MultiTaskData, MultiTaskModel, Task, masked_task_losses
from tune_unlearn.problems.forget import LabeledSet
from tune_unlearn.scoring.evaluation import evaluate
from tune_unlearn.scoring.prediction_band import prediction_band


@dataclass(frozen=True)
class AttackGround:
    """What the attacks read about a study: its data and tasks, the request's target columns,
    the forget and retain sets, the recipe's learning rate, the evaluation batch size, the
    original model and the retrain ensemble (empty: the attacks cannot be judged). ``recipe_lr``
    is the problem's fine-tuning rate (``Problem.finetune_lr``), the relearning attack's rate
    when its spec sets none."""

    data: MultiTaskData
    tasks: tuple[Task, ...]
    target_columns: Tensor
    forget: LabeledSet
    retain: LabeledSet
    recipe_lr: float
    batch_size: int
    original: MultiTaskModel
    retrains: tuple[MultiTaskModel, ...]

    def forget_score(self, model: MultiTaskModel, samples: LabeledSet) -> float:
        """Mean correctness on the target tasks over ``samples`` (the forget-set score)."""
        results = evaluate(model, self.data, samples.indices, self.tasks, self.batch_size)
        return float(results.correct[:, self.target_columns].mean())

    def references(self, members: int) -> tuple[MultiTaskModel, ...]:
        if not self.retrains:
            raise ValueError("attack checks compare with the retrain ensemble; this study has no retrain")
        return self.retrains[:members]


def seed_band(honest: Sequence[float]) -> float:
    """The retrains' seed band: ``t_{K−1} × their spread × sqrt(1 + 1/K)``, from three members
    on (the 95% prediction interval of one more honest retrain); 0 below three."""
    if len(honest) < 3:
        return 0.0
    return prediction_band(float(np.std(honest, ddof=1)), len(honest))


@dataclass(frozen=True)
class Outcome:
    """One attack on one candidate: its figure after the attack against the retrains'."""

    name: str
    candidate: float
    honest: tuple[float, ...]
    details: dict[str, object] = field(default_factory=dict)

    @property
    def band(self) -> float:
        return seed_band(self.honest)

    @property
    def excess(self) -> float:
        """The candidate's figure − the retrains' mean − their seed band."""
        return self.candidate - float(np.mean(self.honest)) - self.band


def _seeded_split(labeled: LabeledSet, size: int, seed: int) -> tuple[LabeledSet, LabeledSet]:
    order = torch.randperm(len(labeled), generator=torch.Generator().manual_seed(seed))
    chosen, rest = order[:size].sort().values, order[size:].sort().values
    return (
        LabeledSet(labeled.indices[chosen], labeled.mask[chosen]),
        LabeledSet(labeled.indices[rest], labeled.mask[rest]),
    )


def withstood_steps(honest_curves: Sequence[Sequence[float]], margin: float) -> int:
    """The most steps ``s`` such that at ``s`` and every step before it the retrains' mean
    recovery (score after − score before) plus their seed band is within ``margin``; at least 1
    (the weakest attack, judged with the band as usual)."""
    curves = np.asarray(honest_curves, dtype=float)
    recovery = curves - curves[:, :1]
    withstood = 0
    for step in range(1, curves.shape[1]):
        if float(recovery[:, step].mean()) + seed_band(list(curves[:, step])) > margin:
            break
        withstood = step
    return max(withstood, 1)


def comeback_step(curve: Sequence[float], margin: float) -> int | None:
    """The first attack step at which a model's forget-set score stands more than ``margin``
    above its own score before the attack (``curve[0]``); ``None`` when it never does within
    the curve."""
    for step in range(1, len(curve)):
        if curve[step] - curve[0] > margin:
            return step
    return None


def quantized(model: MultiTaskModel, bits: int) -> MultiTaskModel:
    """A copy with every floating parameter rounded to a symmetric per-tensor ``bits``-bit grid
    (simulated: the values are rounded, the storage stays float)."""
    levels = 2 ** (bits - 1) - 1
    out = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in out.parameters():
            scale = parameter.abs().max() / levels
            if float(scale) > 0:
                parameter.copy_(torch.round(parameter / scale) * scale)
    return out


Variant = Literal["forget", "retain"]


def relearning_budget(spec: RelearningSpec, members: int) -> tuple[int, int]:
    """Sample-gradients of the relearning attack: at most per candidate (two variants of at
    most ``steps`` steps on ``sample_size`` samples), and once for the retrains' side (every
    step, for each of the first ``members`` retrains); ``check`` states both."""
    per_candidate = 2 * spec.steps * spec.sample_size
    return per_candidate, min(members, spec.members) * per_candidate


class RelearningAttack:
    """The relearning attack of one spec on one study; the retrains' curves computed once."""

    def __init__(self, ground: AttackGround, spec: RelearningSpec) -> None:
        self.ground, self.spec = ground, spec
        forget_sample, self.judged_on = _seeded_split(ground.forget, spec.sample_size, spec.seed)
        if len(self.judged_on) < 1:
            raise ValueError(
                f"the forget set has {len(forget_sample)} instances: none left to judge recovery on"
            )
        retain_sample, _ = _seeded_split(ground.retain, spec.sample_size, spec.seed)
        self.samples: dict[Variant, LabeledSet] = {"forget": forget_sample, "retain": retain_sample}
        self.members = ground.references(spec.members)
        #: Sample-gradients spent so far (each fine-tuning step on b samples counts b).
        self.sample_gradients = 0

    def fine_tuned(
        self, model: MultiTaskModel, variant: Variant, steps: int, *, curve: bool
    ) -> tuple[MultiTaskModel, list[float]]:
        """A copy of ``model`` after ``steps`` full-batch Adam steps on the variant's sample,
        and (with ``curve``) the forget-set score on the judged instances before the first step
        and after each."""
        ground, sample = self.ground, self.samples[variant]
        attacked = copy.deepcopy(model)
        attacked.eval()  # batch-norm statistics frozen: see the module docstring
        lr = self.spec.lr if self.spec.lr is not None else ground.recipe_lr
        optimizer = torch.optim.Adam(attacked.parameters(), lr=lr)
        rows = sample.indices.to(ground.data.device)
        batch = Batch(
            ground.data.inputs[rows],
            {name: column[rows] for name, column in ground.data.labels.items()},
            sample.mask.to(ground.data.device),
        )
        scores = [ground.forget_score(attacked, self.judged_on)] if curve else []
        with torch.enable_grad():
            for _ in range(steps):
                loss = masked_task_losses(attacked(batch.inputs), batch, ground.tasks).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if curve:
                    scores.append(ground.forget_score(attacked, self.judged_on))
        self.sample_gradients += steps * len(sample)
        return attacked, scores

    @cached_property
    def honest_curves(self) -> dict[Variant, list[list[float]]]:
        return {
            variant: [self.fine_tuned(r, variant, self.spec.steps, curve=True)[1] for r in self.members]
            for variant in self.samples
        }

    def steps(self, variant: Variant) -> int:
        curves = self.honest_curves[variant]
        return withstood_steps(curves, self.spec.margin) if self.spec.calibrate else self.spec.steps

    def outcomes(self, model: MultiTaskModel, *, curve: bool = True) -> list[Outcome]:
        """``attack/relearn_forget`` and ``attack/relearn_retain`` on ``model``. Without
        ``curve`` only the score at the calibrated step is measured (the same number: the
        scores in between do not touch the weights), as a trial's metric needs."""
        results = []
        for variant, sample in self.samples.items():
            steps = self.steps(variant)
            honest = tuple(c[steps] for c in self.honest_curves[variant])
            if curve:
                candidate_curve = self.fine_tuned(model, variant, self.spec.steps, curve=True)[1]
                after = candidate_curve[steps]
            else:
                attacked = self.fine_tuned(model, variant, steps, curve=False)[0]
                after, candidate_curve = self.ground.forget_score(attacked, self.judged_on), []
            results.append(
                Outcome(
                    f"attack/relearn_{variant}",
                    after,
                    honest,
                    {
                        "candidate_after": after,
                        "retrains_after": list(honest),
                        "steps": steps,
                        "sample_size": len(sample),
                        "judged_on": len(self.judged_on),
                        **(
                            {
                                "candidate_before": candidate_curve[0],
                                "candidate_curve": candidate_curve,
                                "retrain_curves": self.honest_curves[variant],
                            }
                            if curve
                            else {}
                        ),
                    },
                )
            )
        return results


class QuantizationAttack:
    """The quantization attack of one spec on one study; the retrains' moves computed once."""

    def __init__(self, ground: AttackGround, spec: QuantizationSpec) -> None:
        self.ground, self.spec = ground, spec
        self.members = ground.references(spec.members)

    @cached_property
    def original_score(self) -> float:
        return self.ground.forget_score(self.ground.original, self.ground.forget)

    def move_back(self, model: MultiTaskModel, bits: int) -> float:
        """How far rounding to ``bits`` moves the forget-set score back toward the original's."""
        forget = self.ground.forget
        before = self.ground.forget_score(model, forget)
        after = self.ground.forget_score(quantized(model, bits), forget)
        direction = math.copysign(1.0, self.original_score - before) if self.original_score != before else 0.0
        return (after - before) * direction

    @cached_property
    def honest_moves(self) -> dict[int, tuple[float, ...]]:
        return {bits: tuple(self.move_back(r, bits) for r in self.members) for bits in self.spec.bits}

    def outcomes(self, model: MultiTaskModel) -> list[Outcome]:
        results = []
        for bits in self.spec.bits:
            move, honest = self.move_back(model, bits), self.honest_moves[bits]
            details = {
                "candidate_move": move,
                "retrain_moves": list(honest),
                "original_score": self.original_score,
            }
            results.append(Outcome(f"attack/quantization_{bits}bit", move, honest, details))
        return results


class RecoveryMeasures:
    """The recovery metrics of a study's trials: the attacks built on first use from one
    ground, so the retrains' side is computed once per study process."""

    def __init__(
        self, ground: Callable[[], AttackGround], relearning: RelearningSpec, quantization: QuantizationSpec
    ) -> None:
        self._ground, self._relearning, self._quantization = ground, relearning, quantization
        # Trials may run in threads of one process (``n_jobs``): one attack at a time, so the
        # retrains' side is computed, and its cost counted, once.
        self._lock = threading.Lock()

    @cached_property
    def ground(self) -> AttackGround:
        return self._ground()

    @cached_property
    def relearning(self) -> RelearningAttack:
        return RelearningAttack(self.ground, self._relearning)

    @cached_property
    def quantization(self) -> QuantizationAttack:
        return QuantizationAttack(self.ground, self._quantization)

    def measure(self, model: MultiTaskModel, names: Iterable[str]) -> tuple[dict[str, float], int]:
        """The named recovery metrics of ``model`` and the sample-gradients they spent (the
        retrains' side included the first time)."""
        with self._lock:
            return self._measure(model, names)

    def _measure(self, model: MultiTaskModel, names: Iterable[str]) -> tuple[dict[str, float], int]:
        values: dict[str, float] = {}
        spent = 0
        for name in names:
            if name == "relearn_recovery":
                before = self.relearning.sample_gradients
                outcomes = self.relearning.outcomes(model, curve=False)
                spent += self.relearning.sample_gradients - before
            elif name == "quantization_recovery":
                outcomes = self.quantization.outcomes(model)
            else:
                continue
            values[name] = max(o.excess for o in outcomes)
        return values, spent
