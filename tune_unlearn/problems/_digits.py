"""`digits`: scikit-learn's bundled 8×8 handwritten digits as a four-task problem.

Four heads share one MLP backbone: the digit itself (10 classes), its parity, its magnitude
(≥ 5) and whether it has a closed loop (0, 6, 8, 9). The tasks are functions of the digit, so
they share features and interfere when one of them is unlearned, as real multi-task heads do.
The attribute ``ink`` (terciles of total stroke intensity) is a problem attribute that no task
predicts, for selectors and probe families.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tune_unlearn.problems._base import (
    MultiTaskData,
    MultiTaskModel,
    Problem,
    Schedule,
    Task,
    TrainRecipe,
    schedule_named,
)

_LOOPED = (0, 6, 8, 9)


@dataclass
class DigitsProblem(Problem):
    """Handwritten digits, four classification tasks on one shared backbone."""

    hidden: int = 64
    epochs: int = 40
    lr: float = 3e-3
    #: Constant: the MLP's honest retrains already agree (no false alarm in 40, RESULTS.md).
    schedule: Schedule = "constant"

    def __post_init__(self) -> None:
        schedule_named(self.schedule)

    tasks = (
        Task("digit", "classification", num_classes=10),
        Task("parity", "classification", num_classes=2),
        Task("magnitude", "classification", num_classes=2),
        Task("loop", "classification", num_classes=2),
    )
    attributes = ("ink",)

    def load_data(self) -> MultiTaskData:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        inputs = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0
        digit = torch.as_tensor(bunch.target, dtype=torch.long)
        ink = inputs.sum(dim=1)
        ink_level = torch.bucketize(ink, torch.quantile(ink, torch.tensor([1 / 3, 2 / 3])))
        return MultiTaskData(
            inputs=inputs,
            labels={
                "digit": digit,
                "parity": digit % 2,
                "magnitude": (digit >= 5).long(),
                "loop": torch.isin(digit, torch.tensor(_LOOPED)).long(),
            },
            attributes={"ink": ink_level},
        )

    def build_model(self) -> MultiTaskModel:
        backbone = nn.Sequential(
            nn.Linear(64, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, self.hidden),
            nn.ReLU(),
        )
        heads = {t.name: nn.Linear(self.hidden, t.output_size) for t in self.tasks}
        return MultiTaskModel(backbone, heads)

    def recipe(self) -> TrainRecipe:
        return TrainRecipe(epochs=self.epochs, batch_size=64, lr=self.lr, schedule=self.schedule)
