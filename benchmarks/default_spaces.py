"""Do the default search spaces transfer? Each method's default space on each problem, random
sampling: how many trials complete (rather than diverge), how many are feasible, and the best
utility among trials that forgot.

    python benchmarks/default_spaces.py [--problems digits shapes] [--samples 2000]
        [--methods graddiff interference_aware npo] [--trials 10] [--steps 30] [--threads 2]

Three variants of each space, on the same request, references and sampler seed:

- ``published``: the absolute default ranges of earlier versions (ascent ``[1e-4, 0.1]``,
  descent ``[1e-3, 0.5]``, log) with unbounded steps (``max_step`` 1e12): the methods as
  published;
- ``bounded``: the same ranges, steps bounded at the default ``max_step`` (1% of ‖θ‖);
- ``relative``: today's default, ranges relative to the original's gradient scale, bounded.

Requests: digits forgets the digit label of every 3, shapes the shape label of every circle,
scenes the segmentation of every scene with a ball (partial mode). ``forgot`` counts trials with
``forget_efficacy`` ≥ 0.8; ``best utility`` is the highest ``retained_utility`` among them.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.methods import METHODS
from tune_unlearn.study.runner import run_study

REQUESTS: dict[str, dict[str, Any]] = {
    "digits": {"mode": "partial", "target_tasks": ["digit"], "where": {"digit": 3}},
    "shapes": {"mode": "partial", "target_tasks": ["shape"], "where": {"shape": 0}},
    "scenes": {"mode": "partial", "target_tasks": ["segmentation"], "where": {"has_ball": 1}},
}
PUBLISHED = {"ascent": (1e-4, 0.1), "descent": (1e-3, 0.5)}
ASCENT_NAMES = ("ascent_lr",)


def space(method: str, variant: str) -> dict[str, Any]:
    """The method's default space, or its rates in the earlier absolute ranges."""
    default = {name: dict(d) for name, d in METHODS.get(method).default_search.items()}
    if variant == "relative":
        return default
    for name, dimension in default.items():
        if "scale" in dimension:
            low, high = PUBLISHED["ascent" if name in ASCENT_NAMES else "descent"]
            dimension.update(low=low, high=high)
            dimension.pop("scale")
    return default


def study(
    problem: str, samples: int, method: str, variant: str, args: argparse.Namespace, folder: Path
) -> Any:
    params: dict[str, Any] = {} if problem == "digits" else {"num_samples": samples}
    fixed: dict[str, Any] = {"steps": args.steps, "batch_size": 32}
    if variant == "published":
        fixed["max_step"] = 1e12
    raw = {
        "name": f"{problem}-{method}-{variant}",
        "problem": {"name": problem, "params": params},
        "forget": REQUESTS[problem],
        "method": {"name": method, "fixed": fixed, "search": space(method, variant)},
        "n_trials": args.trials,
        "sampler": {"name": "random", "seed": 0},
        "objectives": ["forget_efficacy", "retained_utility"],
        "references": {"cache_dir": str(folder / "cache"), "retrain": {"seeds": 2}},
        "collapse_guard": {"enabled": False},
        "tracking": {"enabled": False},
        "output": str(folder / f"{problem}-{method}-{variant}"),
    }
    return run_study(parse_study(raw), progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="*", choices=sorted(REQUESTS), default=["digits", "shapes"])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--methods", nargs="*", default=["graddiff", "interference_aware", "npo"])
    parser.add_argument("--variants", nargs="*", default=["published", "bounded", "relative"])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("problem  method               variant    complete  diverged  forgot  best utility")
    with tempfile.TemporaryDirectory() as scratch:
        for problem in args.problems:
            for method in args.methods:
                for variant in args.variants:
                    run = study(problem, args.samples, method, variant, args, Path(scratch))
                    trials = run.study.trials
                    complete = [t for t in trials if t.state.name == "COMPLETE"]
                    failed = [t for t in trials if t.state.name == "FAIL"]
                    forgot = [t for t in complete if t.values[0] >= 0.8]
                    best = max((t.values[1] for t in forgot), default=math.nan)
                    print(
                        f"{problem:8s} {method:20s} {variant:10s} {len(complete):8d} {len(failed):9d} "
                        f"{len(forgot):7d} {best:13.3f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
