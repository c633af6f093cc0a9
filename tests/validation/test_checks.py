"""Unit rules of the validator checks."""

from __future__ import annotations

import torch

from tune_unlearn.problems import Task
from tune_unlearn.validation._checks import prediction_changed


def test_a_regression_prediction_churns_only_when_it_leaves_the_tolerance() -> None:
    tasks = (
        Task("label", "classification", num_classes=3),
        Task("value", "regression", tolerance=0.25),
        Task("depth", "regression", tolerance=0.25, relative=True),
    )
    before = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 2.0], [2.0, 1.0, 2.0]])
    after = torch.tensor(
        [
            [0.0, 1.0001, 2.01],  # every float moved a hair: no churn
            [2.0, 1.3, 2.6],  # the class flipped; the value left ±0.25; depth left ×1.25
            [2.0, 0.8, 1.7],  # inside both tolerances
        ]
    )
    changed = prediction_changed(tasks, before, after)
    assert changed.tolist() == [[False, False, False], [True, True, True], [False, False, False]]
