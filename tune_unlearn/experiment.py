"""Everything a study holds fixed across its trials, and running one configuration on it.

An :class:`Experiment` is built once per process: the problem's data on the device, the splits,
the forget request and the sets it induces, the reference models (from the cache) and their
scores. :meth:`Experiment.run` unlearns a copy of the original with one configuration and
measures it. The ``holdout`` split is deliberately absent from everything here: it belongs to
the validators alone.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tune_unlearn.config import StudyConfig
from tune_unlearn.evaluation import PerSample, evaluate
from tune_unlearn.forget import ForgetRequest, LabeledSet, select_forget_indices
from tune_unlearn.guard import CollapseGuard
from tune_unlearn.methods import METHODS, StepLog, StepMonitor, UnlearningMethod, UnlearningSetup
from tune_unlearn.metrics import MetricContext, compute_metrics, score_key
from tune_unlearn.problems import MultiTaskData, MultiTaskModel, Problem
from tune_unlearn.references import (
    Reference,
    ReferenceCache,
    ReferenceKind,
    default_cache_dir,
    load_state,
    seeded_model,
    train_model,
)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the study asks for device 'cuda' but no CUDA device is available")
    return torch.device(name)


@dataclass
class RunResult:
    """One unlearned model and everything measured on it."""

    model: MultiTaskModel
    metrics: dict[str, float]
    log: StepLog
    params: dict[str, Any]
    seed: int
    diagnostics: dict[str, float] = field(default_factory=dict)


class PhaseTimer:
    """Accelerator seconds of a phase: CUDA event time on GPU, wall seconds on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PhaseTimer:
        if self.device.type == "cuda":
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self._end.record()
            self._end.synchronize()
            self.seconds = self._start.elapsed_time(self._end) / 1000.0
        else:
            self.seconds = time.perf_counter() - self._wall


