"""shapes: how high the original model scores on every task, and how much the interference knob
(correlation between shape and colour) changes GradDiff's damage to the tasks it should keep.

For each correlation, the references are trained at the given size, and one fixed GradDiff
configuration forgets half of the circles from the shape head (partial mode). Damage to a kept
task is the drop of its ``val`` score from the original; ``kept`` is the same on the forget
instances' own retained labels.

    python benchmarks/shapes_interference.py [--samples 20000] [--correlations 0.0 0.9]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tune_unlearn.config import parse_study
from tune_unlearn.experiment import Experiment

KEPT = ("colour", "position", "size")
CONFIGURATION = {"ascent_lr": 3e-4, "retain_lr": 1e-3}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--correlations", type=float, nargs="+", default=[0.0, 0.9])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
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
                "method": {"name": "graddiff", "fixed": {"steps": 80, "batch_size": 64}},
                "references": {"cache_dir": str(Path(cache) / "refs")},
                "tracking": {"enabled": False},
                "collapse_guard": {"enabled": False},
            }
            start = time.perf_counter()
            experiment = Experiment(parse_study(raw), progress=False)
            setup = time.perf_counter() - start
            scores = experiment.reference_scores
            original = {t: scores[f"score/original/val/{t}"] for t in experiment.task_names}
            metrics = experiment.run(CONFIGURATION, seed=0).metrics
            damage = {t: original[t] - metrics[f"score/unlearned/val/{t}"] for t in KEPT}
            kept = {
                t: metrics[f"score/original/kept/{t}"] - metrics[f"score/unlearned/kept/{t}"] for t in KEPT
            }
            print(
                f"correlation {correlation}: references trained in {setup:.0f} s; original val "
                + ", ".join(f"{t} {v:.3f}" for t, v in original.items())
            )
            print(
                f"  graddiff {CONFIGURATION}: forget efficacy {metrics['forget_efficacy']:.3f}, "
                f"retained utility {metrics['retained_utility']:.4f}"
            )
            print(
                "  val damage on kept tasks: "
                + ", ".join(f"{t} {v:+.4f}" for t, v in damage.items())
                + f" (mean {sum(damage.values()) / len(damage):+.4f})"
            )
            print(
                "  damage on the forget instances' kept labels: "
                + ", ".join(f"{t} {v:+.4f}" for t, v in kept.items())
                + f" (mean {sum(kept.values()) / len(kept):+.4f})"
            )


if __name__ == "__main__":
    main()
