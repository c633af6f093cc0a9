"""Is the retain rate that starts to cost a kept task the retain loss's stability limit?

On scenes a retain-only descent at 3e-4 × the retain gradient's scale breaks the kept depth
task and 3e-5 keeps it, while on digits the whole default retain range is safe (RESULTS.md,
"Why the default spaces do not transfer to scenes"). Gradient descent on a quadratic diverges
along the Hessian's top eigenvector once the rate passes ``2/λ_max``; a gradient scale
(``‖θ‖/‖g‖``) knows nothing of curvature, and a converged model's small gradient makes it large.
Per problem, on the paper-claims partial request's original (the methods' eval mode):

- ``s_retain = ‖θ‖/‖g_r‖`` and the ``retain_probe`` rate (``methods/_rate_scale.py``);
- ``λ_max`` of the summed retain loss's Hessian (the ``retain_curvature`` scale's power iteration on
  one seeded retain batch of the study's size), in eval mode as the methods step, and on a model
  with batch norm also with the batch's own statistics (as the original was trained);
- retain-only descent (``finetune``, the study's steps and batch) at multiples of
  ``2/λ_max`` (eval): each task's mean score drop on the seeded retain sample the probe scores.

    python benchmarks/retain_sharpness.py --problems digits shapes scenes --threads 1 [--cache DIR]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from paper_claims import SAMPLES, one_configuration
from torch import Tensor, nn

from tune_unlearn.methods import measure_rate_scales
from tune_unlearn.methods._base import UnlearningSetup
from tune_unlearn.methods._rate_scale import (
    CURVATURE_ITERATIONS,
    PROBE_SAMPLES,
    _task_scores,
    probe_retain_rate,
    retain_stability_limit,
)
from tune_unlearn.methods._simple import Finetune
from tune_unlearn.problems import MultiTaskModel

#: Multiples of 2/λ_max(eval) at which retain-only descent runs.
MULTIPLES = (0.3, 1.0, 3.0, 10.0, 30.0)


def with_batch_statistics(model: MultiTaskModel) -> MultiTaskModel:
    """A copy whose batch norm layers normalise with each batch's statistics even in eval mode
    (PyTorch does so for a layer without running statistics), as the original was trained."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = None
    return model


def descent_drops(
    model: MultiTaskModel, setup: UnlearningSetup, rate: float, steps: int, batch: int
) -> Tensor:
    """Each task's mean score drop on the probe's seeded retain sample after ``steps`` steps of
    retain-only descent at ``rate`` (on a copy)."""
    generator = torch.Generator(device=setup.data.device).manual_seed(0)
    size = min(PROBE_SAMPLES, len(setup.retain))
    positions = torch.randperm(len(setup.retain), generator=generator, device=setup.data.device)[:size]
    model = copy.deepcopy(model).eval()
    before = _task_scores(model, setup, positions)
    Finetune(retain_lr=rate, steps=steps, batch_size=batch).unlearn(model, setup, seed=0)
    return before - _task_scores(model, setup, positions)


def measure(problem: str, samples: int, cache: Path, multiples: list[float], iterations: int) -> None:
    inputs, references = one_configuration(problem, samples, "finetune", cache)
    fixed = inputs.config.method.fixed
    steps, batch = int(fixed["steps"]), int(fixed["batch_size"])
    setup, original = inputs.setup, references.original_model()
    scales = measure_rate_scales(original, setup)
    s_retain = scales["retain_gradient"]
    probe = probe_retain_rate(original, setup, s_retain)
    limit = retain_stability_limit(original, setup, batch, iterations=iterations)
    longer = retain_stability_limit(original, setup, batch, iterations=100)
    has_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in original.modules())
    with_batch_stats = ""
    if has_norm:
        train_limit = retain_stability_limit(
            with_batch_statistics(original), setup, batch, iterations=iterations
        )
        with_batch_stats = f"; λ_max(batch statistics) {2 / train_limit:.4g}"
    print(
        f"\n{problem} ({steps} steps, batch {batch}): s_retain {s_retain:.4g}; retain_probe {probe:.3g} "
        f"({probe / s_retain:.0e} × s_retain); λ_max(eval) {2 / limit:.4g} ({iterations} iterations; "
        f"{2 / longer:.4g} at 100), 2/λ_max {limit:.3g} ({limit / s_retain:.2e} × s_retain)"
        f"{with_batch_stats}"
    )
    names = [task.name for task in setup.tasks]
    print("  | × 2/λ_max | rate | × s_retain | " + " | ".join(f"drop {n}" for n in names) + " |")
    for multiple in multiples:
        rate = multiple * limit
        drops = descent_drops(original, setup, rate, steps, batch)
        print(
            f"  | {multiple:g} | {rate:.3g} | {rate / s_retain:.2e} | "
            + " | ".join(f"{float(d):+.3f}" for d in drops)
            + " |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--problems", nargs="+", choices=sorted(SAMPLES), default=["digits", "shapes", "scenes"]
    )
    parser.add_argument("--samples", type=int, default=0, help="0: the paper-claims benchmark's size")
    parser.add_argument("--multiples", type=float, nargs="+", default=list(MULTIPLES), help="of 2/λ_max")
    parser.add_argument("--iterations", type=int, default=CURVATURE_ITERATIONS, help="power iterations")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, help="reference cache (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        for problem in args.problems:
            measure(problem, args.samples, args.cache or Path(scratch), args.multiples, args.iterations)


if __name__ == "__main__":
    main()
