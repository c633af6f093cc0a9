"""Tracking overhead per trial: the quickstart's wall time with MLflow tracking on vs off.

Both runs share the cached references and the sampler seed; the ratio covers everything the
tracking adds (store set-up, a parent run, a nested run per trial with batched metrics and
curves, artifacts and the logged candidate model).

    python benchmarks/tracking_overhead.py [--trials N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _quickstart import quickstart_search

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.study.runner import run_study

ROOT = Path(__file__).resolve().parents[1]


def wall(raw: dict, out: Path, tracking: bool, trials: int) -> float:
    config = parse_study({**raw, "output": str(out), "n_trials": trials, "tracking": {"enabled": tracking}})
    start = time.perf_counter()
    run_study(config, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = quickstart_search()
    with tempfile.TemporaryDirectory() as tmp:
        wall(raw, Path(tmp) / "warm", False, 1)  # train and cache the references first
        off = wall(raw, Path(tmp) / "off", False, args.trials)
        on = wall(raw, Path(tmp) / "on", True, args.trials)
    print(
        f"{args.trials} trials: tracking off {off:.1f} s ({off / args.trials:.3f} s/trial), "
        f"on {on:.1f} s ({on / args.trials:.3f} s/trial); ratio on/off {on / off:.3f}"
    )


if __name__ == "__main__":
    main()
