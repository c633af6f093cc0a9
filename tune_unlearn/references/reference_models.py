"""A study's reference models as values: what to train (a :class:`ReferencePlan`), what it
would cost, and the models themselves (:func:`load_references`), trained or read from the
cache. ``training.py`` trains and caches one model; this module decides which.

The original trains on the whole train split with the problem's seed. The retrain members
train with seeds ``seed + 0 … K − 1`` on the retain set, or, for a bank, on the train set less
every request that shares it: the plan's ``retrain_request`` is what they never saw, and it is
the cache key, so the requests of a bank train it once.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

from tune_unlearn.config.study_config import ReferencesConfig
from tune_unlearn.errors import UsageError
from tune_unlearn.problems import MultiTaskData, Problem
from tune_unlearn.problems.forget import ForgetRequest, LabeledSet
from tune_unlearn.references.training import (
    Reference,
    ReferenceCache,
    default_cache_dir,
    estimate_training_seconds,
    train_members,
    train_model,
)

#: What starting the ensemble's worker processes costs (each imports torch and receives the
#: data): 8-10 s measured on a two-core machine. Members whose parallel training would save less than
#: this train one after another in this process instead.
PROCESS_START_SECONDS = 10.0


class ReferenceBudgetError(UsageError):
    """Training the uncached references would exceed ``references.budget_hours``."""


@dataclass(frozen=True)
class ReferencePlan:
    """Which reference models a study needs and what each trains on."""

    config: ReferencesConfig
    problem: Problem
    data: MultiTaskData
    device: torch.device
    seed: int
    #: The original's training set: every train instance, every task.
    all_train: LabeledSet
    #: What the retrain members leave out (this request, or a bank's requests), and the set
    #: they train on.
    retrain_request: ForgetRequest
    retrain_set: LabeledSet

    @property
    def member_seeds(self) -> list[int]:
        """The retrain ensemble's seeds (empty: none trained, a given model or reference-free)."""
        ensemble = self.config.ensemble()
        return [self.seed + i for i in range(ensemble.seeds)] if ensemble else []

    def cache(self) -> ReferenceCache:
        return ReferenceCache(self.config.cache_dir or default_cache_dir())

    def original_key(self) -> str:
        return self.cache().key("original", self.problem, self.seed)

    def member_keys(self) -> list[str]:
        cache = self.cache()
        return [cache.key("retrain", self.problem, s, self.retrain_request) for s in self.member_seeds]

    @cached_property
    def seconds_per_model(self) -> float:
        """One model's estimated training seconds here (a few timed steps; measured once)."""
        return estimate_training_seconds(self.problem, self.data, self.all_train)

    def jobs(self, members: int) -> int:
        """Processes to train ``members`` in: one on an accelerator, else as cores allow, or
        one when starting the processes would cost more than they save (``n_jobs`` unset)."""
        ensemble = self.config.ensemble()
        if self.device.type != "cpu" or ensemble is None or members <= 1:
            return 1
        if ensemble.n_jobs is not None:
            return max(1, min(members, ensemble.n_jobs))
        jobs = max(1, min(members, os.cpu_count() or 1))
        saved = self.seconds_per_model * (members - math.ceil(members / jobs))
        return jobs if saved >= PROCESS_START_SECONDS else 1

    @property
    def members_on_one_thread(self) -> bool:
        """Whether a member trained in this process uses one torch thread, as a worker does:
        on a CPU where :meth:`jobs` chooses by timing (``n_jobs`` unset), so that how busy the
        machine was when it chose does not change the members' weights."""
        ensemble = self.config.ensemble()
        return self.device.type == "cpu" and ensemble is not None and ensemble.n_jobs is None

    def missing_cost(self) -> tuple[int, float]:
        """How many references are not cached yet, and the estimated seconds to train them
        (the ensemble in its parallel processes). Costs a few training steps, trains nothing."""
        cache = self.cache()
        missing_original = self.config.original is None and not cache.cached("original", self.original_key())
        missing_members = sum(not cache.cached("retrain", key) for key in self.member_keys())
        if not missing_original and not missing_members:
            return 0, 0.0
        rounds = missing_original + math.ceil(missing_members / self.jobs(missing_members))
        return missing_original + missing_members, self.seconds_per_model * rounds

    def check_budget(self, cost: tuple[int, float] | None = None) -> None:
        """Refuse (:class:`ReferenceBudgetError`) references estimated over the budget."""
        count, seconds = cost if cost is not None else self.missing_cost()
        if seconds > self.config.budget_hours * 3600:
            raise ReferenceBudgetError(
                f"training the {count} uncached reference model(s) is estimated at "
                f"{seconds / 3600:.1f} h, over references.budget_hours ({self.config.budget_hours:g}); "
                "lower references.retrain.seeds or raise references.budget_hours"
            )


@dataclass(frozen=True)
class ReferenceModels:
    """The original and the retrain members (empty reference-free), and what was trained now
    (the rest came from the cache or from the user's files)."""

    original: Reference
    retrain_members: list[Reference]
    trained: list[str] = field(default_factory=list)


def load_references(
    plan: ReferencePlan, *, load_state: Callable[[str], dict[str, Tensor]], progress: bool
) -> ReferenceModels:
    """The plan's models, within its budget: the user's files as given (``load_state``), the
    rest from the cache or trained into it."""
    plan.check_budget()
    cache = plan.cache()
    trained: list[str] = []
    if plan.config.original is not None:  # the user's own model: nothing to train
        original = Reference("original", load_state(plan.config.original), math.nan)
    else:
        train = functools.partial(
            train_model,
            plan.problem,
            plan.data,
            plan.all_train,
            seed=plan.seed,
            description="training original",
            progress=progress,
        )
        original, was_trained = cache.get_or_train("original", plan.original_key(), train)
        if was_trained:
            trained.append("original")
    retrain = plan.config.retrain
    members: list[Reference] = []
    if isinstance(retrain, str):  # one given model: no ensemble, no spread
        members = [Reference("retrain", load_state(retrain), math.nan)]
    elif plan.member_seeds:
        keys = plan.member_keys()
        by_key = dict(zip(keys, plan.member_seeds, strict=True))

        def train_missing(missing: list[str]) -> list[tuple[dict[str, Tensor], float]]:
            return train_members(
                plan.problem,
                plan.data,
                plan.retrain_set,
                [by_key[k] for k in missing],
                n_jobs=plan.jobs(len(missing)),
                one_thread=plan.members_on_one_thread,
                description="training retrain ensemble",
                progress=progress,
            )

        loaded = cache.get_or_train_many("retrain", keys, train_missing)
        members = [reference for reference, _ in loaded]
        count = sum(was_trained for _, was_trained in loaded)
        if count:
            trained.append(f"retrain ×{count}")
    return ReferenceModels(original, members, trained)
