"""Dense (per-pixel) tasks, scored as the NYUv2 multi-task benchmarks score them.

Each sample is an image; its label is a map (``[H, W]`` classes or depths, ``[3, H, W]`` unit
normals) and its head's output is ``[C, H, W]``. The per-sample loss and score are taken over
that image's pixels, so the bootstrap, the probes and the per-example attacks, which work on one
number per sample, work on dense tasks unchanged:

- ``segmentation``: cross-entropy per pixel; score the image's mIoU, the mean over the classes
  present in its label or its prediction of ``|pred ∩ label| / |pred ∪ label|``; pixel accuracy
  reported.
- ``depth``: the head predicts log depth; loss ``|log ŷ − log y|`` per pixel (scale-aware L1);
  score the share of pixels with ``δ = max(ŷ/y, y/ŷ) < 1.25``; absolute relative error
  ``|ŷ − y| / y`` reported.
- ``normals``: loss ``1 − cos(n̂, n)`` per pixel; score the share of pixels whose angle to the
  true normal is under 30°; mean angular error (degrees) and the shares under 11.25° and 22.5°
  reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from tune_unlearn.problems._base import Task, TaskKind

#: A dense task's prediction counts as changed (churn) when its per-image score moves by more.
CHURN_TOLERANCE = 0.05


def _pixel_mean(values: Tensor) -> Tensor:
    return values.flatten(start_dim=1).mean(dim=1)


@dataclass(frozen=True)
class DenseTask(Task):
    """A per-pixel task: its per-sample loss and score are over the sample's pixels."""

    channels: int = 1

    @property
    def dense(self) -> bool:
        return True

    def output_shape(self, label_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.channels, *label_shape[-2:])

    def summary(self, output: Tensor, target: Tensor) -> Tensor:
        return self.per_sample_correct(output, target)

    def changed(self, before: Tensor, after: Tensor) -> Tensor:
        return (after - before).abs() > CHURN_TOLERANCE


@dataclass(frozen=True)
class SegmentationTask(DenseTask):
    """Per-pixel classes; scored by the image's mIoU."""

    kind: TaskKind = field(default="segmentation", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", self.num_classes)

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return _pixel_mean(F.cross_entropy(output, target.long(), reduction="none"))

    def per_sample_correct(self, output: Tensor, target: Tensor) -> Tensor:
        prediction = F.one_hot(output.argmax(dim=1), self.num_classes).flatten(1, 2)
        truth = F.one_hot(target.long(), self.num_classes).flatten(1, 2)
        intersection = (prediction & truth).sum(dim=1).float()  # [B, C]
        union = (prediction | truth).sum(dim=1).float()
        present = union > 0
        iou = torch.where(present, intersection / union.clamp(min=1.0), torch.zeros_like(union))
        return iou.sum(dim=1) / present.sum(dim=1).clamp(min=1)

    def reported_scores(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {"pixel_accuracy": _pixel_mean((output.argmax(dim=1) == target.long()).float())}


@dataclass(frozen=True)
class DepthTask(DenseTask):
    """Per-pixel depth (positive), predicted as its logarithm; scored by δ < 1.25."""

    kind: TaskKind = field(default="depth", init=False)
    tolerance: float = 0.25

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return _pixel_mean((output.squeeze(1) - target.float().log()).abs())

    def per_sample_correct(self, output: Tensor, target: Tensor) -> Tensor:
        # max(ŷ/y, y/ŷ) = exp|log ŷ − log y|: the ratio test without overflow.
        log_ratio = (output.squeeze(1) - target.float().log()).abs()
        return _pixel_mean((log_ratio < math.log1p(self.tolerance)).float())

    def reported_scores(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        depth = target.float()
        return {"abs_rel": _pixel_mean((output.squeeze(1).exp() - depth).abs() / depth)}


@dataclass(frozen=True)
class NormalsTask(DenseTask):
    """Per-pixel unit surface normals; scored by the share of pixels within 30°."""

    kind: TaskKind = field(default="normals", init=False)
    channels: int = 3
    #: Degrees.
    tolerance: float = 30.0

    def _cosine(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cosine_similarity(output, target.float(), dim=1, eps=1e-8)

    def angles(self, output: Tensor, target: Tensor) -> Tensor:
        """Per-pixel angle in degrees between the predicted and the true normal."""
        return torch.rad2deg(torch.acos(self._cosine(output, target).clamp(-1.0, 1.0)))

    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return _pixel_mean(1.0 - self._cosine(output, target))

    def per_sample_correct(self, output: Tensor, target: Tensor) -> Tensor:
        return _pixel_mean((self.angles(output, target) < self.tolerance).float())

    def reported_scores(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        angles = self.angles(output, target)
        return {
            "mean_angle": _pixel_mean(angles),
            "within_11_25": _pixel_mean((angles < 11.25).float()),
            "within_22_5": _pixel_mean((angles < 22.5).float()),
        }