class Experiment:
    """The fixed part of a study: problem, data, request, sets, references, their scores."""

    def __init__(self, config: StudyConfig, *, progress: bool = True) -> None:
        self.config = config
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
        indices = select_forget_indices(
            cpu_data,
            self.splits["train"],
            where=forget_cfg.where,
            fraction=forget_cfg.fraction,
            seed=config.problem.seed if forget_cfg.seed is None else forget_cfg.seed,
            index_file=forget_cfg.index_file,
        )
        self.request = ForgetRequest(forget_cfg.mode, targets, indices)
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
        self.references = self._load_references(progress)
        self.reference_scores: dict[str, float] = {}
        for kind, reference in self.references.items():
            model = self.model_from(reference.state_dict)
            self.reference_scores.update(self.score(kind, self.evaluate(model)))
        self.original_vector = _flat(self.references["original"].state_dict).to(self.device)
        guard = config.collapse_guard
        self.guard = (
            CollapseGuard.on_sample(
                self.model_from(self.references["original"].state_dict),
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
    def _load_references(self, progress: bool) -> dict[str, Reference]:
        cfg = self.config
        cache = ReferenceCache(cfg.references.cache_dir or default_cache_dir())
        seed = cfg.problem.seed
        all_train = LabeledSet(
            self.splits["train"],
            torch.ones(len(self.splits["train"]), len(self.task_names), dtype=torch.bool),
        )
        plans: dict[ReferenceKind, tuple[LabeledSet, ForgetRequest | None, str | None]] = {
            "original": (all_train, None, cfg.references.original)
        }
        retrain = cfg.references.retrain
        if retrain is not False:
            plans["retrain"] = (
                self.sets["retain"],
                self.request,
                retrain if isinstance(retrain, str) else None,
            )
        references: dict[str, Reference] = {}
        self.trained_references: list[str] = []
        for kind, (labeled, request, given) in plans.items():
            if given is not None:  # the user's own checkpoint: nothing to train, cost unknown
                references[kind] = Reference(kind, load_state(given), math.nan)
                continue
            train = functools.partial(
                train_model,
                self.problem,
                self.data,
                labeled,
                seed=seed,
                description=f"training {kind}",
                progress=progress,
            )
            reference, trained = cache.get_or_train(kind, cache.key(kind, self.problem, seed, request), train)
            if trained:
                self.trained_references.append(kind)
            references[kind] = reference
        return references

    @property
    def compute_budget(self) -> float | None:
        """Training seconds of the retrain reference (else the original): what unlearning must
        undercut. ``None`` when both came from checkpoints and their cost is unknown."""
        for kind in ("retrain", "original"):
            reference = self.references.get(kind)
            if reference is not None and math.isfinite(reference.train_seconds):
                return reference.train_seconds
        return None

    def model_from(self, state_dict: Mapping[str, Tensor]) -> MultiTaskModel:
        model = seeded_model(self.problem, 0, self.device)
        model.load_state_dict(state_dict)
        model.eval()
        return model

    # -- measuring ----------------------------------------------------------------------------
    def score(self, model_kind: str, per_sample: PerSample) -> dict[str, float]:
        """Flat ``score/<model>/<set>/<task>`` entries for every set of this experiment."""
        out = {}
        for set_name, labeled in self.scored_sets.items():
            for task, value in per_sample.scores(labeled, self.task_names).items():
                out[score_key(model_kind, set_name, task)] = value
        return out

    def evaluate(self, model: MultiTaskModel) -> PerSample:
        """One batched pass over every scored row."""
        return evaluate(model, self.data, self._rows, self.problem.tasks, self.config.evaluation.batch_size)

    def build_method(self, params: Mapping[str, Any]) -> UnlearningMethod:
        merged = {**self.config.method.fixed, **params}
        return METHODS.get(self.config.method.name)(**merged)

    def run(
        self,
        params: Mapping[str, Any],
        *,
        seed: int,
        monitor: StepMonitor | None = None,
        monitor_every: int = 0,
    ) -> RunResult:
        """Unlearn a copy of the original with ``params`` (plus the fixed ones) and measure it."""
        method = self.build_method(params)
        model = self.model_from(self.references["original"].state_dict)  # a fresh copy
        with PhaseTimer(self.device) as timer:
            log = method.unlearn(model, self.setup, seed=seed, monitor=monitor, monitor_every=monitor_every)
        evaluation_started = time.perf_counter()
        metrics = self.measure(model, gpu_seconds=timer.seconds, seed=seed)
        # measure() ends in a device-to-host copy, so wall time covers its device work too.
        evaluation_seconds = time.perf_counter() - evaluation_started
        diagnostics = {**log.summary(self.task_names), "seconds/evaluation": evaluation_seconds}
        return RunResult(model, metrics, log, method.get_params(), seed, diagnostics)

    def measure(
        self, model: MultiTaskModel, *, gpu_seconds: float = math.nan, seed: int = 0
    ) -> dict[str, float]:
        per_sample = self.evaluate(model)
        scores = {**self.reference_scores, **self.score("unlearned", per_sample)}
        target = self.request.target_columns(self.task_names)
        forget_positions = per_sample.positions(self.sets["forget"].indices)
        val_positions = per_sample.positions(self.sets["val"].indices)
        shift = (_flat(model.state_dict()) - self.original_vector).norm() / self.original_vector.norm()
        ctx = MetricContext(
            scores=scores,
            tasks=tuple(self.task_names),
            target_tasks=self.request.target_tasks,
            mode=self.request.mode,
            has_retrain="retrain" in self.references,
            param_shift=float(shift),
            forget_losses=per_sample.loss[forget_positions][:, target].sum(dim=1).numpy(),
            val_losses=per_sample.loss[val_positions][:, target].sum(dim=1).numpy(),
            gpu_seconds=gpu_seconds,
            seed=seed,
        )
        return {**compute_metrics(ctx), **scores}


def _sample(labeled: LabeledSet, size: int | None, seed: int) -> LabeledSet:
    """A seeded subset of at most ``size`` samples (all of them when ``size`` is None)."""
    if size is None or len(labeled) <= size:
        return labeled
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(labeled), generator=generator)[:size].sort().values
    return LabeledSet(labeled.indices[keep], labeled.mask[keep])


def _flat(state: Mapping[str, Tensor]) -> Tensor:
    return torch.cat([v.detach().float().reshape(-1) for v in state.values()])
