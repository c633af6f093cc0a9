"""The collapse guard: stop a trial whose retained utility has collapsed.

Optuna prunes single-objective studies only; for a multi-objective study this fills the hole.
Every ``every`` steps the guard scores the model on a fixed, seeded sample of ``val`` in one
batched forward pass, and raises :class:`CollapseDetected` when the mean ratio of unlearned to
original score over the tasks falls below ``floor``. The trial then ends as pruned, with the
reason and the compute it saved recorded.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tune_unlearn.methods import AscentProbeBudget
from tune_unlearn.problems import MultiTaskData, MultiTaskModel, Task
from tune_unlearn.scoring.metrics import score_ratios
from tune_unlearn.trial.inputs import StudyInputs, build_method
from tune_unlearn.trial.study_references import StudyReferences


class TrialStopped(Exception):
    """A step monitor stopped the trial at ``step``: it ends as pruned, with this message as
    its reason and the remaining steps as compute saved."""

    def __init__(self, step: int, reason: str) -> None:
        self.step = step
        super().__init__(reason)


class CollapseDetected(TrialStopped):
    """Retained utility on the guard's sample fell below the floor."""

    def __init__(self, step: int, utility: float, floor: float) -> None:
        self.utility, self.floor = utility, floor
        super().__init__(step, f"retained utility {utility:.3f} below the floor {floor:g} at step {step}")


class CollapseGuard:
    """A step monitor (see :data:`tune_unlearn.methods.StepMonitor`); stateless, so one guard
    serves every trial of a process."""

    def __init__(
        self,
        data: MultiTaskData,
        rows: Tensor,
        tasks: tuple[Task, ...],
        original_scores: Tensor,
        floor: float,
    ) -> None:
        self.inputs = data.inputs[rows]
        self.labels = [data.labels[t.name][rows] for t in tasks]
        self.tasks = tasks
        self.original_scores = original_scores
        self.floor = floor

    @classmethod
    def on_sample(
        cls,
        model: MultiTaskModel,
        data: MultiTaskData,
        val_rows: Tensor,
        tasks: tuple[Task, ...],
        *,
        floor: float,
        size: int,
        seed: int,
    ) -> CollapseGuard:
        """A guard on a seeded sample of ``val_rows``, scored against ``model`` (the original)."""
        generator = torch.Generator().manual_seed(seed)
        sample = val_rows[torch.randperm(len(val_rows), generator=generator)[:size]].to(data.device)
        guard = cls(data, sample, tasks, torch.ones(len(tasks), device=data.device), floor)
        guard.original_scores = guard.scores(model)
        return guard

    @torch.no_grad()
    def scores(self, model: MultiTaskModel) -> Tensor:
        outputs = model(self.inputs)
        pairs = zip(self.tasks, self.labels, strict=True)
        return torch.stack([t.per_sample_correct(outputs[t.name], y).mean() for t, y in pairs])

    def utility(self, model: MultiTaskModel) -> float:
        """Retained utility's ``mean_t U_t / O_t`` on the sample, with the metric's own rule for
        a task the original scores 0 on (:func:`tune_unlearn.scoring.metrics.score_ratios`)."""
        return float(score_ratios(self.scores(model), self.original_scores).mean())

    def __call__(self, step: int, model: MultiTaskModel) -> None:
        utility = self.utility(model)  # the one host sync, every `every` steps
        if utility < self.floor:
            raise CollapseDetected(step, utility, self.floor)


def study_guard(inputs: StudyInputs, references: StudyReferences) -> CollapseGuard | None:
    """The guard the study file asks for (``collapse_guard``), on its seeded ``val`` sample and
    scored against the original; ``None`` when it is off."""
    return _guard_on_val(inputs, references) if inputs.config.collapse_guard.enabled else None


def _guard_on_val(inputs: StudyInputs, references: StudyReferences) -> CollapseGuard:
    """A guard with the study's ``collapse_guard`` settings, on/off aside."""
    settings = inputs.config.collapse_guard
    return CollapseGuard.on_sample(
        references.original_model(),
        inputs.data,
        inputs.val,
        inputs.problem.tasks,
        floor=settings.floor,
        size=settings.sample_size,
        seed=inputs.config.problem.seed,
    )


def ascent_probe_budget(inputs: StudyInputs, references: StudyReferences) -> AscentProbeBudget:
    """What the ``ascent_probe`` scale is measured with: the study's step budget, batch and step
    bound (where the search draws the steps or the bound, its largest), and the study's guard
    settings on its seeded ``val`` sample, used even when the study turns its guard off (the
    probe needs a collapse test; the floor says what collapse means)."""
    method = build_method(inputs, {})
    search = inputs.config.method.search
    steps, max_step = method.steps, method.max_step
    if "steps" in search and search["steps"].high is not None:
        steps = int(search["steps"].high)
    if "max_step" in search and search["max_step"].high is not None:
        max_step = float(search["max_step"].high)
    settings = inputs.config.collapse_guard
    guard = _guard_on_val(inputs, references)
    return AscentProbeBudget(
        steps=steps,
        batch_size=method.batch_size,
        max_step=max_step,
        every=settings.every,
        floor=settings.floor,
        utility=guard.utility,
    )
