"""Forget requests and the sets they induce.

A :class:`LabeledSet` is a list of sample indices with a per-task mask saying which labels
supervise each sample. That one structure expresses every set the package needs: in partial
mode the forget instances appear in the retain set too, with only their non-target task labels
switched on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from tune_unlearn.problems import MultiTaskData

ForgetMode = Literal["full", "partial"]


@dataclass(frozen=True)
class LabeledSet:
    """Sample indices and, per sample, which task labels count (``mask[i, t]``)."""

    indices: Tensor
    mask: Tensor

    def __len__(self) -> int:
        return int(self.indices.numel())

    @cached_property
    def uniform_mask(self) -> bool:
        """Every sample counts on the same tasks (one host sync, once per set)."""
        return bool((self.mask == self.mask[:1]).all())

    def to(self, device: torch.device | str) -> LabeledSet:
        return LabeledSet(self.indices.to(device), self.mask.to(device))


@dataclass(frozen=True)
class ForgetRequest:
    """The train instances to forget and the tasks to forget them from."""

    mode: ForgetMode
    target_tasks: tuple[str, ...]
    indices: Tensor
    #: Train instances deleted by earlier requests (same mode and tasks): out of the retain set
    #: and of the retrain, as if they had never been trained on.
    previous: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def target_columns(self, task_names: Sequence[str]) -> Tensor:
        return torch.tensor([name in self.target_tasks for name in task_names])

    def forget_set(self, task_names: Sequence[str]) -> LabeledSet:
        """The forget instances, supervised by their target-task labels only."""
        columns = self.target_columns(task_names)
        return LabeledSet(self.indices, columns.expand(len(self.indices), -1).clone())

    def kept_set(self, task_names: Sequence[str]) -> LabeledSet:
        """The forget instances' labels on the other tasks: knowledge to keep (partial mode)."""
        columns = ~self.target_columns(task_names)
        return LabeledSet(self.indices, columns.expand(len(self.indices), -1).clone())

    def retain_set(self, train_indices: Tensor, task_names: Sequence[str]) -> LabeledSet:
        """``train \\ F`` on every task, plus, in partial mode, ``F`` on the other tasks."""
        in_forget = torch.isin(train_indices, torch.cat([self.indices, self.previous]))
        mask = torch.ones(len(train_indices), len(task_names), dtype=torch.bool)
        mask[in_forget] = ~self.target_columns(task_names)
        keep = mask.any(dim=1)  # full mode: forget rows have no label left
        return LabeledSet(train_indices[keep], mask[keep])

    def fingerprint(self) -> str:
        fields: dict[str, object] = {
            "mode": self.mode,
            "tasks": sorted(self.target_tasks),
            "indices": self.indices.tolist(),
        }
        if len(self.previous):  # absent otherwise: a single request keeps its cached references
            fields["previous"] = sorted(self.previous.tolist())
        payload = json.dumps(fields)
        return hashlib.sha256(payload.encode()).hexdigest()


def read_index_file(path: Path) -> Tensor:
    """Sample indices from a JSON list or a text file of one integer per line."""
    text = path.read_text()
    values = json.loads(text) if path.suffix == ".json" else [int(v) for v in text.split()]
    return torch.tensor(sorted(set(int(v) for v in values)), dtype=torch.long)


def matching_rows(data: MultiTaskData, rows: Tensor, where: Mapping[str, float | int]) -> Tensor:
    """The ``rows`` whose task labels or attributes match every entry of ``where``."""
    selected = torch.ones(len(rows), dtype=torch.bool)
    for name, value in where.items():
        column = data.labels.get(name, data.attributes.get(name))
        if column is None:
            raise KeyError(f"no task or attribute named {name!r}")
        selected &= column[rows].cpu() == value
    return rows[selected]


def select_forget_indices(
    data: MultiTaskData,
    train_indices: Tensor,
    *,
    where: Mapping[str, float | int] | None = None,
    fraction: float = 1.0,
    seed: int = 0,
    index_file: Path | None = None,
) -> Tensor:
    """The train instances a request selects: an explicit file, or a label/attribute match.

    ``where`` maps task or attribute names to a value; a sample is selected when every entry
    matches. ``fraction`` then keeps a seeded random share of that group.
    """
    if index_file is not None:
        chosen = read_index_file(index_file)
        outside = chosen[~torch.isin(chosen, train_indices)]
        if len(outside):
            raise ValueError(
                f"{index_file}: {len(outside)} indices are not train samples "
                f"(first: {outside[:5].tolist()}); only train instances can be forgotten"
            )
    else:
        chosen = matching_rows(data, train_indices, where or {})
    if fraction < 1.0:
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(chosen), generator=generator)[: round(fraction * len(chosen))]
        chosen = chosen[keep.sort().values]
    if len(chosen) == 0:
        raise ValueError("the forget request selects no train instance")
    return chosen
