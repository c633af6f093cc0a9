"""What validators see: the study's fixed inputs and references, plus the ``holdout`` split,
which only they read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import torch
from torch import Tensor

from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.problems.forget import LabeledSet
from tune_unlearn.references.attacks import QuantizationAttack, RecoveryMeasures, RelearningAttack
from tune_unlearn.scoring.evaluation import PerSample, evaluate
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.inputs import StudyInputs
from tune_unlearn.trial.study_references import StudyReferences

AttackT = TypeVar("AttackT", RelearningAttack, QuantizationAttack)


@dataclass(frozen=True)
class Probe:
    """Samples and, per sample, the task labels a probe judges."""

    family: str
    samples: LabeledSet

    def __len__(self) -> int:
        return len(self.samples)


class ValidationContext:
    """The study's inputs and references, the holdout indices, and the reference models'
    per-sample results. ``recovery``: the study's recovery attacks, for the trials that checks
    re-run (a new one when not given)."""

    def __init__(
        self, inputs: StudyInputs, references: StudyReferences, recovery: RecoveryMeasures | None = None
    ) -> None:
        self.inputs, self.references = inputs, references
        self.recovery = (
            recovery if recovery is not None else configuration_run.recovery_measures(inputs, references)
        )
        self.holdout: Tensor = inputs.problem.split(len(inputs.data), inputs.config.problem.seed)["holdout"]
        self.original = references.original_model()
        #: The retrain ensemble (empty without a retrain reference); probes compare with its mean.
        self.retrains = references.retrain_models()

    @property
    def task_names(self) -> list[str]:
        return self.inputs.task_names

    def all_tasks(self, indices: Tensor) -> LabeledSet:
        return LabeledSet(indices, torch.ones(len(indices), len(self.task_names), dtype=torch.bool))

    @cached_property
    def rows(self) -> Tensor:
        """Every sample a probe may use: holdout, and the train rows (forget and retain)."""
        rows: Tensor = torch.cat([self.holdout, self.inputs.train]).unique()
        return rows

    def per_sample(self, model: MultiTaskModel) -> PerSample:
        return self.per_sample_of(model, self.rows)

    def attack(self, kind: type[AttackT], spec: Any) -> AttackT:
        """The ``kind`` attack of ``spec`` on this study, built once: its retrains' side is
        then computed once for every candidate judged here."""
        attacks: dict[tuple[type, str], Any] = self.__dict__.setdefault("_attacks", {})
        key = (kind, spec.model_dump_json())
        if key not in attacks:
            ground = configuration_run.attack_ground(
                self.inputs, self.references, self.original, self.retrains
            )
            attacks[key] = kind(ground, spec)
        attack: AttackT = attacks[key]
        return attack

    def per_sample_of(self, model: MultiTaskModel, indices: Tensor) -> PerSample:
        """``model``'s per-sample results on ``indices`` only."""
        inputs = self.inputs
        return evaluate(
            model, inputs.data, indices, inputs.problem.tasks, inputs.config.evaluation.batch_size
        )

    @cached_property
    def original_results(self) -> PerSample:
        return self.per_sample(self.original)

    def retrain_member_metrics(self, seed: int) -> list[dict[str, float]]:
        """Every metric of each retrain (for the MIA check), computed once per seed."""
        cache: dict[int, list[dict[str, float]]] = self.__dict__.setdefault("_member_metrics", {})
        if seed not in cache:
            cache[seed] = [
                configuration_run.measure(self.inputs, self.references, model, seed=seed)
                for model in self.retrains
            ]
        return cache[seed]

    @cached_property
    def retrain_member_results(self) -> list[PerSample]:
        return [self.per_sample(model) for model in self.retrains]

    @cached_property
    def retrain_results(self) -> PerSample | None:
        """The ensemble's per-sample mean correctness and loss: the expected outcome of an
        honest retrain for each sample (``None`` without a retrain reference)."""
        members = self.retrain_member_results
        if not members:
            return None
        return PerSample(
            members[0].rows,
            torch.stack([m.correct for m in members]).mean(dim=0),
            torch.stack([m.loss for m in members]).mean(dim=0),
        )

    def _row_batches(self, indices: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """``(rows, inputs)`` at ``indices``, in evaluation-sized batches on the device."""
        data = self.inputs.data
        size = data.evaluation_batch(self.inputs.config.evaluation.batch_size)
        yield from data.input_batches(indices.to(data.device), size)

    @torch.no_grad()
    def features(self, indices: Tensor) -> Tensor:
        """The original model's backbone features, flat per sample (a dense backbone's feature
        map too), the space in which neighbours are found."""
        return torch.cat(
            [self.original.features(inputs).flatten(start_dim=1) for _, inputs in self._row_batches(indices)]
        )

    def predictions(self, model: MultiTaskModel, indices: Tensor) -> Tensor:
        """``[n, T]`` what the model predicts per task (:meth:`Task.summary`: the class, the
        value, or a dense task's per-sample score)."""
        chunks = []
        labels = self.inputs.data.labels
        with torch.no_grad():
            for rows, inputs in self._row_batches(indices):
                outputs = model(inputs)
                columns = [
                    t.summary(outputs[t.name], labels[t.name][rows]) for t in self.inputs.problem.tasks
                ]
                chunks.append(torch.stack(columns, dim=1))
        return torch.cat(chunks).cpu()


def task_scores(results: PerSample, samples: LabeledSet, column: int) -> Tensor:
    """Correctness on one task, for the samples whose label on that task the probe judges."""
    positions = results.positions(samples.indices)
    return results.correct[positions[samples.mask[:, column]], column]
