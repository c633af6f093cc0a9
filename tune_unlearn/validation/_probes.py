"""Probe families (DESIGN §6): where validation looks for damage that tuning never saw.

Every family but ``static_retain`` draws from ``holdout`` only. A family is a small class with
one method, :meth:`ProbeFamily.build`; a problem may register its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from tune_unlearn.forget import LabeledSet
from tune_unlearn.registry import Registry, subclass_of
from tune_unlearn.validation._context import Probe, ValidationContext


class ProbeFamily(ABC):
    """Builds one probe from the validation context. ``dependent`` families look for damage
    next to the forgotten data: their failure under a passing ``static_retain`` is masked
    collapse."""

    name: ClassVar[str]
    dependent: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = params

    @abstractmethod
    def build(self, ctx: ValidationContext) -> Probe: ...


PROBES: Registry[type[ProbeFamily]] = Registry(
    "probe family", "tune_unlearn.probes", accepts=subclass_of(ProbeFamily)
)


def _nearest(ctx: ValidationContext, anchors: Tensor, pool: Tensor, k: int) -> Tensor:
    """The union of each anchor's ``k`` nearest ``pool`` samples in backbone feature space."""
    distances = torch.cdist(ctx.features(anchors), ctx.features(pool))
    nearest = distances.topk(min(k, len(pool)), dim=1, largest=False).indices.flatten().cpu()
    return pool[nearest.unique()]


@PROBES.add
class DependentNeighbors(ProbeFamily):
    """Holdout samples nearest the forget instances (k-NN on the original's features); every
    task label is to be kept, beyond what the retrained reference loses."""

    name = "dependent_neighbors"
    dependent = True

    def build(self, ctx: ValidationContext) -> Probe:
        request = ctx.experiment.request
        neighbours = _nearest(ctx, request.indices, ctx.holdout, int(self.params.get("k", 5)))
        return Probe(self.name, ctx.all_tasks(neighbours))


@PROBES.add
class SharedLabel(ProbeFamily):
    """Holdout samples that share a target-task label value with the forget set."""

    name = "shared_label"
    dependent = True

    def build(self, ctx: ValidationContext) -> Probe:
        data, request = ctx.experiment.data, ctx.experiment.request
        holdout = ctx.holdout.to(data.device)
        chosen = torch.zeros(len(holdout), dtype=torch.bool, device=holdout.device)
        for task in request.target_tasks:
            values = data.labels[task][request.indices.to(holdout.device)].unique()
            chosen |= torch.isin(data.labels[task][holdout], values)
        return Probe(self.name, ctx.all_tasks(ctx.holdout[chosen.cpu()]))


@PROBES.add
class SharedAttribute(ProbeFamily):
    """Holdout samples that share a problem attribute value with the forget set (``attribute``;
    default the problem's first). Each attribute value counts in proportion to the forget set."""

    name = "shared_attribute"
    dependent = True

    def build(self, ctx: ValidationContext) -> Probe:
        problem, data, request = ctx.experiment.problem, ctx.experiment.data, ctx.experiment.request
        if not problem.attributes:
            raise ValueError(f"problem {type(problem).__name__} declares no attributes")
        attribute = str(self.params.get("attribute", problem.attributes[0]))
        if attribute not in data.attributes:
            raise ValueError(f"no attribute {attribute!r}; valid: {', '.join(problem.attributes)}")
        column = data.attributes[attribute].cpu()
        values, counts = column[request.indices].unique(return_counts=True)
        dominant = values[counts >= counts.max() * 0.5]  # the forget set's typical values
        return Probe(self.name, ctx.all_tasks(ctx.holdout[torch.isin(column[ctx.holdout], dominant)]))


@PROBES.add
class CrossTask(ProbeFamily):
    """Partial mode: the forget instances' retained tasks, and their holdout neighbours' labels
    on those tasks."""

    name = "cross_task"
    dependent = True

    def build(self, ctx: ValidationContext) -> Probe:
        request = ctx.experiment.request
        if request.mode != "partial":
            raise ValueError("cross_task probes need a partial-mode request")
        kept = ~request.target_columns(ctx.task_names)
        neighbours = _nearest(ctx, request.indices, ctx.holdout, int(self.params.get("k", 3)))
        indices = torch.cat([request.indices, neighbours])
        return Probe(self.name, LabeledSet(indices, kept.expand(len(indices), -1).clone()))


@PROBES.add
class Unrelated(ProbeFamily):
    """A seeded random holdout sample: damage far from the request (and prediction churn)."""

    name = "unrelated"

    def build(self, ctx: ValidationContext) -> Probe:
        size = int(self.params.get("size", 300))
        generator = torch.Generator().manual_seed(int(self.params.get("seed", 0)))
        chosen = ctx.holdout[torch.randperm(len(ctx.holdout), generator=generator)[:size]]
        return Probe(self.name, ctx.all_tasks(chosen.sort().values))


@PROBES.add
class StaticRetain(ProbeFamily):
    """The classic check: retain *training* samples, which the unlearning itself descends on.
    Kept to show what it alone would conclude."""

    name = "static_retain"

    def build(self, ctx: ValidationContext) -> Probe:
        retain = ctx.experiment.sets["retain"]
        size = int(self.params.get("size", 500))
        generator = torch.Generator().manual_seed(int(self.params.get("seed", 0)))
        chosen = torch.randperm(len(retain), generator=generator)[:size].sort().values
        return Probe(self.name, LabeledSet(retain.indices[chosen], retain.mask[chosen]))
