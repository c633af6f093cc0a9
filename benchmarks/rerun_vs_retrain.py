"""One configuration's unlearning seconds against one retrain's training seconds, in one process.

The configuration (a method, its rates, a seed) is re-run ``--repeats`` times on the
paper-claims benchmark's partial request for ``--problem`` (``paper_claims.setting``), then one
retrain is trained with the problem's recipe on the request's retain set, one after the other,
so that both seconds come from the same machine in the same state. Printed: the re-run's
metrics (so a trial it reproduces can be checked), the unlearning seconds (median), the
retrain's seconds and their ratio beside the counted ``compute_cost``; and the original's rate
scales, the retain probe included (run it with ``--threads 1`` and ``2``, or an empty
``--cache``, to see whether they move).

    python benchmarks/rerun_vs_retrain.py --problem scenes --samples 600 --method task_projection \\
        --params '{"ascent_lr": 0.002144278902520974, "retain_lr": 0.0013729299049678547, \\
        "projection_strength": 0.5288949197529045}' --seed 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from paper_claims import SAMPLES, one_configuration

from tune_unlearn.methods import measure_scales
from tune_unlearn.references.training import train_model
from tune_unlearn.trial import configuration_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", choices=sorted(SAMPLES), default="digits")
    parser.add_argument("--samples", type=int, default=0, help="shapes and scenes (0: 2,000 and 600)")
    parser.add_argument("--method", default="graddiff")
    parser.add_argument("--params", type=json.loads, required=True, help="the configuration, as JSON")
    parser.add_argument("--seed", type=int, default=0, help="the trial's seed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None, help="reference cache (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        inputs, references = one_configuration(args.problem, args.samples, args.method, cache)
        scales = measure_scales(
            references.original_model(), inputs.setup, {"retain_probe"}, inputs.config.problem.seed
        ).scales
        print("rate scales:", ", ".join(f"{name} {value!r}" for name, value in scales.items()))
        seconds, metrics = [], {}
        for _ in range(args.repeats):
            metrics = configuration_run.run(inputs, references, args.params, seed=args.seed).metrics
            seconds.append(metrics["gpu_seconds"])
        shown = ("forget_efficacy", "retained_utility", "uis", "compute_cost")
        print("metrics:", ", ".join(f"{name} {metrics[name]:.4f}" for name in shown))
        unlearning = statistics.median(seconds)
        print(f"unlearning seconds: {', '.join(f'{s:.2f}' for s in seconds)}; median {unlearning:.2f}")
        plan = inputs.reference_plan
        started = time.perf_counter()
        train_model(plan.problem, plan.data, plan.retrain_set, seed=plan.seed + 7, progress=False)
        retrain = time.perf_counter() - started
        print(
            f"one retrain: {retrain:.1f} s; unlearning / retrain {unlearning / retrain:.3f} in wall seconds "
            f"(counted compute_cost {metrics['compute_cost']:.3f})"
        )


if __name__ == "__main__":
    main()
