"""The unlearning method contract and the one step loop every method shares.

A method is a keyword-only dataclass: its fields are its hyperparameters, with defaults, and
``__init__`` only stores them (as scikit-learn estimators do), so a search space can be checked
against :meth:`UnlearningMethod.hyperparameters` and a configuration round-trips.

Per step: ``θ ← θ + η_a·u − η_r·g_r``, where ``u`` is :meth:`forget_direction` (the method's
projection of ``g_f`` on the shared parameters; heads of target tasks take the raw ``g_f``).
With ``optimizer: adam`` each of ``u`` and ``g_r`` passes through its own Adam moments first
(``methods/_adam.py``), so that ``η_a`` and ``η_r`` are per-weight step sizes.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from tune_unlearn.hyperparameters import DerivedSearch, Param, declared_fields, hyperparameter, problems
from tune_unlearn.methods._adam import OPTIMIZERS, AdamMoments
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients
from tune_unlearn.problems import Batch, MultiTaskData, MultiTaskModel, Task
from tune_unlearn.problems.forget import LabeledSet

#: Called as ``monitor(step, model)`` every ``monitor_every`` steps. Raising stops the run and
#: loses it (the trial ends pruned); returning ``True`` ends it there and keeps it: the model as it
#: stands is the run's result, and the log counts the steps that ran.
StepMonitor = Callable[[int, MultiTaskModel], bool | None]


class DivergenceError(RuntimeError):
    """The unlearning loss or the parameters became NaN or infinite."""


@dataclass(frozen=True)
class UnlearningSetup:
    """What a method runs on: the data (on the device), the tasks, the forget and retain sets."""

    data: MultiTaskData
    tasks: tuple[Task, ...]
    target: Tensor  # bool [T]: which tasks the request forgets
    forget: LabeledSet
    retain: LabeledSet

    def batch(self, labeled: LabeledSet, positions: Tensor) -> Batch:
        rows = labeled.indices[positions]
        return Batch(
            inputs=self.data.inputs[rows],
            labels={name: column[rows] for name, column in self.data.labels.items()},
            mask=labeled.mask[positions],
            uniform_mask=labeled.uniform_mask,
        )


@dataclass
class StepLog:
    """Per-step diagnostics, kept on the device during the loop and read once at the end."""

    forget_loss: Tensor  # [S]
    retain_loss: Tensor  # [S, T]
    conflict: Tensor  # [S, T]: ⟨g_f, g_r^t⟩ > 0 on shared parameters; NaN where not computed
    norm_ratio: Tensor  # [S]: ‖u‖ / ‖g_f‖ on shared parameters; NaN where not computed
    steps_run: int = 0
    #: Sample-gradients computed over the steps that ran (see ``StepGradients``): a count, so
    #: the same configuration and seed cost the same on a busy or an idle machine.
    sample_gradients: int = 0

    @classmethod
    def empty(cls, steps: int, num_tasks: int, device: torch.device) -> StepLog:
        nan = float("nan")
        return cls(
            torch.full((steps,), nan, device=device),
            torch.full((steps, num_tasks), nan, device=device),
            torch.full((steps, num_tasks), nan, device=device),
            torch.full((steps,), nan, device=device),
        )

    def summary(self, task_names: list[str]) -> dict[str, float]:
        """Conflict rate per task and the mean norm ratio, over the steps that ran."""
        n = self.steps_run
        conflict = self.conflict[:n].cpu()
        out: dict[str, float] = {}
        for column, name in enumerate(task_names):
            known = conflict[:, column][~conflict[:, column].isnan()]
            out[f"conflict_rate/{name}"] = float(known.mean()) if len(known) else math.nan
        ratio = self.norm_ratio[:n].cpu()
        known_ratio = ratio[~ratio.isnan()]
        out["norm_ratio"] = float(known_ratio.mean()) if len(known_ratio) else math.nan
        return out

    def curves(self, task_names: list[str]) -> dict[str, list[float]]:
        n = self.steps_run
        curves = {"forget_loss": self.forget_loss[:n].tolist(), "norm_ratio": self.norm_ratio[:n].tolist()}
        retain = self.retain_loss[:n].cpu()
        for column, name in enumerate(task_names):
            curves[f"retain_loss/{name}"] = retain[:, column].tolist()
        return curves


#: The default step bound: no update longer than 1% of ‖θ‖. The rates the default spaces span
#: move digits' MLP by 0.04% of ‖θ‖ a step at their geometric middle and the shapes CNN by
#: 35% (its forget gradient is 120× larger), which diverges at step 2 (benchmarks/RESULTS.md,
#: "Why ascent diverges"): a bound relative to ‖θ‖ means the same on every model.
MAX_STEP = 0.01

#: The default search range of every descent rate (``retain_lr``, the loss methods' ``lr``) and
#: of every ascent rate: one range each, so that methods compare at one budget on one scale.
#: The descent range is relative to the original's retain gradient scale ``‖θ‖/‖g_r‖``
#: (``methods/_rate_scale.py``): a first-step share of the weights, the same on every model; on
#: digits (scale 60) the absolute range it was set on, [1e-3, 0.5], within 30%.
DESCENT_RATES: Mapping[str, object] = MappingProxyType(
    {"low": 1e-5, "high": 1e-2, "log": True, "scale": "retain_gradient"}
)
#: The ascent range is relative to ``ascent_probe``, the largest ascent rate plain ascent survives
#: over the study's budget under its collapse guard: a share of the forget gradient's scale does
#: not transfer (the collapse sits a decade lower on scenes than on digits and shapes), while the
#: forgetting window sits just under the collapse on all three. Two decades, from where nothing
#: forgets yet to well past the probed rate, room the retain step and the projections (which
#: shorten the ascent direction) need: on digits and shapes (probe 3e-5 × s_forget) the former
#: default [1e-6, 1e-3] × s_forget less its lowest, never-forgetting decade; on scenes (3e-6) a
#: decade lower (benchmarks/RESULTS.md, "The ascent probe as the default ascent range").
ASCENT_RATES: Mapping[str, object] = MappingProxyType(
    {"low": 0.3, "high": 30.0, "log": True, "scale": "ascent_probe"}
)

#: Every rate's default range under ``optimizer: adam`` (``methods/_adam.py``) on a method whose
#: steps are otherwise plain gradient descent: Adam's rate is a per-weight step size, which does
#: not scale with the gradient, so its range is absolute, three decades from a step that moves
#: nothing within a budget to one that moves every weight by 0.4 over 40 steps.
ADAM_RATES: Mapping[str, object] = MappingProxyType({"low": 1e-5, "high": 1e-2, "log": True})


@dataclass(kw_only=True)
class UnlearningMethod(ABC):
    """Base class of unlearning methods; subclasses add hyperparameters as fields."""

    steps: int = hyperparameter(50, ge=1, doc="unlearning steps")
    batch_size: int = hyperparameter(32, ge=1, doc="samples per forget and per retain batch")
    max_step: float = hyperparameter(
        MAX_STEP,
        gt=0.0,
        doc="the longest update of one step, as a fraction of the parameter norm ‖θ‖ (a trust "
        "ratio): a longer update is scaled down to it, its direction kept",
    )
    optimizer: str = hyperparameter(
        "sgd",
        choices=OPTIMIZERS,
        doc="how each direction becomes a step: sgd, the rate times the direction; adam, the "
        "rate times Adam's per-weight normalisation of it (its own moments per direction: "
        "forget, retain, a loss method's loss), so a rate is a per-weight step size",
    )

    name: ClassVar[str] = ""
    #: The search space a study uses when its file gives no ``method.search`` (Optuna
    #: dimensions as in a study file); hyperparameters the file fixes are left out of it.
    #: Derived from the hyperparameters' ``search=`` declarations (:class:`DerivedSearch`).
    default_search: ClassVar[DerivedSearch] = DerivedSearch()
    uses_forget: ClassVar[bool] = True
    uses_retain: ClassVar[bool] = True
    #: Host synchronisations for the divergence check happen only this often.
    check_every: ClassVar[int] = 10
    #: The share of the step budget before which the monitor (the collapse guard) does not
    #: look: a method that starts below the guard's floor by design and repairs later sets it.
    monitor_from: ClassVar[float] = 0.0

    @classmethod
    def first_monitored_step(cls, steps: int) -> int:
        """The first step (1-based) of ``steps`` at which the monitor may look: the collapse
        guard, and successive halving's rungs, which ride on the same callback."""
        return math.ceil(cls.monitor_from * steps)

    def __post_init__(self) -> None:
        """Every hyperparameter checked against its declaration: a method cannot be built with
        ``refresh_every=0`` or ``projection_strength=5``."""
        found = problems(self.constraints(), self.get_params())
        if found:
            raise ValueError("; ".join(f"{name}: {message}" for name, message in found))

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Every hyperparameter with its default."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def steps_with(cls, fixed: Mapping[str, Any]) -> str:
        """The optimizer a run with these fixed values steps with: theirs, else the method's own."""
        return str(fixed.get("optimizer", cls.hyperparameters()["optimizer"]))

    @classmethod
    def study_fixed(cls, fixed: Mapping[str, Any]) -> dict[str, Any]:
        """``fixed`` as a study that searches the method's default space runs it: with
        ``optimizer: adam`` added where the method's own steps are plain gradient descent,
        because only Adam's absolute rates (:data:`ADAM_RATES`) reach the matched region on
        every built-in problem (benchmarks/RESULTS.md, "Adam steps on the default spaces").
        Unchanged where the file names an ``optimizer`` (its choice stands) or fixes a rate: a
        rate written as a number was written for plain steps, and keeps that meaning."""
        declared = cls.constraints()
        rates = [name for name, param in declared.items() if param.rate]
        own = declared["optimizer"].default
        if own == "adam" or "optimizer" in fixed or not rates or any(name in fixed for name in rates):
            return dict(fixed)
        return {**fixed, "optimizer": "adam"}

    @classmethod
    def default_space(cls, fixed: Mapping[str, Any]) -> dict[str, dict[str, object]]:
        """The default search space less the hyperparameters ``fixed`` fixes. A fixed
        ``optimizer`` other than the method's own default changes what its rates mean: under
        ``adam``, on a method whose default is ``sgd``, every searched rate takes
        :data:`ADAM_RATES` instead of its range relative to a gradient scale."""
        space = {k: dict(v) for k, v in cls.default_search.items() if k not in fixed}
        if cls.steps_with(fixed) == "adam" != cls.steps_with({}):
            declared = cls.constraints()
            for name in space:
                if declared[name].rate:
                    space[name] = {"type": "float", **ADAM_RATES}
        return space

    @classmethod
    def constraints(cls) -> dict[str, Param]:
        """Every hyperparameter's declaration: type, range or choices, default."""
        return declared_fields(cls)

    def get_params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def learning_rates(self) -> tuple[float, float]:
        """``(η_a, η_r)``; a method without one of the terms reports 0 for it."""
        return float(getattr(self, "ascent_lr", 0.0)), float(getattr(self, "retain_lr", 0.0))

    def prepare(self, layout: ParameterLayout, setup: UnlearningSetup, seed: int) -> None:  # noqa: B027
        """Per-run state (task order, subspace bases); nothing by default."""

    @abstractmethod
    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        """``u`` as a flat vector in the layout of :class:`ParameterLayout`."""

    def unlearn(
        self,
        model: MultiTaskModel,
        setup: UnlearningSetup,
        *,
        seed: int,
        monitor: StepMonitor | None = None,
        monitor_every: int = 0,
    ) -> StepLog:
        """Run the step budget on ``model`` in place; raise :class:`DivergenceError` on NaN/inf.

        The same seed gives the same updates: batches come from a seeded generator, and the
        global generator (which ``torch.svd_lowrank`` draws from) is seeded inside a fork.
        """
        device = setup.data.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            return self._run_steps(model, setup, seed, monitor, monitor_every)

    def _run_steps(
        self,
        model: MultiTaskModel,
        setup: UnlearningSetup,
        seed: int,
        monitor: StepMonitor | None,
        monitor_every: int,
    ) -> StepLog:
        device = setup.data.device
        layout = ParameterLayout(model)
        generator = torch.Generator(device=device).manual_seed(seed)
        self.moments_: dict[str, AdamMoments] = {}  # a run's own Adam state, none carried over
        self.prepare(layout, setup, seed)
        log = StepLog.empty(self.steps, len(setup.tasks), device)
        # Eval mode: normalisation layers keep the original's statistics and per-sample
        # gradients (vmap over single samples) stay well defined; gradients flow as usual.
        model.eval()
        for step in range(self.steps):
            forget = retain = None
            if self.uses_forget:
                forget = setup.batch(setup.forget, self._positions(setup.forget, generator))
            if self.uses_retain:
                retain = setup.batch(setup.retain, self._positions(setup.retain, generator))
            grads = StepGradients(layout, setup.tasks, setup.target, forget, retain)
            try:
                delta = self.step_delta(grads, step, log)
            except torch.linalg.LinAlgError as error:  # type: ignore[attr-defined]
                # SVD/QR fail only on non-finite gradients: the trajectory has blown up.
                raise DivergenceError(f"unlearning diverged at step {step + 1}: {error}") from error
            layout.add_(bounded(delta, layout, self.max_step))
            log.steps_run = step + 1
            log.sample_gradients += grads.sample_gradients

            done = step + 1 == self.steps
            # Not after the last step: stopping then would save nothing and lose a finished trial.
            monitoring = (
                monitor is not None
                and monitor_every > 0
                and (step + 1) % monitor_every == 0
                and step + 1 >= self.first_monitored_step(self.steps)
                and not done
            )
            # Check for divergence before the monitor looks, so NaN weights fail the trial as
            # divergence rather than being judged as a collapse.
            if (step + 1) % self.check_every == 0 or done or monitoring:
                self._check_finite(log, layout, step)
            if monitoring and monitor is not None and monitor(step + 1, model):
                break
        return log

    def stepped(self, stream: str, direction: Tensor, step: int) -> Tensor:
        """``direction`` as the optimizer steps along it: itself under ``sgd``; under ``adam``
        its normalisation by the moments of ``stream`` (one set per stream and run)."""
        if self.optimizer == "sgd":
            return direction
        moments: dict[str, AdamMoments] = self.__dict__.setdefault("moments_", {})
        if stream not in moments:
            moments[stream] = AdamMoments(direction.numel(), direction.device)
        return moments[stream].direction(direction, step)

    def step_delta(self, grads: StepGradients, step: int, log: StepLog) -> Tensor:
        """This step's parameter update (flat, added to θ), logging the diagnostics on the
        device. Direction-defined methods keep this: ``η_a·u − η_r·g_r``, ``u`` from
        :meth:`forget_direction` (each through :meth:`stepped`). Loss-defined methods
        (:class:`LossMethod`) override it with ``−∇`` of their loss; the step loop calls this
        one hook for both kinds."""
        ascent_lr, retain_lr = self.learning_rates
        layout = grads.layout
        n_shared = layout.num_shared
        delta = torch.zeros(sum(layout.numels), device=grads.target.device)
        if grads.forget_batch is not None:
            direction = self.forget_direction(grads, step)
            delta.add_(self.stepped("forget", direction, step), alpha=ascent_lr)
            log.forget_loss[step] = grads.forget_loss
            g_f = grads.forget[:n_shared]
            log.norm_ratio[step] = direction[:n_shared].norm() / g_f.norm().clamp(min=1e-12)
            if "retain_by_task" in grads.__dict__:
                log.conflict[step] = (grads.retain_by_task[:, :n_shared] @ g_f > 0).float()
        if grads.retain_batch is not None:
            delta.sub_(self.stepped("retain", grads.retain, step), alpha=retain_lr)
            log.retain_loss[step] = grads.retain_losses
        return delta

    def _positions(self, labeled: LabeledSet, generator: torch.Generator) -> Tensor:
        return torch.randint(len(labeled), (self.batch_size,), generator=generator, device=generator.device)

    def _check_finite(self, log: StepLog, layout: ParameterLayout, step: int) -> None:
        # One host sync every `check_every` steps rather than one per step.
        checks = [p.isfinite().all() for p in layout.params]
        if self.uses_forget:
            checks.append(log.forget_loss[: step + 1].isfinite().all())
        if self.uses_retain:
            checks.append(log.retain_loss[: step + 1].isfinite().all())
        if bool(torch.stack(checks).all()):
            return
        bad = (~torch.isfinite(log.forget_loss[: step + 1])).nonzero()
        where = f"; forget loss first non-finite at step {int(bad[0]) + 1}" if len(bad) else ""
        raise DivergenceError(f"unlearning diverged by step {step + 1}: NaN or inf{where}")


