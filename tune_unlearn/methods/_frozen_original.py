"""The original model, frozen when a run starts: the reference NPO and SCRUB measure against."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from tune_unlearn.problems import Batch, MultiTaskModel


class FrozenOriginal:
    """A frozen copy of the model as the run starts (still the original then), with its outputs
    on a step's batches computed at most once per step and batch, without gradients."""

    def __init__(self, model: MultiTaskModel) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._step = -1
        self._outputs: dict[str, dict[str, Tensor]] = {}

    def outputs(self, which: str, batch: Batch, step: int) -> dict[str, Tensor]:
        """The original's outputs per task on this step's ``which`` batch (``forget`` or
        ``retain``)."""
        if step != self._step:
            self._outputs, self._step = {}, step
        if which not in self._outputs:
            with torch.no_grad():
                self._outputs[which] = self.model(batch.inputs)
        return self._outputs[which]
