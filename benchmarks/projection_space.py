"""Exact projections (shared parameters) against the approximate ones (shared representation).

Each projection method runs the quickstart study (digits, forget the digit 3 from the digit
head, four objectives, ``forget_efficacy >= 0.9``) twice on the same sampler seed: once with
``projection_space: parameters`` and once with ``representation``. Reported side by side: the
unlearning seconds per step (the step cost), the best retained utility among trials with forget
efficacy ≥ 0.9, and the hypervolume of the front.

    python benchmarks/projection_space.py [--trials 30] [--methods task_projection interference_aware]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from pathlib import Path

import torch
from _quickstart import quickstart_search

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.methods import METHODS
from tune_unlearn.study.runner import run_study

ROOT = Path(__file__).resolve().parents[1]
METHOD_NAMES = ("task_projection", "subspace_projection", "instance_orthogonalization", "interference_aware")


def run(raw: dict, method: str, space: str, trials: int, out: Path) -> dict[str, float]:
    study = copy.deepcopy(raw)
    hyper = METHODS.get(method).hyperparameters()
    study["method"]["name"] = method
    study["method"]["fixed"] = {k: v for k, v in study["method"]["fixed"].items() if k in hyper}
    study["method"]["fixed"]["projection_space"] = space
    study["method"]["search"] = {k: v for k, v in study["method"]["search"].items() if k in hyper}
    study.update(n_trials=trials, output=str(out), tracking={"enabled": False})
    run_study(parse_study(study), progress=False)
    document = json.loads((out / "pareto.json").read_text())
    trials_done = document["trials"]
    steps = study["method"]["fixed"]["steps"]
    per_step = statistics.median(t["metrics"]["gpu_seconds"] / steps for t in trials_done)
    good = [t["metrics"] for t in trials_done if t["metrics"]["forget_efficacy"] >= 0.9]
    best = max(good, key=lambda m: m["retained_utility"]) if good else None
    return {
        "ms_per_step": per_step * 1000,
        "best_utility": best["retained_utility"] if best else float("nan"),
        "its_efficacy": best["forget_efficacy"] if best else float("nan"),
        "feasible": len(good),
        "complete": len(trials_done),
        "hypervolume": document["hypervolume"]["value"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--methods", nargs="+", default=list(METHOD_NAMES))
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = quickstart_search()
    print(
        "| method | space | ms/step (median) | best utility with efficacy ≥ 0.9 | its efficacy "
        "| feasible / complete | hypervolume |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            for space in ("parameters", "representation"):
                r = run(raw, method, space, args.trials, Path(tmp) / f"{method}-{space}")
                print(
                    f"| {method} | {space} | {r['ms_per_step']:.2f} | {r['best_utility']:.4f} | "
                    f"{r['its_efficacy']:.3f} | {r['feasible']} / {r['complete']} | {r['hypervolume']:.4f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
