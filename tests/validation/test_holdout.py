"""No code path of a study's trials reads the holdout split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tune_unlearn.problems import DigitsProblem, Problem
from tune_unlearn.study.runner import run_study
from tune_unlearn.testing import GuardedInputs, HoldoutRead, guard_holdout

from ..helpers import tiny_study


def guarded_digits(**params: Any) -> Problem:
    return guard_holdout(DigitsProblem(**params), seed=0)


def test_the_guard_itself_catches_a_holdout_read() -> None:
    data = guarded_digits().load_data()
    with pytest.raises(HoldoutRead):
        data.inputs[GuardedInputs.holdout[:3]]
    allowed = torch.tensor([i for i in range(10) if i not in set(GuardedInputs.holdout.tolist())])
    assert data.inputs[allowed].shape[0] == len(allowed)


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
