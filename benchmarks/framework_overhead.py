"""Framework overhead: the share of a trial's wall time spent outside the unlearning phase.

A study on ``shapes`` with MLflow tracking on (a local SQLite store) and SQLite storage; each
trial records where its time went (``seconds`` user attribute: unlearning, evaluation,
tracking, storage, total), and Optuna's own start/complete timestamps give the trial's wall
time including the final storage write. References are cached under ``--cache``, so a second
run measures trials only.

    python benchmarks/framework_overhead.py [--samples 20000] [--trials 6] [--steps 100]
        [--retain-sample 2000 (0: all)] [--eval-batch 256]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import optuna
import torch
from _shapes_study import shapes_study

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.references.training import default_cache_dir
from tune_unlearn.study.runner import run_study

SEARCH = {
    "ascent_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
    "retain_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
    "projection_strength": {"type": "float", "low": 0.5, "high": 1.0},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cache", type=Path, default=default_cache_dir())
    parser.add_argument("--retain-sample", type=int, default=2000, help="0: score the whole retain set")
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    evaluation = {"retain_sample": args.retain_sample or None, "batch_size": args.eval_batch}
    with tempfile.TemporaryDirectory() as tmp:
        raw = shapes_study(
            args.samples,
            trials=args.trials,
            steps=args.steps,
            out=Path(tmp),
            cache=args.cache,
            search=SEARCH,
            sampler={"name": "random", "seed": 0},
            collapse_guard={"enabled": False},  # every trial runs its full step budget
            tracking={"enabled": True},
            evaluation=evaluation,
        )
        run = run_study(parse_study(raw))
        complete = [t for t in run.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    phases = ("unlearning", "evaluation", "tracking", "storage")
    walls = [(t.datetime_complete - t.datetime_start).total_seconds() for t in complete]  # type: ignore[operator]
    rows = [t.user_attrs["seconds"] for t in complete]
    wall = sum(walls)
    shares = {p: sum(r[p] for r in rows) / wall for p in phases}
    other = 1.0 - sum(shares.values())
    overhead = 1.0 - shares["unlearning"]
    print(
        f"shapes {args.samples} samples, {len(complete)} trials of {args.steps} steps (batch 64), "
        f"median trial {statistics.median(walls):.2f} s; evaluation {evaluation}"
    )
    for phase in phases:
        print(f"  {phase}: {shares[phase]:.1%}")
    print(f"  other (suggest, sampler, Optuna's writes): {other:.1%}")
    verdict = "met" if overhead <= 0.15 else "MISSED"
    print(f"framework overhead: {overhead:.1%} of trial wall time (target ≤ 15%: {verdict})")


if __name__ == "__main__":
    main()
