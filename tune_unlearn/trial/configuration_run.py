"""Running one configuration on a study's fixed inputs and references: unlearn a fresh copy of
the original, time the unlearning phase, count its compute, and measure every metric. What
varies per trial lives here; what is fixed across trials, in the two values it is given
(:class:`~tune_unlearn.trial.inputs.StudyInputs`,
:class:`~tune_unlearn.trial.study_references.StudyReferences`)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tune_unlearn.methods import StepLog, StepMonitor
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.references.attacks import AttackGround, RecoveryMeasures
from tune_unlearn.report.trial_record import ROBUSTNESS_COST
from tune_unlearn.scoring.evaluation import PerSample
from tune_unlearn.scoring.forget_score import logit_confidence
from tune_unlearn.scoring.metrics import (
    RECOVERY_METRICS,
    MetricContext,
    compute_metrics,
    parameter_shift,
    trainable_vector,
)
from tune_unlearn.trial.inputs import StudyInputs, build_method, evaluate_scored, score
from tune_unlearn.trial.study_references import StudyReferences


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


def run(
    inputs: StudyInputs,
    references: StudyReferences,
    params: Mapping[str, Any],
    *,
    seed: int,
    recovery: RecoveryMeasures | None = None,
    monitor: StepMonitor | None = None,
    monitor_every: int = 0,
) -> RunResult:
    """Unlearn a copy of the original with ``params`` (plus the fixed ones) and measure it.
    ``recovery``: the study's recovery attacks, for the recovery metrics it names, shared by its
    runs so that the retrains' side is computed once (without it, a new one where needed)."""
    method = build_method(inputs, params)
    model = references.original_model()  # a fresh copy
    with PhaseTimer(inputs.device) as timer:
        log = method.unlearn(model, inputs.setup, seed=seed, monitor=monitor, monitor_every=monitor_every)
    evaluation_started = time.perf_counter()
    runs = inputs.config.evaluation.forget_score_runs
    reruns = rerun_results(inputs, references, params, seed, runs - 1) if runs >= 2 else None
    named = sorted(inputs.config.named_metrics & RECOVERY_METRICS)
    if named and recovery is None:
        recovery = recovery_measures(inputs, references)
    recovery_values, attack_gradients = recovery.measure(model, named) if recovery is not None else ({}, 0)
    metrics = measure(
        inputs,
        references,
        model,
        gpu_seconds=timer.seconds,
        compute_cost=log.sample_gradients / inputs.retrain_sample_gradients,
        seed=seed,
        reruns=reruns,
        recovery=recovery_values,
    )
    if recovery_values:
        metrics[ROBUSTNESS_COST] = attack_gradients / inputs.retrain_sample_gradients
    # measure() ends in a device-to-host copy, so wall time covers its device work too.
    evaluation_seconds = time.perf_counter() - evaluation_started
    diagnostics = {**log.summary(inputs.task_names), "seconds/evaluation": evaluation_seconds}
    return RunResult(model, metrics, log, method.get_params(), seed, diagnostics)


def rerun_results(
    inputs: StudyInputs, references: StudyReferences, params: Mapping[str, Any], seed: int, runs: int
) -> list[PerSample]:
    """The same configuration unlearned again with seeds ``seed + 1 … seed + runs``."""
    results = []
    for k in range(1, runs + 1):
        model = references.original_model()
        build_method(inputs, params).unlearn(model, inputs.setup, seed=seed + k)
        results.append(evaluate_scored(inputs, model))
    return results


def forget_confidences(
    inputs: StudyInputs, references: StudyReferences, unlearned: list[PerSample]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per target task: logit-scaled confidences on the forget set, ``[N, n]`` of the
    unlearned runs and ``[K, n]`` of the retrain ensemble."""
    forget = inputs.sets.forget.indices
    out = {}
    for task in inputs.problem.tasks:
        if task.name not in inputs.request.target_tasks:
            continue
        column = inputs.task_names.index(task.name)

        kind = "classification" if task.categorical else "regression"

        def matrix(results: list[PerSample], column: int = column, kind: str = kind) -> np.ndarray:
            rows = [r.loss[r.positions(forget), column].numpy() for r in results]
            return logit_confidence(np.stack(rows), kind)

        out[task.name] = (matrix(unlearned), matrix(list(references.retrain_results)))
    return out


def measure(
    inputs: StudyInputs,
    references: StudyReferences,
    model: MultiTaskModel,
    *,
    gpu_seconds: float = math.nan,
    compute_cost: float = math.nan,
    seed: int = 0,
    reruns: list[PerSample] | None = None,
    recovery: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Every metric of ``model``; with ``reruns`` (the same configuration, other seeds) also
    ``forget_score``; ``recovery``: the recovery metrics measured on it (else NaN)."""
    per_sample = evaluate_scored(inputs, model)
    confidences = (
        forget_confidences(inputs, references, [per_sample, *reruns])
        if reruns is not None and references.retrain_results
        else None
    )
    scores = {**references.scores, **score(inputs, "unlearned", per_sample)}
    sets = inputs.sets
    target = inputs.request.target_columns(inputs.task_names)
    forget_positions = per_sample.positions(sets.forget.indices)
    val_positions = per_sample.positions(sets.nonmembers.indices)
    shift = parameter_shift(trainable_vector(model), references.original_vector)
    ctx = MetricContext(
        scores=scores,
        tasks=tuple(inputs.task_names),
        target_tasks=inputs.request.target_tasks,
        mode=inputs.request.mode,
        has_retrain=references.has_retrain,
        retrain_members=len(references.retrain_members),
        forget_size=len(sets.forget),
        val_size=len(sets.val),
        peers_size=0 if sets.peers is None else len(sets.peers),
        shift=float(shift),
        forget_losses=per_sample.loss[forget_positions][:, target].sum(dim=1).numpy(),
        val_losses=per_sample.loss[val_positions][:, target].sum(dim=1).numpy(),
        gpu_seconds=gpu_seconds,
        compute_cost=compute_cost,
        seed=seed,
        forget_confidences=confidences,
        forget_score_rule=inputs.config.evaluation.forget_score_rule,
        **(recovery or {}),
    )
    return {**compute_metrics(ctx), **scores}


def attack_ground(
    inputs: StudyInputs,
    references: StudyReferences,
    original: MultiTaskModel | None = None,
    retrains: list[MultiTaskModel] | None = None,
) -> AttackGround:
    """What the recovery attacks read; the models built from the references unless given."""
    return AttackGround(
        data=inputs.data,
        tasks=inputs.problem.tasks,
        target_columns=inputs.request.target_columns(inputs.task_names),
        forget=inputs.sets.forget,
        retain=inputs.sets.retain,
        recipe_lr=inputs.problem.finetune_lr(),
        batch_size=inputs.config.evaluation.batch_size,
        original=references.original_model() if original is None else original,
        retrains=tuple(references.retrain_models() if retrains is None else retrains),
    )


def recovery_measures(inputs: StudyInputs, references: StudyReferences) -> RecoveryMeasures:
    """The recovery metrics of a study's trials (``relearn_recovery``,
    ``quantization_recovery``): one per process, so the retrains' side is computed once."""
    evaluation = inputs.config.evaluation
    return RecoveryMeasures(
        lambda: attack_ground(inputs, references), evaluation.relearning, evaluation.quantization
    )
