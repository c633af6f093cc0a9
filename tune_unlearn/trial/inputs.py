"""What a study holds fixed before any model is loaded, as values.

:func:`load_inputs` reads the problem's data onto the device, splits it, selects the forget
request and builds the sample sets it induces (:class:`SampleSets`) and the plan of reference
models to load (:class:`~tune_unlearn.references.reference_models.ReferencePlan`). It trains
nothing: ``check`` and ``stream`` stop here, and
:func:`tune_unlearn.trial.study_references.load_study_references` goes on to the models.

The ``holdout`` split is deliberately absent: it belongs to the validators alone, so no trial
can tune on what validation will judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
from tune_unlearn.references.reference_models import ReferencePlan
from tune_unlearn.references.training import load_state
from tune_unlearn.scoring.evaluation import PerSample, evaluate
from tune_unlearn.scoring.metrics import score_key
from tune_unlearn.tracking.runs import resolve_tracking_uri

__all__ = [
    "SampleSets",
    "StudyInputs",
    "build_method",
    "evaluate_scored",
    "load_inputs",
    "request_instances",
    "resolve_device",
    "score",
    "stream_instances",
]


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


@dataclass(frozen=True)
class SampleSets:
    """The labelled sample sets of a request (each a :class:`LabeledSet`: rows and, per row,
    the task labels it carries). Their names are the ``<set>`` of ``score/<model>/<set>/<task>``."""

    val: LabeledSet
    forget: LabeledSet
    retain: LabeledSet
    #: Partial mode: the forget instances' labels on the other tasks, knowledge to keep.
    kept: LabeledSet | None = None
    #: Reference-free: held-out samples of the forget set's own group, what forgotten instances
    #: should look like without a retrain to ask.
    peers: LabeledSet | None = None

    def named(self) -> dict[str, LabeledSet]:
        """The sets present, by name, in the order scores are reported."""
        named = {"val": self.val, "forget": self.forget, "retain": self.retain}
        if self.kept is not None:
            named["kept"] = self.kept
        if self.peers is not None:
            named["peers"] = self.peers
        return named

    @property
    def nonmembers(self) -> LabeledSet:
        """Membership inference's non-members: ``val``; reference-free, the forget set's peers."""
        return self.val if self.peers is None else self.peers


@dataclass(frozen=True)
class StudyInputs:
    """The fixed part of a study before its reference models: the problem and its data on the
    device, the ``train`` and ``val`` splits, the request, its sets, and the reference plan."""

    config: StudyConfig
    #: The method the study tunes (a registered one, or a class given to ``run_study``).
    method_class: type[UnlearningMethod]
    problem: Problem
    device: torch.device
    data: MultiTaskData
    train: Tensor
    val: Tensor
    request: ForgetRequest
    sets: SampleSets
    #: What each trial scores: every set whole, except the (large) retain set, sampled.
    scored: Mapping[str, LabeledSet]
    #: Every scored row, sorted: one batched evaluation pass covers them all.
    rows: Tensor
    setup: UnlearningSetup
    reference_plan: ReferencePlan
    #: The store that ``models:/`` and ``runs:/`` references resolve against.
    tracking_uri: str
    trust_pickle: bool

    @property
    def task_names(self) -> list[str]:
        return self.problem.task_names

    @property
    def retrain_sample_gradients(self) -> int:
        """What one retrain computes (a backward pass per sample per epoch): compute_cost's unit."""
        return self.problem.recipe().epochs * len(self.sets.retain)

    def user_model_state(self, spec: str) -> dict[str, Tensor]:
        """A model given by the user (a file, ``models:/``, ``runs:/``), loaded safely."""
        return load_state(spec, tracking_uri=self.tracking_uri, trust_pickle=self.trust_pickle)


def load_inputs(
    config: StudyConfig,
    *,
    method: type[UnlearningMethod] | None = None,
    tracking_uri: str | None = None,
    trust_pickle: bool = False,
) -> StudyInputs:
    """The study's fixed inputs; trains nothing. ``method``: the method class to run (default:
    the registered one the study file names), so a method object need not be registered to be
    tuned. ``tracking_uri``: the store user models resolve against (default: the study's);
    ``trust_pickle`` lets a model without a state dict be unpickled."""
    problem = config.problem.build()
    device = resolve_device(config.device)
    task_names = problem.task_names
    cpu_data = problem.load_data()
    splits = problem.split(len(cpu_data), config.problem.seed)  # holdout: not kept (see above)
    train, val = splits["train"], splits["val"]
    request = _forget_request(config, cpu_data, train, task_names)
    retrain_request = _bank_request(config, cpu_data, train, request) or request
    sets = SampleSets(
        val=_every_task(val, task_names),
        forget=request.forget_set(task_names),
        retain=request.retain_set(train, task_names),
        kept=request.kept_set(task_names) if request.mode == "partial" else None,
        peers=_peers(config, cpu_data, val, task_names),
    )
    _check_relearning_sample(config, sets.forget)
    data = cpu_data.to(device)
    scored = {
        **sets.named(),
        "retain": _sample(sets.retain, config.evaluation.retain_sample, config.problem.seed),
    }
    plan = ReferencePlan(
        config=config.references,
        problem=problem,
        data=data,
        device=device,
        seed=config.problem.seed,
        all_train=_every_task(train, task_names),
        retrain_request=retrain_request,
        # What the retrain members train on: the retain set, or a bank's (less every request
        # that shares it).
        retrain_set=sets.retain
        if retrain_request is request
        else retrain_request.retain_set(train, task_names),
    )
    setup = UnlearningSetup(
        data=data,
        tasks=problem.tasks,
        target=request.target_columns(task_names).to(device),
        forget=sets.forget.to(device),
        retain=sets.retain.to(device),
    )
    return StudyInputs(
        config=config,
        method_class=method or METHODS.get(config.method.name),
        problem=problem,
        device=device,
        data=data,
        train=train,
        val=val,
        request=request,
        sets=sets,
        scored=scored,
        rows=torch.cat([s.indices for s in scored.values()]).unique(),
        setup=setup,
        reference_plan=plan,
        tracking_uri=resolve_tracking_uri(config, tracking_uri),
        trust_pickle=trust_pickle,
    )