def bounded(delta: Tensor, layout: ParameterLayout, max_step: float) -> Tensor:
    """``delta`` scaled down, direction kept, to at most ``max_step · ‖θ‖`` (on the device:
    no host sync)."""
    theta = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.detach()) for p in layout.params])
    )
    scale = (max_step * theta / torch.linalg.vector_norm(delta).clamp(min=1e-30)).clamp(max=1.0)
    return delta.mul_(scale)


@dataclass(kw_only=True)
class LossMethod(UnlearningMethod):
    """A method defined by the loss it descends rather than by a forget direction: random
    labels, SCRUB, NPO and their kind. Each step it builds :meth:`loss` from this step's
    batches (``grads.forget_outputs``, ``grads.retain_outputs``, the labels) and moves by
    ``−η·∇loss``; ``learning_rate`` is η. The same step loop, batches, divergence checks and
    compute count as every other method."""

    def forget_direction(self, grads: StepGradients, step: int) -> Tensor:
        raise RuntimeError(f"{self.name} is defined by its loss, not by a forget direction")

    @property
    def learning_rate(self) -> float:
        return float(getattr(self, "lr", 0.0))

    @abstractmethod
    def loss(self, grads: StepGradients, step: int) -> Tensor:
        """The scalar this step descends; it may read ``grads.forget_outputs``,
        ``grads.retain_outputs``, ``grads.forget_batch`` and ``grads.retain_batch``."""

    def loss_rows(self, grads: StepGradients) -> int:
        """Samples behind the loss's gradient (for ``compute_cost``): both batches it uses."""
        return sum(len(b.inputs) for b in (grads.forget_batch, grads.retain_batch) if b is not None)

    def step_delta(self, grads: StepGradients, step: int, log: StepLog) -> Tensor:
        loss = self.loss(grads, step)
        if grads.forget_batch is not None:
            log.forget_loss[step] = grads.forget_loss
        if grads.retain_batch is not None:
            log.retain_loss[step] = grads.retain_losses
        gradient = grads.gradient_of(loss, self.loss_rows(grads))
        return self.stepped("loss", gradient, step).mul_(-self.learning_rate)


