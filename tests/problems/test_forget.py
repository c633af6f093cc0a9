from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tune_unlearn.problems import DigitsProblem
from tune_unlearn.problems.forget import ForgetRequest, select_forget_indices

TASKS = ["digit", "parity", "magnitude", "loop"]


def test_partial_mode_keeps_the_forget_instances_other_task_labels() -> None:
    train = torch.arange(10)
    request = ForgetRequest("partial", ("digit",), torch.tensor([2, 5]))
    retain = request.retain_set(train, TASKS)
    assert retain.indices.tolist() == list(range(10))  # forget instances stay, partially
    rows = {int(i): m.tolist() for i, m in zip(retain.indices, retain.mask, strict=True)}
    assert rows[2] == [False, True, True, True]
    assert rows[5] == [False, True, True, True]
    assert rows[0] == [True, True, True, True]
    assert request.forget_set(TASKS).mask.tolist() == [[True, False, False, False]] * 2
    assert request.kept_set(TASKS).mask.tolist() == [[False, True, True, True]] * 2


def test_full_mode_removes_the_forget_instances_from_every_task() -> None:
    train = torch.arange(10)
    request = ForgetRequest("full", tuple(TASKS), torch.tensor([2, 5]))
    retain = request.retain_set(train, TASKS)
    assert 2 not in retain.indices.tolist() and 5 not in retain.indices.tolist()
    assert len(retain) == 8 and bool(retain.mask.all())


def test_instances_deleted_earlier_stay_out_of_the_retain_set_and_change_the_retrain() -> None:
    train = torch.arange(10)
    alone = ForgetRequest("full", tuple(TASKS), torch.tensor([2, 5]))
    after = ForgetRequest("full", tuple(TASKS), torch.tensor([2, 5]), previous=torch.tensor([7]))
    assert after.retain_set(train, TASKS).indices.tolist() == [0, 1, 3, 4, 6, 8, 9]
    assert after.forget_set(TASKS).indices.tolist() == [2, 5]  # only this request is unlearned
    assert after.fingerprint() != alone.fingerprint()  # another retrain, cached apart
    partial = ForgetRequest("partial", ("digit",), torch.tensor([2]), previous=torch.tensor([7]))
    kept = partial.retain_set(train, TASKS)
    rows = {int(i): m.tolist() for i, m in zip(kept.indices, kept.mask, strict=True)}
    assert rows[7] == [False, True, True, True]  # its digit label stays deleted, the rest kept


def test_selectors_by_label_fraction_and_index_file(tmp_path: Path) -> None:
    data = DigitsProblem().load_data()
    train = torch.arange(0, len(data), 2)
    threes = select_forget_indices(data, train, where={"digit": 3})
    assert len(threes) > 50 and bool((data.labels["digit"][threes] == 3).all())
    assert bool(torch.isin(threes, train).all())
    half = select_forget_indices(data, train, where={"digit": 3}, fraction=0.5, seed=1)
    assert len(half) == round(len(threes) / 2) and bool(torch.isin(half, threes).all())
    again = select_forget_indices(data, train, where={"digit": 3}, fraction=0.5, seed=1)
    assert torch.equal(half, again)
    both = select_forget_indices(data, train, where={"digit": 3, "ink": 2})
    assert bool((data.attributes["ink"][both] == 2).all()) and len(both) < len(threes)

    index_file = tmp_path / "forget.txt"
    index_file.write_text("4\n0\n8\n")
    assert select_forget_indices(data, train, index_file=index_file).tolist() == [0, 4, 8]
    index_file.write_text("1\n")  # odd indices are not train samples here
    with pytest.raises(ValueError, match="not train samples"):
        select_forget_indices(data, train, index_file=index_file)