def _every_task(rows: Tensor, task_names: list[str]) -> LabeledSet:
    return LabeledSet(rows, torch.ones(len(rows), len(task_names), dtype=torch.bool))


def _forget_request(
    config: StudyConfig, data: MultiTaskData, train: Tensor, task_names: list[str]
) -> ForgetRequest:
    """The study file's request, less nothing: an instance an earlier request deleted may not be
    deleted again."""
    forget = config.forget
    targets = tuple(forget.target_tasks or task_names) if forget.mode == "partial" else tuple(task_names)
    indices = request_instances(data, train, forget, config.problem.seed)
    previous = (
        read_index_file(forget.previously_forgotten)
        if forget.previously_forgotten is not None
        else torch.zeros(0, dtype=torch.long)
    )
    repeated = int(torch.isin(previous, indices).sum())
    if repeated:
        raise ValueError(
            f"forget.previously_forgotten: {repeated} of its instances are in this request too; "
            "an instance is deleted once"
        )
    return ForgetRequest(forget.mode, targets, indices, previous)


def _bank_request(
    config: StudyConfig, data: MultiTaskData, train: Tensor, request: ForgetRequest
) -> ForgetRequest | None:
    """What a bank's members never saw, as one request (so that every request sharing the
    bank has the same cache key: trained once); ``None`` for a per-request ensemble.
    A bank that saw an instance of this request, or of an earlier one, cannot judge it.
    The stream's own file (``check`` on it) names the bank by its requests."""
    ensemble = config.references.ensemble()
    if config.references.stream_bank() and config.requests:
        chosen = stream_instances(data, train, config.requests, config.problem.seed)
        left_out = torch.cat(chosen).unique()  # sorted, as an index file reads back
    elif ensemble is not None and ensemble.left_out is not None:
        left_out = read_index_file(ensemble.left_out)
    else:
        return None
    deleted = torch.cat([request.indices, request.previous])
    seen = int((~torch.isin(deleted, left_out)).sum())
    if seen:
        raise UsageError(
            f"references.retrain.left_out: the bank's members saw {seen} of the {len(deleted)} "
            "instance(s) this request and earlier ones delete, so none of them is a model that "
            "never saw the forget set; train a bank that leaves them out, or use scope `request`"
        )
    return ForgetRequest(request.mode, request.target_tasks, left_out)


def _peers(config: StudyConfig, data: MultiTaskData, val: Tensor, task_names: list[str]) -> LabeledSet | None:
    """Reference-free: held-out samples of the forget set's own group stand in for how an honest
    retrain scores the forgotten instances (config refuses requests that remove a whole group,
    where no such stand-in exists). ``None`` with a retrain reference."""
    if config.references.retrain is not False:
        return None
    peers = matching_rows(data, val, config.forget.where)
    if len(peers) == 0:
        raise ValueError("forget.where: no val sample of the forget set's group to compare with")
    return _every_task(peers, task_names)


def _check_relearning_sample(config: StudyConfig, forget: LabeledSet) -> None:
    """A study searching on ``relearn_recovery`` needs forget instances beyond the attacker's
    sample to judge recovery on: known once the forget set is, before any trial."""
    if "relearn_recovery" not in config.named_metrics:
        return
    size = config.evaluation.relearning.sample_size
    if len(forget) <= size:
        raise UsageError(
            f"evaluation.relearning.sample_size: the attacker's sample ({size}) takes all "
            f"{len(forget)} forget instances, leaving none to judge recovery on; set it below {len(forget)}"
        )


def _sample(labeled: LabeledSet, size: int | None, seed: int) -> LabeledSet:
    """A seeded subset of at most ``size`` samples (all of them when ``size`` is None)."""
    if size is None or len(labeled) <= size:
        return labeled
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(labeled), generator=generator)[:size].sort().values
    return LabeledSet(labeled.indices[keep], labeled.mask[keep])


def evaluate_scored(inputs: StudyInputs, model: MultiTaskModel) -> PerSample:
    """``model`` on every scored row, in one batched pass."""
    return evaluate(
        model, inputs.data, inputs.rows, inputs.problem.tasks, inputs.config.evaluation.batch_size
    )


def score(inputs: StudyInputs, model_kind: str, per_sample: PerSample) -> dict[str, float]:
    """Flat ``score/<model>/<set>/<task>`` entries for every scored set, and
    ``reported/<model>/<set>/<task>/<figure>`` for the figures a task reports beside its score
    (a dense task's pixel accuracy, absolute relative error, angle figures)."""
    out = {}
    for set_name, labeled in inputs.scored.items():
        for task, value in per_sample.scores(labeled, inputs.task_names).items():
            out[score_key(model_kind, set_name, task)] = value
        for (task, figure), value in per_sample.reported_means(labeled, inputs.task_names).items():
            out[f"reported/{model_kind}/{set_name}/{task}/{figure}"] = value
    return out


def build_method(inputs: StudyInputs, params: Mapping[str, Any]) -> UnlearningMethod:
    """The study's method with ``params`` over the study file's fixed hyperparameters."""
    return inputs.method_class(**{**inputs.config.method.fixed, **params})