@dataclass(kw_only=True)
class ForgetRetainLoss(LossMethod):
    """A loss method of the common shape ``forget_weight · L_forget + L_r``: a forget term of
    the method's own on the forget batch's target tasks, plus the retain loss."""

    lr: float = hyperparameter(
        0.05,
        gt=0.0,
        doc="learning rate of the combined descent",
        rate=True,
        search=DESCENT_RATES,
    )
    forget_weight: float = hyperparameter(
        1.0,
        ge=0.0,
        doc="weight of the forget term against the retain",
        search={"low": 0.1, "high": 10.0, "log": True},
    )

    def prepare(self, layout: ParameterLayout, setup: UnlearningSetup, seed: int) -> None:
        # The target tasks, read to the host once per run rather than once per step.
        self.target_columns_ = [int(c) for c in setup.target.nonzero().flatten().tolist()]

    @abstractmethod
    def forget_term(self, grads: StepGradients, column: int, step: int) -> Tensor:
        """Per-sample forget loss of target task ``column`` on the forget batch, ``[B_f]``."""

    def loss(self, grads: StepGradients, step: int) -> Tensor:
        batch = grads.forget_batch
        assert batch is not None
        terms = []
        for column in self.target_columns_:
            weight = batch.mask[:, column].float()
            per_sample = self.forget_term(grads, column, step)
            terms.append((per_sample * weight).sum() / weight.sum().clamp(min=1.0))
        return self.forget_weight * torch.stack(terms).sum() + grads.retain_task_losses.sum()
