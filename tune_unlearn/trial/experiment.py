"""Everything a study holds fixed across its trials.

An :class:`Experiment` is built once per process: the problem's data on the device, the splits,
the forget request and the sets it induces, the reference models (a
:class:`~tune_unlearn.references.reference_models.ReferencePlan`, loaded as values) and their scores.
:func:`tune_unlearn.trial.configuration_run.run` unlearns a copy of the original with one
configuration and measures it. The ``holdout`` split is deliberately absent from everything
here: it belongs to the validators alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from tune_unlearn.config.study_config import ForgetConfig, StudyConfig
from tune_unlearn.errors import UsageError
from tune_unlearn.methods import METHODS, UnlearningMethod, UnlearningSetup
from tune_unlearn.problems import MultiTaskData, MultiTaskModel, Problem
from tune_unlearn.problems.forget import (
    ForgetRequest,
    LabeledSet,
    matching_rows,
    read_index_file,
    select_forget_indices,
)
from tune_unlearn.references.attacks import AttackGround, RecoveryMeasures
from tune_unlearn.references.reference_models import ReferenceBudgetError, ReferencePlan, load_references
from tune_unlearn.references.training import (
    Reference,
    load_state,
    model_from_state,
)
from tune_unlearn.scoring.evaluation import PerSample, evaluate
from tune_unlearn.scoring.metrics import score_key, trainable_vector
from tune_unlearn.tracking.runs import resolve_tracking_uri
from tune_unlearn.trial.guard import CollapseGuard

__all__ = ["Experiment", "ReferenceBudgetError", "request_instances", "resolve_device", "stream_instances"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the study asks for device 'cuda' but no CUDA device is available")
    return torch.device(name)


def request_instances(data: MultiTaskData, train: Tensor, forget: ForgetConfig, problem_seed: int) -> Tensor:
    """The train instances a deletion request selects (its seed defaults to the problem's)."""
    return select_forget_indices(
        data,
        train,
        where=forget.where,
        fraction=forget.fraction,
        seed=problem_seed if forget.seed is None else forget.seed,
        index_file=forget.index_file,
    )


def stream_instances(
    data: MultiTaskData, train: Tensor, requests: list[ForgetConfig], problem_seed: int
) -> list[Tensor]:
    """Each request's train instances, in order; a selection that fails is a
    :class:`UsageError` at ``requests.<i>``."""
    chosen = []
    for number, request in enumerate(requests):
        try:
            chosen.append(request_instances(data, train, request, problem_seed))
        except (KeyError, ValueError) as error:
            raise UsageError(f"requests.{number}: {error}") from None
    return chosen


class Experiment:
    """The fixed part of a study: problem, data, request, sets, references, their scores."""

    def __init__(
        self,
        config: StudyConfig,
        *,
        progress: bool = True,
        references: bool = True,
        tracking_uri: str | None = None,
        trust_pickle: bool = False,
        method: type[UnlearningMethod] | None = None,
    ) -> None:
        """``references=False`` stops before the references (to estimate their cost: ``check``).
        ``tracking_uri`` is the store ``models:/`` and ``runs:/`` references resolve against
        (default: the study's); ``trust_pickle`` lets one without a state dict be unpickled.
        ``method``: the method class to run (default: the registered one the study file names),
        so a method object need not be registered to be tuned."""
        self.config = config
        self.method_class: type[UnlearningMethod] = method or METHODS.get(config.method.name)
        self.tracking_uri = resolve_tracking_uri(config, tracking_uri)
        self.trust_pickle = trust_pickle
        self.device = resolve_device(config.device)
        self.problem: Problem = config.problem.build()
        self.task_names = self.problem.task_names
        cpu_data = self.problem.load_data()
        # The holdout split is dropped here: it belongs to the validators alone
        # (tune_unlearn.validation), so no trial can tune on what validation will judge.
        splits = self.problem.split(len(cpu_data), config.problem.seed)
        self.splits = {name: splits[name] for name in ("train", "val")}
        forget_cfg = config.forget
        targets = (
            tuple(forget_cfg.target_tasks or self.task_names)
            if forget_cfg.mode == "partial"
            else tuple(self.task_names)
        )
        indices = request_instances(cpu_data, self.splits["train"], forget_cfg, config.problem.seed)
        previous = (
            read_index_file(forget_cfg.previously_forgotten)
            if forget_cfg.previously_forgotten is not None
            else torch.zeros(0, dtype=torch.long)
        )
        repeated = int(torch.isin(previous, indices).sum())
        if repeated:
            raise ValueError(
                f"forget.previously_forgotten: {repeated} of its instances are in this request too; "
                "an instance is deleted once"
            )
        self.request = ForgetRequest(forget_cfg.mode, targets, indices, previous)
        self.retrain_request = self._bank_request(cpu_data) or self.request
        self.data: MultiTaskData = cpu_data.to(self.device)
        self.sets: dict[str, LabeledSet] = {
            "val": LabeledSet(
                self.splits["val"],
                torch.ones(len(self.splits["val"]), len(self.task_names), dtype=torch.bool),
            ),
            "forget": self.request.forget_set(self.task_names),
            "retain": self.request.retain_set(self.splits["train"], self.task_names),
        }
        if self.request.mode == "partial":
            self.sets["kept"] = self.request.kept_set(self.task_names)
        # What the retrain members train on: the retain set, or a bank's (less every request
        # that shares it).
        self.retrain_set = (
            self.sets["retain"]
            if self.retrain_request is self.request
            else self.retrain_request.retain_set(self.splits["train"], self.task_names)
        )
        self.reference_plan = ReferencePlan(
            config=config.references,
            problem=self.problem,
            data=self.data,
            device=self.device,
            seed=config.problem.seed,
            all_train=LabeledSet(
                self.splits["train"],
                torch.ones(len(self.splits["train"]), len(self.task_names), dtype=torch.bool),
            ),
            retrain_request=self.retrain_request,
            retrain_set=self.retrain_set,
        )
        if config.references.retrain is False:
            # Reference-free: held-out samples of the forget set's own group stand in for how
            # an honest retrain scores the forgotten instances (config refuses requests that
            # remove a whole group, where no such stand-in exists).
            peers = matching_rows(cpu_data, self.splits["val"], forget_cfg.where)
            if len(peers) == 0:
                raise ValueError("forget.where: no val sample of the forget set's group to compare with")
            self.sets["peers"] = LabeledSet(
                peers, torch.ones(len(peers), len(self.task_names), dtype=torch.bool)
            )
        # What each trial scores: every set whole, except the (large) retain set, sampled.
        self.scored_sets = {
            **self.sets,
            "retain": _sample(self.sets["retain"], config.evaluation.retain_sample, config.problem.seed),
        }
        self._rows = torch.cat([s.indices for s in self.scored_sets.values()]).unique()
        self.setup = UnlearningSetup(
            data=self.data,
            tasks=self.problem.tasks,
            target=self.request.target_columns(self.task_names).to(self.device),
            forget=self.sets["forget"].to(self.device),
            retain=self.sets["retain"].to(self.device),
        )
        # What one retrain computes (a backward pass per sample per epoch): compute_cost's unit.
        self.retrain_sample_gradients = self.problem.recipe().epochs * len(self.sets["retain"])
        self._check_relearning_sample()
        if not references:
            return
        models = load_references(self.reference_plan, load_state=self.load_model_state, progress=progress)
        self.trained_references = models.trained
        self.retrain_members = models.retrain_members
        self.references: dict[str, Reference] = {"original": models.original}
        if self.retrain_members:
            self.references["retrain"] = self.retrain_members[0]
        original_model = self.original_model()
        self.reference_scores: dict[str, float] = self.score("original", self.evaluate(original_model))
        self.retrain_results = [self.evaluate(self.model_from(r.state_dict)) for r in self.retrain_members]
        if self.retrain_results:
            self.reference_scores.update(self._ensemble_scores(self.retrain_results))
        self.original_vector = trainable_vector(original_model)
        guard = config.collapse_guard
        self.guard = (
            CollapseGuard.on_sample(
                self.original_model(),
                self.data,
                self.splits["val"],
                self.problem.tasks,
                floor=guard.floor,
                size=guard.sample_size,
                seed=config.problem.seed,
            )
            if guard.enabled
            else None
        )

    # -- references ---------------------------------------------------------------------------
    def _bank_request(self, cpu_data: MultiTaskData) -> ForgetRequest | None:
        """What a bank's members never saw, as one request (so that every request sharing the
        bank has the same cache key: trained once); ``None`` for a per-request ensemble.
        A bank that saw an instance of this request, or of an earlier one, cannot judge it.
        The stream's own file (``check`` on it) names the bank by its requests."""
        ensemble = self.config.references.ensemble()
        requests = self.config.requests
        if self.config.references.stream_bank() and requests:
            chosen = stream_instances(cpu_data, self.splits["train"], requests, self.config.problem.seed)
            left_out = torch.cat(chosen).unique()  # sorted, as an index file reads back
        elif ensemble is not None and ensemble.left_out is not None:
            left_out = read_index_file(ensemble.left_out)
        else:
            return None
        deleted = torch.cat([self.request.indices, self.request.previous])
        seen = int((~torch.isin(deleted, left_out)).sum())
        if seen:
            raise UsageError(
                f"references.retrain.left_out: the bank's members saw {seen} of the {len(deleted)} "
                "instance(s) this request and earlier ones delete, so none of them is a model that "
                "never saw the forget set; train a bank that leaves them out, or use scope `request`"
            )
        return ForgetRequest(self.request.mode, self.request.target_tasks, left_out)

    def missing_reference_cost(self) -> tuple[int, float]:
        """How many references are not cached yet, and the estimated seconds to train them
        (:meth:`ReferencePlan.missing_cost`)."""
        return self.reference_plan.missing_cost()

    def check_reference_budget(self, cost: tuple[int, float] | None = None) -> None:
        """Refuse (:class:`ReferenceBudgetError`) references estimated over the budget."""
        self.reference_plan.check_budget(cost)

    def load_model_state(self, spec: str) -> dict[str, Tensor]:
        """A model given by the user (a file, ``models:/``, ``runs:/``), loaded safely."""
        return load_state(spec, tracking_uri=self.tracking_uri, trust_pickle=self.trust_pickle)

    @property
    def compute_budget(self) -> float | None:
        """Training seconds of one retrain (the ensemble's mean; else the original): what
        unlearning must undercut. ``None`` when both came from checkpoints (cost unknown)."""
        seconds = [r.train_seconds for r in self.retrain_members if math.isfinite(r.train_seconds)]
        if seconds:
            return float(sum(seconds) / len(seconds))
        original = self.references["original"].train_seconds
        return original if math.isfinite(original) else None

    @property
    def nonmembers(self) -> LabeledSet:
        """Membership inference's non-members: ``val``; reference-free, the forget set's
        held-out peers, which is what forgotten instances should look like without a retrain
        to ask."""
        return self.sets.get("peers", self.sets["val"])

    def model_from(self, state_dict: Mapping[str, Tensor]) -> MultiTaskModel:
        return model_from_state(self.problem, state_dict, self.device)

    def original_model(self) -> MultiTaskModel:
        """A fresh copy of the original, on this experiment's device (unlearning edits it)."""
        return self.model_from(self.references["original"].state_dict)

    def _check_relearning_sample(self) -> None:
        """A study searching on ``relearn_recovery`` needs forget instances beyond the
        attacker's sample to judge recovery on: known once the forget set is, before any trial."""
        if "relearn_recovery" not in self.config.named_metrics:
            return
        size, forget = self.config.evaluation.relearning.sample_size, len(self.sets["forget"])
        if forget <= size:
            raise UsageError(
                f"evaluation.relearning.sample_size: the attacker's sample ({size}) takes all "
                f"{forget} forget instances, leaving none to judge recovery on; set it below {forget}"
            )

    def attack_ground(
        self, original: MultiTaskModel | None = None, retrains: Sequence[MultiTaskModel] | None = None
    ) -> AttackGround:
        """What the recovery attacks read; the models built from the references unless given."""
        return AttackGround(
            data=self.data,
            tasks=self.problem.tasks,
            target_columns=self.request.target_columns(self.task_names),
            forget=self.sets["forget"],
            retain=self.sets["retain"],
            recipe_lr=self.problem.recipe().lr,
            batch_size=self.config.evaluation.batch_size,
            original=self.original_model() if original is None else original,
            retrains=tuple(
                [self.model_from(r.state_dict) for r in self.retrain_members]
                if retrains is None
                else retrains
            ),
        )

    @cached_property
    def recovery(self) -> RecoveryMeasures:
        """The trials' recovery metrics (``relearn_recovery``, ``quantization_recovery``)."""
        evaluation = self.config.evaluation
        return RecoveryMeasures(self.attack_ground, evaluation.relearning, evaluation.quantization)

    # -- measuring ----------------------------------------------------------------------------
    def score(self, model_kind: str, per_sample: PerSample) -> dict[str, float]:
        """Flat ``score/<model>/<set>/<task>`` entries for every set of this experiment, and
        ``reported/<model>/<set>/<task>/<figure>`` for the figures a task reports beside its
        score (a dense task's pixel accuracy, absolute relative error, angle figures)."""
        out = {}
        for set_name, labeled in self.scored_sets.items():
            for task, value in per_sample.scores(labeled, self.task_names).items():
                out[score_key(model_kind, set_name, task)] = value
            for (task, figure), value in per_sample.reported_means(labeled, self.task_names).items():
                out[f"reported/{model_kind}/{set_name}/{task}/{figure}"] = value
        return out

    def _ensemble_scores(self, results: list[PerSample]) -> dict[str, float]:
        """``score/retrain/…`` as the members' mean and ``spread/retrain/…`` as their sample
        standard deviation (0 for a single member)."""
        per_member = [self.score("retrain", r) for r in results]
        out: dict[str, float] = {}
        for key in per_member[0]:
            values = torch.tensor([m[key] for m in per_member], dtype=torch.float64)
            out[key] = float(values.mean())
            if key.startswith("score/"):  # a band only for what is judged
                spread = float(values.std()) if len(values) > 1 else 0.0
                out["spread/" + key.removeprefix("score/")] = spread
        return out

    def evaluate(self, model: MultiTaskModel) -> PerSample:
        """One batched pass over every scored row."""
        return evaluate(model, self.data, self._rows, self.problem.tasks, self.config.evaluation.batch_size)

    def build_method(self, params: Mapping[str, Any]) -> UnlearningMethod:
        """The method with ``params`` over the study file's fixed hyperparameters."""
        return self.method_class(**{**self.config.method.fixed, **params})


def _sample(labeled: LabeledSet, size: int | None, seed: int) -> LabeledSet:
    """A seeded subset of at most ``size`` samples (all of them when ``size`` is None)."""
    if size is None or len(labeled) <= size:
        return labeled
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(labeled), generator=generator)[:size].sort().values
    return LabeledSet(labeled.indices[keep], labeled.mask[keep])
