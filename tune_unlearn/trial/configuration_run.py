"""Running one configuration on an :class:`~tune_unlearn.trial.experiment.Experiment`: unlearn a
fresh copy of the original, time the unlearning phase, count its compute, and measure every
metric. What varies per trial lives here; what is fixed across trials, in the experiment."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tune_unlearn.methods import StepLog, StepMonitor
from tune_unlearn.problems import MultiTaskModel
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

if TYPE_CHECKING:
    from tune_unlearn.trial.experiment import Experiment


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
    experiment: Experiment,
    params: Mapping[str, Any],
    *,
    seed: int,
    monitor: StepMonitor | None = None,
    monitor_every: int = 0,
) -> RunResult:
    """Unlearn a copy of the original with ``params`` (plus the fixed ones) and measure it."""
    method = experiment.build_method(params)
    model = experiment.original_model()  # a fresh copy
    with PhaseTimer(experiment.device) as timer:
        log = method.unlearn(model, experiment.setup, seed=seed, monitor=monitor, monitor_every=monitor_every)
    evaluation_started = time.perf_counter()
    runs = experiment.config.evaluation.forget_score_runs
    reruns = rerun_results(experiment, params, seed, runs - 1) if runs >= 2 else None
    recovery, attack_gradients = experiment.recovery.measure(
        model, sorted(experiment.config.named_metrics & RECOVERY_METRICS)
    )
    metrics = measure(
        experiment,
        model,
        gpu_seconds=timer.seconds,
        compute_cost=log.sample_gradients / experiment.retrain_sample_gradients,
        seed=seed,
        reruns=reruns,
        recovery=recovery,
    )
    if recovery:
        metrics[ROBUSTNESS_COST] = attack_gradients / experiment.retrain_sample_gradients
    # measure() ends in a device-to-host copy, so wall time covers its device work too.
    evaluation_seconds = time.perf_counter() - evaluation_started
    diagnostics = {**log.summary(experiment.task_names), "seconds/evaluation": evaluation_seconds}
    return RunResult(model, metrics, log, method.get_params(), seed, diagnostics)


def rerun_results(experiment: Experiment, params: Mapping[str, Any], seed: int, runs: int) -> list[PerSample]:
    """The same configuration unlearned again with seeds ``seed + 1 … seed + runs``."""
    results = []
    for k in range(1, runs + 1):
        model = experiment.original_model()
        experiment.build_method(params).unlearn(model, experiment.setup, seed=seed + k)
        results.append(experiment.evaluate(model))
    return results


def forget_confidences(
    experiment: Experiment, unlearned: list[PerSample]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per target task: logit-scaled confidences on the forget set, ``[N, n]`` of the
    unlearned runs and ``[K, n]`` of the retrain ensemble."""
    forget = experiment.sets["forget"].indices
    out = {}
    for task in experiment.problem.tasks:
        if task.name not in experiment.request.target_tasks:
            continue
        column = experiment.task_names.index(task.name)

        kind = "classification" if task.categorical else "regression"

        def matrix(results: list[PerSample], column: int = column, kind: str = kind) -> np.ndarray:
            rows = [r.loss[r.positions(forget), column].numpy() for r in results]
            return logit_confidence(np.stack(rows), kind)

        out[task.name] = (matrix(unlearned), matrix(experiment.retrain_results))
    return out


def measure(
    experiment: Experiment,
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
    per_sample = experiment.evaluate(model)
    confidences = (
        forget_confidences(experiment, [per_sample, *reruns])
        if reruns is not None and experiment.retrain_results
        else None
    )
    scores = {**experiment.reference_scores, **experiment.score("unlearned", per_sample)}
    target = experiment.request.target_columns(experiment.task_names)
    forget_positions = per_sample.positions(experiment.sets["forget"].indices)
    val_positions = per_sample.positions(experiment.nonmembers.indices)
    shift = parameter_shift(trainable_vector(model), experiment.original_vector)
    ctx = MetricContext(
        scores=scores,
        tasks=tuple(experiment.task_names),
        target_tasks=experiment.request.target_tasks,
        mode=experiment.request.mode,
        has_retrain="retrain" in experiment.references,
        retrain_members=len(experiment.retrain_members),
        forget_size=len(experiment.sets["forget"]),
        val_size=len(experiment.sets["val"]),
        peers_size=len(experiment.sets["peers"]) if "peers" in experiment.sets else 0,
        shift=float(shift),
        forget_losses=per_sample.loss[forget_positions][:, target].sum(dim=1).numpy(),
        val_losses=per_sample.loss[val_positions][:, target].sum(dim=1).numpy(),
        gpu_seconds=gpu_seconds,
        compute_cost=compute_cost,
        seed=seed,
        forget_confidences=confidences,
        forget_score_rule=experiment.config.evaluation.forget_score_rule,
        **(recovery or {}),
    )
    return {**compute_metrics(ctx), **scores}
