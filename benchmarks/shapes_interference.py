"""shapes: how high the original model scores on every task, and how much the interference knob
(correlation between shape and colour) changes GradDiff's damage to the tasks it should keep.

For each correlation, the references are trained at the given size, and GradDiff (retain rate
1e-3, 80 steps, batch 64) forgets half of the circles from the shape head (partial mode) at each
ascent rate of a small sweep, so that damage can be compared at matched forgetting. Damage to a
kept task is the drop of its ``val`` score from the original; ``kept`` is the same on the forget
instances' own retained labels.

    python benchmarks/shapes_interference.py [--samples 20000] [--correlations 0.0 0.9]
        [--ascent-lrs 3e-5 1e-4 3e-4] [--cache DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.study_references import load_study_values

KEPT = ("colour", "position", "size")
RETAIN_LR = 1e-3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--correlations", type=float, nargs="+", default=[0.0, 0.9])
    parser.add_argument("--ascent-lrs", type=float, nargs="+", default=[3e-5, 1e-4, 3e-4])
    parser.add_argument("--cache", type=Path, help="reference cache (default: a temporary folder)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        for correlation in args.correlations:
            raw = {
                "name": "shapes_interference",
                "problem": {
                    "name": "shapes",
                    "params": {"num_samples": args.samples, "correlation": correlation},
                },
                "forget": {
                    "mode": "partial",
                    "target_tasks": ["shape"],
                    "where": {"shape": 0},
                    "fraction": 0.5,
                },
                # Its rates are plain-step rates: sgd named, as the default space takes Adam.
                "method": {"name": "graddiff", "fixed": {"steps": 80, "batch_size": 64, "optimizer": "sgd"}},
                "references": {"cache_dir": str(cache)},
                "tracking": {"enabled": False},
                "collapse_guard": {"enabled": False},
            }
            start = time.perf_counter()
            experiment = load_study_values(parse_study(raw))
            setup = time.perf_counter() - start
            scores = experiment.references.scores
            original = {t: scores[f"score/original/val/{t}"] for t in experiment.inputs.task_names}
            print(
                f"correlation {correlation}: references ready in {setup:.0f} s; original val "
                + ", ".join(f"{t} {v:.3f}" for t, v in original.items())
            )
            for ascent_lr in args.ascent_lrs:
                configuration = {"ascent_lr": ascent_lr, "retain_lr": RETAIN_LR}
                metrics = configuration_run.run(*experiment, configuration, seed=0).metrics
                damage = {t: original[t] - metrics[f"score/unlearned/val/{t}"] for t in KEPT}
                kept = {
                    t: metrics[f"score/original/kept/{t}"] - metrics[f"score/unlearned/kept/{t}"]
                    for t in KEPT
                }
                forget = metrics["score/unlearned/forget/shape"]
                print(
                    f"  graddiff {configuration}: forget-set shape score {forget:.3f} "
                    f"(retrain {metrics['score/retrain/forget/shape']:.3f}), forget efficacy "
                    f"{metrics['forget_efficacy']:.3f}, retained utility {metrics['retained_utility']:.4f}"
                )
                print(
                    "    val damage on kept tasks: "
                    + ", ".join(f"{t} {v:+.4f}" for t, v in damage.items())
                    + f" (mean {sum(damage.values()) / len(damage):+.4f}); on the forget instances' "
                    + f"kept labels: mean {sum(kept.values()) / len(kept):+.4f}"
                )


if __name__ == "__main__":
    main()
