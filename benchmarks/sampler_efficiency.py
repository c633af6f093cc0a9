"""Sampler efficiency: hypervolume after N trials for each sampler, over seeds.

Each sampler runs the quickstart study (interference-aware on digits, four objectives, the
``forget_efficacy >= 0.9`` constraint) with tracking off and the references cached, once per
seed. The hypervolume is the study's own (``pareto.json``: feasible complete trials, the fixed
box of docs/guide.md and pareto.py), so the figures compare directly.

Samplers are the study file's names (``tpe``, ``nsga2``, ``gp``, ``random``) or a lever on
TPE: ``tpe-multivariate`` (one joint density over the hyperparameters instead of one per
hyperparameter), ``tpe-startup5`` (model-based after 5 random trials instead of 10).
``--search-steps LOW HIGH`` adds the step budget to the search (a fidelity: fewer steps cost
less), so that ``compute_cost`` varies.

    python benchmarks/sampler_efficiency.py [--trials 40] [--seeds 0 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from tune_unlearn.config import parse_study
from tune_unlearn.runner import run_study

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ("tpe", "nsga2", "gp", "random")


LEVERS = {
    "tpe-multivariate": {"multivariate": True},
    "tpe-startup5": {"n_startup_trials": 5},
}


def hypervolume(raw: dict, sampler: str, seed: int, trials: int, out: Path) -> float:
    name = "tpe" if sampler in LEVERS else sampler
    config = parse_study(
        {
            **raw,
            "output": str(out),
            "n_trials": trials,
            "sampler": {"name": name, "seed": seed, **LEVERS.get(sampler, {})},
            "tracking": {"enabled": False},
        }
    )
    run_study(config, progress=False)
    return float(json.loads((out / "pareto.json").read_text())["hypervolume"]["value"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--search-steps", type=int, nargs=2, metavar=("LOW", "HIGH"))
    parser.add_argument(
        "--study",
        choices=("quickstart", "shapes-tied"),
        default="quickstart",
        help="shapes-tied: the quickstart's method and space on shapes with shape and colour tied "
        "(correlation 0.9, 4,000 samples), forgetting half the circles from the shape head",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    raw = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    if args.study == "shapes-tied":
        raw["name"] = "shapes_tied"
        raw["problem"] = {"name": "shapes", "params": {"num_samples": 4000, "correlation": 0.9}, "seed": 0}
        raw["forget"] = {"mode": "partial", "target_tasks": ["shape"], "where": {"shape": 0}, "fraction": 0.5}
    if args.search_steps:
        del raw["method"]["fixed"]["steps"]
        low, high = args.search_steps
        raw["method"]["search"]["steps"] = {"type": "int", "low": low, "high": high, "log": True}
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # seed by seed, every sampler within a seed: a run cut short still compares
        for seed in args.seeds:
            for sampler in args.samplers:
                start = time.perf_counter()
                value = hypervolume(raw, sampler, seed, args.trials, Path(tmp) / f"{sampler}-{seed}")
                results.setdefault(sampler, []).append(value)
                print(
                    f"{sampler} seed {seed}: hypervolume {value:.4f} ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    best = max(statistics.mean(v) for v in results.values())
    print(f"\nhypervolume after {args.trials} trials, mean over seeds {args.seeds}:")
    print("| sampler | mean | sd | per seed | mean / best |")
    print("|---|---|---|---|---|")
    for sampler, values in results.items():
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = ", ".join(f"{v:.4f}" for v in values)
        ratio = f"{mean / best:.3f}" if best > 0 else "— (no feasible trial anywhere)"
        print(f"| {sampler} | {mean:.4f} | {sd:.4f} | {per_seed} | {ratio} |")


if __name__ == "__main__":
    main()
