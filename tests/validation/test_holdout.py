"""No code path of a study's trials reads the holdout split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from tune_unlearn.problems import DigitsProblem, MultiTaskData
from tune_unlearn.runner import run_study

from ..helpers import tiny_study


class HoldoutRead(AssertionError):
    pass


class GuardedInputs(Tensor):
    """The dataset's inputs; indexing them with any holdout index raises."""

    holdout: Tensor = torch.empty(0, dtype=torch.long)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        with torch._C.DisableTorchFunctionSubclass():  # results are plain tensors again
            if func is Tensor.__getitem__ and isinstance(args[1], Tensor) and not args[1].is_floating_point():
                index = args[1]
                rows = index.nonzero().flatten() if index.dtype == torch.bool else index.flatten()
                if bool(torch.isin(rows.cpu(), cls.holdout).any()):
                    raise HoldoutRead("a holdout sample was read")
            return func(*args, **(kwargs or {}))


class GuardedDigits(DigitsProblem):
    def load_data(self) -> MultiTaskData:
        data = super().load_data()
        GuardedInputs.holdout = self.split(len(data), seed=0)["holdout"]
        return MultiTaskData(data.inputs.as_subclass(GuardedInputs), data.labels, data.attributes)


def guarded_digits(**params: Any) -> GuardedDigits:
    return GuardedDigits(**params)


def test_the_guard_itself_catches_a_holdout_read() -> None:
    data = guarded_digits().load_data()
    with pytest.raises(HoldoutRead):
        data.inputs[GuardedInputs.holdout[:3]]
    data.inputs[torch.tensor([int(i) for i in range(5) if i not in GuardedInputs.holdout.tolist()])]


def test_a_whole_study_never_reads_a_holdout_index(tmp_path: Path) -> None:
    config = tiny_study(
        tmp_path,
        problem={"factory": f"{__name__}:guarded_digits", "params": {"hidden": 16, "epochs": 4}, "seed": 0},
        method={
            "name": "interference_aware",
            "fixed": {"steps": 4, "batch_size": 8},
            "search": {"projection_strength": {"low": 0.0, "high": 1.0}},
        },
        n_trials=2,
    )
    run = run_study(config, progress=False)
    assert [t.state.name for t in run.study.trials] == ["COMPLETE", "COMPLETE"]
