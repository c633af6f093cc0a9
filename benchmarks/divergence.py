"""Why ascent diverges: per-step gradient and update norms of each method, and the step at which
its forget loss leaves its range, at rates drawn from the method's default space.

    python benchmarks/divergence.py [--problem shapes] [--samples 2000] [--steps 50]
        [--methods graddiff interference_aware npo] [--rates 0.5 0.9] [--threads 2]

For each method and each quantile q of ``--rates`` every rate hyperparameter (``rate=True``)
is set to the q-quantile of its default range on a log scale (0.5: the geometric middle). Per
step the benchmark records ``‖g_f‖`` (the forget gradient on the shared parameters), ``‖Δ‖``
(the update), ``‖Δ‖ / ‖θ‖`` (the trust ratio the step takes) and the forget loss; it reports
the first step whose forget loss is non-finite or above ``--blowup`` × its first value, and
the median ratio over the steps before it. The ratios are those the rates ask for, before the
methods' step bound (``max_step``, the largest trust ratio a step takes); ``--max-step`` sets
it (``1e9``: unbounded, the steps as published) to show the same runs bounded and unbounded.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from typing import Any

import torch
from _original_only import original_only_experiment

from tune_unlearn.methods import METHODS, DivergenceError, StepGradients
from tune_unlearn.methods._base import StepLog
from tune_unlearn.trial.study_references import LoadedStudy

REQUESTS: dict[str, dict[str, Any]] = {
    "digits": {"mode": "partial", "target_tasks": ["digit"], "where": {"digit": 3}},
    "shapes": {"mode": "partial", "target_tasks": ["shape"], "where": {"shape": 0}},
    "scenes": {"mode": "partial", "target_tasks": ["segmentation"], "where": {"has_ball": 1}},
}


def experiment_for(problem: str, samples: int, cache: str) -> LoadedStudy:
    return original_only_experiment("divergence", problem, samples, cache, REQUESTS[problem])


def rate_at(search: dict[str, Any], quantile: float) -> float:
    low, high = float(search["low"]), float(search["high"])
    return math.exp(math.log(low) + quantile * (math.log(high) - math.log(low)))


def trace(
    experiment: LoadedStudy, name: str, quantile: float, steps: int, max_step: float | None
) -> dict[str, Any]:
    cls = METHODS.get(name)
    declared = cls.constraints()
    rates = {
        key: rate_at(dict(param.search), quantile)
        for key, param in declared.items()
        if param.rate and param.search is not None
    }
    settings: dict[str, Any] = {"steps": steps, "batch_size": 32, **rates}
    if max_step is not None and "max_step" in declared:
        settings["max_step"] = max_step
    method = cls(**settings)
    model = experiment.references.original_model()
    rows: list[tuple[float, float, float]] = []
    losses: list[float] = []
    original_delta = method.step_delta

    def recorded(grads: StepGradients, step: int, log: StepLog) -> torch.Tensor:
        delta = original_delta(grads, step, log)
        n = grads.layout.num_shared
        theta = torch.cat([p.detach().reshape(-1) for p in grads.layout.params]).norm()
        forget = grads.forget[:n].norm() if grads.forget_batch is not None else torch.tensor(math.nan)
        rows.append((float(forget), float(delta.norm()), float(delta.norm() / theta)))
        losses.append(float(log.forget_loss[step]))
        return delta

    method.step_delta = recorded  # type: ignore[method-assign]
    try:
        method.unlearn(model, experiment.inputs.setup, seed=0)
        diverged = None
    except DivergenceError as error:
        diverged = str(error)
    return {"rates": rates, "rows": rows, "losses": losses, "diverged": diverged}


def first_blowup(losses: list[float], blowup: float) -> int | None:
    if not losses:
        return None
    first = abs(losses[0]) or 1.0
    for step, value in enumerate(losses, start=1):
        if not math.isfinite(value) or abs(value) > blowup * first:
            return step
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=sorted(REQUESTS), default="shapes")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--methods", nargs="*", default=["graddiff", "task_projection", "interference_aware", "npo"]
    )
    parser.add_argument("--rates", nargs="*", type=float, default=[0.5, 0.9])
    parser.add_argument("--blowup", type=float, default=10.0)
    parser.add_argument("--max-step", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        experiment = experiment_for(args.problem, args.samples, cache)
        print(f"{args.problem}: forget loss blow-up = non-finite or > {args.blowup:g}× its first value")
        header = (
            "method               q    first ‖g_f‖  asked ‖Δ‖/‖θ‖: median      max  blow-up step  diverged"
        )
        print(header)
        for name in args.methods:
            for quantile in args.rates:
                result = trace(experiment, name, quantile, args.steps, args.max_step)
                rows = result["rows"]
                step = first_blowup(result["losses"], args.blowup)
                before = rows[: (step or len(rows))] or rows
                ratios = [r[2] for r in before if math.isfinite(r[2])]
                print(
                    f"{name:20s} {quantile:4.2f} {rows[0][0]:11.3g} "
                    f"{statistics.median(ratios) if ratios else math.nan:15.3g} "
                    f"{max((r[2] for r in rows if math.isfinite(r[2])), default=math.nan):12.3g} "
                    f"{step or '-':>13} {'yes' if result['diverged'] else 'no'}"
                )


if __name__ == "__main__":
    main()
