"""What validators see: the study's experiment plus the ``holdout`` split, which only they read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from tune_unlearn.evaluation import PerSample, evaluate
from tune_unlearn.experiment import Experiment
from tune_unlearn.forget import LabeledSet
from tune_unlearn.problems import MultiTaskModel


@dataclass(frozen=True)
class Probe:
    """Samples and, per sample, the task labels a probe judges."""

    family: str
    samples: LabeledSet

    def __len__(self) -> int:
        return len(self.samples)


class ValidationContext:
    """The experiment, the holdout indices, and the reference models' per-sample results."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        config = experiment.config
        self.holdout: Tensor = experiment.problem.split(len(experiment.data), config.problem.seed)["holdout"]
        self.original = experiment.model_from(experiment.references["original"].state_dict)
        self.retrain = (
            experiment.model_from(experiment.references["retrain"].state_dict)
            if "retrain" in experiment.references
            else None
        )

    @property
    def task_names(self) -> list[str]:
        return self.experiment.task_names

    def all_tasks(self, indices: Tensor) -> LabeledSet:
        return LabeledSet(indices, torch.ones(len(indices), len(self.task_names), dtype=torch.bool))

    @cached_property
    def rows(self) -> Tensor:
        """Every sample a probe may use: holdout, and the train rows (forget and retain)."""
        rows: Tensor = torch.cat([self.holdout, self.experiment.splits["train"]]).unique()
        return rows

    def per_sample(self, model: MultiTaskModel) -> PerSample:
        experiment = self.experiment
        return evaluate(
            model,
            experiment.data,
            self.rows,
            experiment.problem.tasks,
            experiment.config.evaluation.batch_size,
        )

    @cached_property
    def original_results(self) -> PerSample:
        return self.per_sample(self.original)

    @cached_property
    def retrain_results(self) -> PerSample | None:
        return self.per_sample(self.retrain) if self.retrain is not None else None

    def _input_batches(self, indices: Tensor) -> Iterator[Tensor]:
        """The inputs at ``indices``, in evaluation-sized batches on the device."""
        data = self.experiment.data
        size = data.evaluation_batch(self.experiment.config.evaluation.batch_size)
        for _, inputs in data.input_batches(indices.to(data.device), size):
            yield inputs

    @torch.no_grad()
    def features(self, indices: Tensor) -> Tensor:
        """The original model's backbone features, the space in which neighbours are found."""
        return torch.cat([self.original.features(inputs) for inputs in self._input_batches(indices)])

    def predictions(self, model: MultiTaskModel, indices: Tensor) -> Tensor:
        """``[n, T]`` predicted class (classification) or value (regression) per task."""
        chunks = []
        with torch.no_grad():
            for inputs in self._input_batches(indices):
                outputs = model(inputs)
                columns = [
                    outputs[t.name].argmax(dim=-1).float()
                    if t.kind == "classification"
                    else outputs[t.name].squeeze(-1)
                    for t in self.experiment.problem.tasks
                ]
                chunks.append(torch.stack(columns, dim=1))
        return torch.cat(chunks).cpu()


def sample_scores(results: PerSample, samples: LabeledSet) -> Tensor:
    """Per sample: the mean correctness over the task labels the probe judges."""
    positions = results.positions(samples.indices)
    mask = samples.mask.float()
    return (results.correct[positions] * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
