"""The multi-task problem contract: tasks, data, model factory, training recipe, splits.

A problem owns everything specific to one model and data set. The rest of the package only
sees :class:`Task` (how to score and lose on one head), :class:`MultiTaskData` (inputs, one
label tensor per task, optional attributes) and :class:`MultiTaskModel` (a shared backbone and
one head per task).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, cast, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tune_unlearn.problems._inputs import DatasetInputs

TaskKind = Literal["classification", "regression", "segmentation", "depth", "normals"]
SPLITS = ("train", "val", "holdout")


@dataclass(frozen=True)
class Task:
    """One head of the model, with its loss and its score in [0, 1].

    Classification scores accuracy. Regression scores the fraction of predictions within
    ``tolerance`` of the target: absolute error by default, or with ``relative`` the ratio
    ``max(ŷ/y, y/ŷ) < 1 + tolerance``, as depth estimation's δ < 1.25 on NYUv2 (positive
    targets). Dense (per-pixel) tasks are the subclasses in ``problems/_dense.py``; their
    per-sample loss and score are taken over each image's pixels, so everything that works
    per sample works on them unchanged.
    """

    name: str
    kind: TaskKind
    num_classes: int = 0
    tolerance: float = 0.1
    relative: bool = False

    @property
    def categorical(self) -> bool:
        """Labels are classes (one per sample, or one per pixel)."""
        return self.kind in ("classification", "segmentation")

    @property
    def dense(self) -> bool:
        """One label per pixel rather than per sample."""
        return False

    @property
    def output_size(self) -> int:
        return self.num_classes if self.kind == "classification" else 1

    def output_shape(self, label_shape: tuple[int, ...]) -> tuple[int, ...]:
        """One sample's head output, for one sample's label of ``label_shape``."""
        return (self.output_size,)

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        if self.kind == "classification":
            return F.cross_entropy(output, target.long(), reduction="none")
        return (output.squeeze(-1) - target.float()).pow(2)

    def per_sample_correct(self, output: Tensor, target: Tensor) -> Tensor:
        """The task's score of each sample, in [0, 1]: 1.0 where the prediction counts as
        right, else 0.0 (a dense task's share of right pixels, or its mIoU)."""
        if self.kind == "classification":
            return (output.argmax(dim=-1) == target.long()).float()
        prediction, target = output.squeeze(-1), target.float()
        if self.relative:
            ratio = torch.maximum(prediction / target, target / prediction)
            return ((prediction > 0) & (ratio < 1.0 + self.tolerance)).float()
        return ((prediction - target).abs() <= self.tolerance).float()

    def reported_scores(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Per-sample figures reported beside the score (a dense task's error measures)."""
        return {}

    def summary(self, output: Tensor, target: Tensor) -> Tensor:
        """One number per sample that says what the model predicts, for churn: the class, the
        value, or (dense) the sample's score."""
        if self.kind == "classification":
            return output.argmax(dim=-1).float()
        return output.squeeze(-1)

    def changed(self, before: Tensor, after: Tensor) -> Tensor:
        """Whether each sample's prediction changed between two :meth:`summary` values. A
        class changes when it differs; a value when it leaves the tolerance around the value
        before (any float moves a little, and a move the score would not notice is no churn)."""
        if self.kind == "classification":
            return before != after
        return self.per_sample_correct(after.unsqueeze(-1), before) == 0


@dataclass
class MultiTaskData:
    """All samples of a problem: inputs, one label tensor per task, attributes.

    Labels and attributes are in memory (the sets are drawn from them by index); the inputs are
    a tensor, or a :class:`DatasetInputs` that reads rows from a ``Dataset`` on demand.
    """

    inputs: Tensor | DatasetInputs
    labels: dict[str, Tensor]
    attributes: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def input_batches(self, rows: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """``(chunk, inputs[chunk])`` over ``rows`` in order, ``batch_size`` rows at a time."""
        chunks = rows.split(batch_size)
        if len(rows) == 0:  # one empty chunk, shaped like the inputs, as for a tensor
            yield rows, self.inputs[torch.zeros(1, dtype=torch.long, device=rows.device)][:0]
        elif isinstance(self.inputs, DatasetInputs):
            yield from zip(chunks, self.inputs.batches(rows, batch_size), strict=True)
        else:
            for chunk in chunks:
                yield chunk, self.inputs[chunk]

    def evaluation_batch(self, wanted: int) -> int:
        """Rows per evaluation pass: ``wanted``, capped by a dataset's own batch size."""
        if isinstance(self.inputs, DatasetInputs):
            return min(wanted, self.inputs.batch_size)
        return wanted

    def to(self, device: torch.device | str) -> MultiTaskData:
        return MultiTaskData(
            self.inputs.to(device),
            {k: v.to(device) for k, v in self.labels.items()},
            {k: v.to(device) for k, v in self.attributes.items()},
        )


class MultiTaskModel(nn.Module):
    """A shared backbone feeding one head per task.

    The split matters to the methods: projections act on the backbone's (shared) parameters,
    while each head belongs to exactly one task.
    """

    def __init__(self, backbone: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))

    def features(self, inputs: Tensor) -> Tensor:
        return self.backbone(inputs)  # type: ignore[no-any-return]

    def features_and_outputs(self, inputs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The shared representation and every head's output, from one forward pass."""
        shared = self.features(inputs)
        return shared, {name: head(shared) for name, head in self.heads.items()}

    def forward(self, inputs: Tensor) -> dict[str, Tensor]:
        return self.features_and_outputs(inputs)[1]


Schedule = Literal["constant", "cosine"]


def schedule_named(name: str) -> Schedule:
    """``name`` as a :class:`TrainRecipe` schedule; a clear error for any other."""
    if name not in get_args(Schedule):
        raise ValueError(f"schedule must be one of {', '.join(get_args(Schedule))}, got {name!r}")
    return cast(Schedule, name)


@dataclass(frozen=True)
class TrainRecipe:
    """How the problem's references (original and retrain) are trained: Adam at ``lr`` for
    ``epochs``, the rate held (``constant``) or annealed to zero over the run (``cosine``).

    Annealing makes the final weights a settled point rather than the last step of a noisy
    walk, so two honest retrains differ by their seeds' solutions, not by where their last
    minibatches left them: the retrain ensemble's spread, on which every tolerance rests, is
    then the spread of honest deletions.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Schedule = "constant"

    def __post_init__(self) -> None:
        schedule_named(self.schedule)

    def steps(self, samples: int) -> int:
        """Optimizer steps of one training on ``samples`` samples (the last batch may be short)."""
        return self.epochs * -(-samples // self.batch_size)


class Problem(ABC):
    """Base class of a multi-task problem.

    Subclasses declare ``tasks`` (and optionally ``attributes``), and implement
    :meth:`load_data` and :meth:`build_model`. Constructor keyword arguments are the problem's
    parameters from the study file; like scikit-learn estimators, ``__init__`` only stores them.
    """

    tasks: tuple[Task, ...] = ()
    attributes: tuple[str, ...] = ()
    #: Attributes whose values are the integers ``0..n − 1``, with their ``n``: a selector
    #: naming another value is refused before anything is built.
    attribute_levels: Mapping[str, int] = MappingProxyType({})
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)

    @abstractmethod
    def load_data(self) -> MultiTaskData:
        """All samples; called once per process and cached by the caller."""

    @abstractmethod
    def build_model(self) -> MultiTaskModel:
        """A freshly initialised model; the caller seeds the global RNG first."""

    def recipe(self) -> TrainRecipe:
        return TrainRecipe()

    def finetune_lr(self) -> float:
        """The Adam rate at which an attacker fine-tunes a trained model: the relearning
        attack's default (``attacks.relearning.lr`` unset). The recipe's rate unless the problem
        says otherwise: a rate meant for training from scratch can wreck a trained network in
        one step (batch norm in eval mode), and an attack under which honest retrains collapse
        cannot tell suppressed knowledge from removed."""
        return self.recipe().lr

    def params(self) -> dict[str, Any]:
        """The problem's parameters, for hashing the reference cache and for logging."""
        if dataclasses.is_dataclass(self):
            return dataclasses.asdict(self)
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"unknown task {name!r}; valid: {', '.join(self.task_names)}")

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def split(self, num_samples: int, seed: int) -> dict[str, Tensor]:
        """Seeded train/val/holdout index tensors (sorted, disjoint, covering every sample)."""
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(num_samples, generator=generator)
        n_train = round(self.split_fractions[0] * num_samples)
        n_val = round(self.split_fractions[1] * num_samples)
        bounds = (0, n_train, n_train + n_val, num_samples)
        return {name: order[bounds[i] : bounds[i + 1]].sort().values for i, name in enumerate(SPLITS)}
