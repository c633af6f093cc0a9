"""Probe families: where validation looks for damage that tuning never saw.

Every family but ``static_retain`` draws from ``holdout`` only. A family is a small class with
one method, :meth:`ProbeFamily.build`; a problem may register its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from tune_unlearn.hyperparameters import Param, problems
from tune_unlearn.problems.forget import LabeledSet
from tune_unlearn.registry import Registry, subclass_of
from tune_unlearn.validation._context import Probe, ValidationContext


class ProbeFamily(ABC):
    """Builds one probe from the validation context. ``dependent`` families look for damage
    next to the forgotten data: their proven failure under a passing ``static_retain`` is
    masked collapse. ``parameters`` declares each parameter (:class:`Param`: default, type,
    range); an unknown parameter or a value out of range is an error at construction."""

    name: ClassVar[str]
    dependent: ClassVar[bool] = False
    parameters: ClassVar[dict[str, Param]] = {}

    def __init__(self, **params: Any) -> None:
        found = problems(self.parameters, params)
        if found:
            raise ValueError("; ".join(f"{self.name}.{key}: {message}" for key, message in found))
        self.params = {**{k: p.default for k, p in self.parameters.items()}, **params}

    def not_applicable(self, ctx: ValidationContext) -> str | None:
        """Why this family does not apply to the request, or ``None`` when it does."""
        return None

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
    parameters: ClassVar[dict[str, Param]] = {"k": Param(5, ge=1, doc="neighbours per forget instance")}

    def build(self, ctx: ValidationContext) -> Probe:
        request = ctx.inputs.request
        neighbours = _nearest(ctx, request.indices, ctx.holdout, int(self.params["k"]))
        return Probe(self.name, ctx.all_tasks(neighbours))


@PROBES.add
class SharedLabel(ProbeFamily):
    """Holdout samples whose labels on the classification target tasks form a combination that
    at least ``min_share`` of the forget set holds (forgetting the 3s: the held-out 3s), judged on every
    task. A combination, not any single label: in full mode every binary task label is shared
    by half of all samples, and the probe would be the whole holdout."""

    name = "shared_label"
    dependent = True
    parameters: ClassVar[dict[str, Param]] = {
        "min_share": Param(0.05, gt=0.0, le=1.0, doc="a label combination's least share of the forget set")
    }

    @staticmethod
    def _label_tasks(ctx: ValidationContext) -> list[str]:
        """The classification target tasks: a regression label is a continuous value that no
        other sample shares, so it cannot define a group."""
        request = ctx.inputs.request
        return [
            t.name
            for t in ctx.inputs.problem.tasks
            if t.name in request.target_tasks and t.kind == "classification"
        ]

    def not_applicable(self, ctx: ValidationContext) -> str | None:
        if not self._label_tasks(ctx):
            return (
                "the request has no per-sample classification target task "
                "(regression values and per-pixel labels define no group)"
            )
        return None

    def build(self, ctx: ValidationContext) -> Probe:
        data, request = ctx.inputs.data, ctx.inputs.request
        targets = self._label_tasks(ctx)
        columns = [data.labels[t].cpu() for t in targets]
        forget = torch.stack([c[request.indices] for c in columns], dim=1)
        combos, counts = forget.unique(dim=0, return_counts=True)
        common = combos[counts >= float(self.params["min_share"]) * len(forget)]
        holdout = torch.stack([c[ctx.holdout] for c in columns], dim=1)
        chosen = (holdout[:, None, :] == common[None, :, :]).all(dim=2).any(dim=1)
        return Probe(self.name, ctx.all_tasks(ctx.holdout[chosen]))


@PROBES.add
class SharedAttribute(ProbeFamily):
    """Holdout samples that share a problem attribute (``attribute``; default the problem's
    first) with the forget set, each attribute value counting in proportion to the forget set:
    a seeded sample of the holdout stratified to the forget set's attribute distribution, as
    large as the holdout allows (at most ``size``)."""

    name = "shared_attribute"
    dependent = True
    parameters: ClassVar[dict[str, Param]] = {
        "attribute": Param("", doc="the problem attribute to stratify by (default: its first)"),
        "size": Param(1000, ge=1, doc="samples drawn at most"),
        "seed": Param(0, ge=0),
    }

    def not_applicable(self, ctx: ValidationContext) -> str | None:
        problem = ctx.inputs.problem
        if not problem.attributes:
            return f"problem {type(problem).__name__} declares no attributes"
        return None

    def build(self, ctx: ValidationContext) -> Probe:
        problem, data, request = ctx.inputs.problem, ctx.inputs.data, ctx.inputs.request
        attribute = str(self.params["attribute"] or problem.attributes[0])
        if attribute not in data.attributes:
            raise ValueError(f"no attribute {attribute!r}; valid: {', '.join(problem.attributes)}")
        column = data.attributes[attribute].cpu()
        values, counts = column[request.indices].unique(return_counts=True)
        shares = counts.double() / counts.sum()
        available = torch.stack([(column[ctx.holdout] == v).sum() for v in values]).double()
        total = min(float((available / shares).min()), float(self.params["size"]))
        generator = torch.Generator().manual_seed(int(self.params["seed"]))
        chosen = []
        for value, share in zip(values, shares, strict=True):
            pool = ctx.holdout[column[ctx.holdout] == value]
            take = round(float(share) * total)
            chosen.append(pool[torch.randperm(len(pool), generator=generator)[:take]])
        return Probe(self.name, ctx.all_tasks(torch.cat(chosen).sort().values))


@PROBES.add
class CrossTask(ProbeFamily):
    """Partial mode: the holdout neighbours of the forget instances (k-NN), judged on the tasks
    the request keeps. (The forget instances' own kept labels are training data; the study
    measures them as the ``kept`` set.)"""

    name = "cross_task"
    dependent = True
    parameters: ClassVar[dict[str, Param]] = {"k": Param(5, ge=1, doc="neighbours per forget instance")}

    def not_applicable(self, ctx: ValidationContext) -> str | None:
        if ctx.inputs.request.mode != "partial":
            return "a full-mode request keeps no task of the forget instances"
        return None

    def build(self, ctx: ValidationContext) -> Probe:
        request = ctx.inputs.request
        kept = ~request.target_columns(ctx.task_names)
        neighbours = _nearest(ctx, request.indices, ctx.holdout, int(self.params["k"]))
        return Probe(self.name, LabeledSet(neighbours, kept.expand(len(neighbours), -1).clone()))


@PROBES.add
class Unrelated(ProbeFamily):
    """A seeded random holdout sample: damage far from the request (and prediction churn)."""

    name = "unrelated"
    parameters: ClassVar[dict[str, Param]] = {
        "size": Param(300, ge=1, doc="holdout samples drawn"),
        "seed": Param(0, ge=0),
    }

    def build(self, ctx: ValidationContext) -> Probe:
        generator = torch.Generator().manual_seed(int(self.params["seed"]))
        chosen = ctx.holdout[
            torch.randperm(len(ctx.holdout), generator=generator)[: int(self.params["size"])]
        ]
        return Probe(self.name, ctx.all_tasks(chosen.sort().values))


@PROBES.add
class StaticRetain(ProbeFamily):
    """The classic check: retain *training* samples, which the unlearning itself descends on.
    Kept to show what it alone would conclude."""

    name = "static_retain"
    parameters: ClassVar[dict[str, Param]] = {
        "size": Param(500, ge=1, doc="retain samples drawn"),
        "seed": Param(0, ge=0),
    }

    def build(self, ctx: ValidationContext) -> Probe:
        retain = ctx.inputs.sets.retain
        generator = torch.Generator().manual_seed(int(self.params["seed"]))
        chosen = torch.randperm(len(retain), generator=generator)[: int(self.params["size"])].sort().values
        return Probe(self.name, LabeledSet(retain.indices[chosen], retain.mask[chosen]))
