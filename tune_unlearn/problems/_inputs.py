"""Inputs read by index from a PyTorch ``Dataset``, for data sets larger than memory.

A problem's labels and attributes are one number per sample and task: they stay in memory,
where the forget, retain and probe sets are drawn from them by index. Its inputs (images,
token sequences) need not: :class:`DatasetInputs` stands where an input tensor would, and reads
only the rows a step, an evaluation chunk or a training batch asks for, through an ordinary
``DataLoader`` (worker processes, pinned memory) wherever the rows are known ahead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset


class DatasetInputs:
    """A ``Dataset`` of input tensors (``dataset[i]`` is sample i's input, or a tuple whose
    first item is) behaving, for indexing, like a tensor of all the inputs.

    ``batch_size`` caps the rows loaded at once by evaluation passes; ``num_workers`` and
    ``pin_memory`` go to the ``DataLoader`` used where rows are known ahead (evaluation and
    reference training).
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        *,
        batch_size: int = 512,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self),)

    def to(self, device: torch.device | str) -> DatasetInputs:
        return DatasetInputs(
            self.dataset, batch_size=self.batch_size, num_workers=self.num_workers, device=device
        )

    def __getitem__(self, rows: Tensor | slice | int) -> Tensor:
        """The inputs at ``rows`` (an index tensor, a slice or an int), stacked, on the device."""
        if isinstance(rows, int):
            return self[torch.tensor([rows])][0]
        if isinstance(rows, slice):
            rows = torch.arange(len(self))[rows]
        if rows.dtype == torch.bool:
            rows = rows.nonzero().flatten()
        samples = [_input_of(self.dataset[int(i)]) for i in rows.cpu().tolist()]
        if not samples:
            raise IndexError("no rows asked for")
        return torch.stack(samples).to(self.device, non_blocking=True)

    def batches(self, rows: Tensor, batch_size: int) -> Iterator[Tensor]:
        """The inputs at ``rows`` in order, ``batch_size`` at a time, loaded ahead by workers."""
        loader = DataLoader(
            Subset(self.dataset, rows.cpu().tolist()),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=_stack_inputs,
            pin_memory=self.device.type == "cuda",
        )
        for batch in loader:
            yield batch.to(self.device, non_blocking=True)


def _input_of(sample: Any) -> Tensor:
    value = sample[0] if isinstance(sample, (tuple, list)) else sample
    if not isinstance(value, Tensor):
        value = torch.as_tensor(value)
    return value


def _stack_inputs(samples: list[Any]) -> Tensor:
    return torch.stack([_input_of(s) for s in samples])
