"""Where along the ascent rate a problem starts to forget, and where its model collapses.

For each problem, on the paper-claims benchmark's partial request (digits: the digit head
forgets every 3; shapes: the shape head every circle; scenes: the segmentation of every scene
with a ball), GradDiff runs once per ascent rate ``ratio × s_forget`` (``s_forget`` the forget
gradient's scale, ``methods/_rate_scale.py``, the unit of the default ascent range
``[1e-6, 1e-3]``) with the retain rate fixed at ``--retain-ratio × s_retain``, the benchmark's
steps and batch, and the study's collapse guard watching as in a trial. Printed per rate:
forget efficacy, retained utility and UIS, or the step at which the guard stopped it; then
the first rate that forgets (efficacy ≥ 0.9) and the first the guard stops, and how many
decades of the default ascent range lie between them. The question it answers: does one range
relative to the forget gradient's scale put the forgetting window at the same place on every
model, or must a default ascent range be measured on the outputs, as ``retain_probe`` is for
the retain rate?

    python benchmarks/ascent_window.py --problems digits shapes scenes --threads 1 [--cache DIR]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch
from paper_claims import SAMPLES, one_configuration

from tune_unlearn.methods import DivergenceError, measure_rate_scales
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.guard import CollapseDetected, study_guard

#: The default ascent range's half-decades.
RATIOS = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
FORGETS = 0.9


def sweep(problem: str, samples: int, ratios: list[float], retain_ratio: float, cache: Path) -> None:
    inputs, references = one_configuration(problem, samples, "graddiff", cache)
    fixed = inputs.config.method.fixed
    scales = measure_rate_scales(references.original_model(), inputs.setup, seed=inputs.config.problem.seed)
    guard = study_guard(inputs, references)
    every = inputs.config.collapse_guard.every
    retain = retain_ratio * scales["retain_gradient"]
    print(
        f"\n{problem} ({fixed['steps']} steps, batch {fixed['batch_size']}): s_forget "
        f"{scales['forget_gradient']:.4g}, s_retain {scales['retain_gradient']:.4g}, retain rate "
        f"{retain:.3g} ({retain_ratio:g} × s_retain), guard floor {inputs.config.collapse_guard.floor}"
    )
    first_forgets = first_stopped = None
    for ratio in ratios:
        params = {"ascent_lr": ratio * scales["forget_gradient"], "retain_lr": retain}
        try:
            result = configuration_run.run(
                inputs, references, params, seed=0, monitor=guard, monitor_every=every
            )
        except CollapseDetected as stopped:
            print(f"  ascent {ratio:.0e} × s_forget: stopped by the guard at step {stopped.step}")
            first_stopped = first_stopped if first_stopped is not None else ratio
            continue
        except DivergenceError as error:
            print(f"  ascent {ratio:.0e} × s_forget: diverged ({error})")
            first_stopped = first_stopped if first_stopped is not None else ratio
            continue
        efficacy, utility, uis = (result.metrics[k] for k in ("forget_efficacy", "retained_utility", "uis"))
        print(
            f"  ascent {ratio:.0e} × s_forget: efficacy {efficacy:.3f}, utility {utility:.3f}, UIS {uis:.4f}"
        )
        if efficacy >= FORGETS and first_forgets is None:
            first_forgets = ratio
    window = (
        f"{math.log10(first_stopped / first_forgets):.1f} decades"
        if first_forgets is not None and first_stopped is not None
        else "—"
    )
    print(
        f"  first rate that forgets: {first_forgets if first_forgets is not None else 'none'}; first the "
        f"guard stops: {first_stopped if first_stopped is not None else 'none'}; between them: {window}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", nargs="+", choices=sorted(SAMPLES), default=sorted(SAMPLES))
    parser.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS))
    parser.add_argument("--retain-ratio", type=float, default=1e-4, help="the retain rate, × s_retain")
    parser.add_argument("--samples", type=int, default=0, help="shapes and scenes (0: 2,000 and 600)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None, help="reference cache (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        for problem in args.problems:
            sweep(problem, args.samples, args.ratios, args.retain_ratio, cache)


if __name__ == "__main__":
    main()
