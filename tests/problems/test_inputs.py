"""A problem whose inputs live on disk behind a ``Dataset``: same study, same numbers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from tune_unlearn.problems import DatasetInputs, DigitsProblem, MultiTaskData
from tune_unlearn.study.runner import run_study
from tune_unlearn.trial.study_references import load_study_values

from ..helpers import tiny_study


class MemmapRows(Dataset[torch.Tensor]):
    """Rows of a ``.npy`` file, memory-mapped: nothing is read until a row is asked for."""

    largest_read = 0
    reads = 0

    def __init__(self, path: str) -> None:
        self.array = np.load(path, mmap_mode="r")

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        MemmapRows.reads += 1
        return torch.from_numpy(np.array(self.array[index], dtype=np.float32))


class CountingInputs(DatasetInputs):
    """Records the largest number of rows held at once by one batch."""

    def batches(self, rows: torch.Tensor, batch_size: int):  # type: ignore[no-untyped-def]
        for batch in super().batches(rows, batch_size):
            MemmapRows.largest_read = max(MemmapRows.largest_read, len(batch))
            yield batch

    def __getitem__(self, rows):  # type: ignore[no-untyped-def]
        batch = super().__getitem__(rows)
        MemmapRows.largest_read = max(MemmapRows.largest_read, len(batch))
        return batch

    def to(self, device: torch.device | str) -> CountingInputs:
        return CountingInputs(
            self.dataset, batch_size=self.batch_size, num_workers=self.num_workers, device=device
        )


@dataclass
class OnDiskDigits(DigitsProblem):
    """The digits problem with its inputs read from a memory-mapped file through a Dataset."""

    path: str = ""

    def load_data(self) -> MultiTaskData:
        in_memory = super().load_data()
        if not Path(self.path).exists():
            np.save(self.path, in_memory.inputs.numpy())
        inputs = CountingInputs(MemmapRows(self.path), batch_size=100)
        return MultiTaskData(inputs, in_memory.labels, in_memory.attributes)


def _config(tmp: Path, problem: dict[str, object]) -> object:
    # The collapse guard keeps its own sample in memory; 50 rows keeps it under the cap too.
    guard = {"enabled": True, "sample_size": 50}
    return tiny_study(tmp, problem={**problem, "seed": 0}, n_trials=2, collapse_guard=guard)


def test_a_dataset_backed_problem_gives_the_same_study_as_in_memory_inputs(tmp_path: Path) -> None:
    params = {"hidden": 16, "epochs": 8}
    memory = run_study(_config(tmp_path / "memory", {"name": "digits", "params": params}), progress=False)
    factory = {"factory": f"{__name__}:OnDiskDigits", "params": {**params, "path": str(tmp_path / "x.npy")}}
    MemmapRows.largest_read = MemmapRows.reads = 0
    disk = run_study(_config(tmp_path / "disk", factory), progress=False)

    # Reference training, every trial's steps and every evaluation read rows on demand,
    # never more than one batch at a time (the recipe's 64, the evaluation cap of 100,
    # the guard's sample of 50).
    assert MemmapRows.reads > 0
    assert MemmapRows.largest_read <= 100
    first = json.loads((memory.output / "pareto.json").read_text())["trials"]
    second = json.loads((disk.output / "pareto.json").read_text())["trials"]
    assert [t["params"] for t in first] == [t["params"] for t in second]
    for a, b in zip(first, second, strict=True):
        for key in ("forget_efficacy", "retained_utility", "uis"):
            assert a["metrics"][key] == pytest.approx(b["metrics"][key], abs=1e-6)


def test_dataset_inputs_index_like_a_tensor(tmp_path: Path) -> None:
    values = np.arange(30, dtype=np.float32).reshape(10, 3)
    np.save(tmp_path / "v.npy", values)
    inputs = DatasetInputs(MemmapRows(str(tmp_path / "v.npy")), batch_size=4)
    tensor = torch.from_numpy(values)
    rows = torch.tensor([7, 1, 1, 4])
    assert len(inputs) == 10
    assert torch.equal(inputs[rows], tensor[rows])
    assert torch.equal(inputs[2:5], tensor[2:5])
    assert torch.equal(inputs[3], tensor[3])
    assert torch.equal(torch.cat(list(inputs.batches(rows, 3))), tensor[rows])
    data = MultiTaskData(inputs, {"t": torch.zeros(10)})
    chunks = list(data.input_batches(torch.arange(10), data.evaluation_batch(4096)))
    assert [len(c) for c, _ in chunks] == [4, 4, 2]  # capped by the dataset's batch size
    empty = list(data.input_batches(torch.empty(0, dtype=torch.long), 4))
    assert empty[0][1].shape == (0, 3)


def test_an_experiment_on_dataset_inputs_keeps_them_unloaded(tmp_path: Path) -> None:
    factory = {
        "factory": f"{__name__}:OnDiskDigits",
        "params": {"hidden": 16, "epochs": 1, "path": str(tmp_path / "x.npy")},
    }
    experiment = load_study_values(_config(tmp_path, factory))  # type: ignore[arg-type]
    assert isinstance(experiment.inputs.data.inputs, DatasetInputs)


def test_the_problem_contract_holds_for_dataset_inputs_and_guards_their_holdout(tmp_path: Path) -> None:
    from tune_unlearn.testing import HoldoutRead, check_problem, guard_holdout

    problem = OnDiskDigits(hidden=16, epochs=1, path=str(tmp_path / "x.npy"))
    check_problem(problem)
    guarded = guard_holdout(problem, seed=0).load_data()
    holdout = problem.split(len(guarded), 0)["holdout"]
    with pytest.raises(HoldoutRead):
        guarded.inputs[holdout[:1]]


def test_worker_processes_load_the_same_rows_in_the_same_order(tmp_path: Path) -> None:
    values = np.arange(60, dtype=np.float32).reshape(20, 3)
    np.save(tmp_path / "v.npy", values)
    inputs = DatasetInputs(MemmapRows(str(tmp_path / "v.npy")), batch_size=4, num_workers=2)
    rows = torch.tensor([19, 3, 3, 7, 0, 11, 5])
    assert torch.equal(torch.cat(list(inputs.batches(rows, 3))), torch.from_numpy(values)[rows])
