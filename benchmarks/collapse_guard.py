"""The collapse guard on a collapse-prone study: compute saved, and the hypervolume of both fronts.

GradDiff on digits with an ascent range reaching far into collapse, 30 TPE trials, run once
with the guard (floor 0.5 on retained utility, checked every 10 steps) and once without, on
the same seed. Figures come from each study's ``pareto.json``.

    python benchmarks/collapse_guard.py [--trials N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.study.runner import run_study

STUDY = {
    "name": "collapse_prone",
    "problem": {"name": "digits", "seed": 0},
    "forget": {"mode": "partial", "target_tasks": ["digit"], "where": {"digit": 3}},
    "method": {
        "name": "graddiff",
        "fixed": {"steps": 100, "batch_size": 32},
        "search": {
            "ascent_lr": {"type": "float", "low": 0.001, "high": 0.3, "log": True},
            "retain_lr": {"type": "float", "low": 0.001, "high": 0.3, "log": True},
        },
    },
    "objectives": ["forget_efficacy", "retained_utility", "uis", "gpu_seconds"],
    "sampler": {"name": "tpe", "seed": 0},
}


def run(guard: bool, trials: int, out: Path) -> dict:
    raw = {**STUDY, "n_trials": trials, "output": str(out), "collapse_guard": {"enabled": guard}}
    start = time.perf_counter()
    run_study(parse_study(raw), progress=False)
    wall = time.perf_counter() - start
    document = json.loads((out / "pareto.json").read_text())
    unlearning = sum(t["metrics"]["gpu_seconds"] for t in document["trials"])
    return {
        "wall": wall,
        "unlearning_seconds": unlearning,
        **document["counts"],
        "hypervolume": document["hypervolume"]["value"],
        **document["collapse_guard"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        on = run(True, args.trials, Path(tmp) / "on")
        off = run(False, args.trials, Path(tmp) / "off")
    for name, r in (("guard on", on), ("guard off", off)):
        print(
            f"{name}: wall {r['wall']:.1f} s, complete {r['complete']}, pruned {r['pruned']}, "
            f"failed {r['fail']}, "
            f"steps saved {r['steps_saved']}, seconds saved {r['seconds_saved']:.2f}, "
            f"hypervolume {r['hypervolume']:.4f}"
        )
    print(
        f"wall ratio on/off: {on['wall'] / off['wall']:.3f}; "
        f"hypervolume on/off: {on['hypervolume']:.4f} / {off['hypervolume']:.4f}"
    )


if __name__ == "__main__":
    main()
