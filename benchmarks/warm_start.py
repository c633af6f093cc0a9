"""Warm start: does an earlier study's front help a second, different deletion request?

The earlier study is the quickstart (forget the digit 3 from the digit head, 30 trials). The
second request forgets the digit 5 from the same model. Per seed, it runs ``--trials`` trials
twice: from nothing, and with ``warm_start: {top: K}`` from the quickstart's study; the
hypervolume of each (the study's own, its feasible front in the fixed box) after those trials.

    python benchmarks/warm_start.py [--trials 10] [--top 5] [--seeds 0 1 2 3 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _quickstart import quickstart_search

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.study.runner import run_study

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--earlier-trials",
        type=int,
        default=None,
        help="the earlier quickstart study's (default: its file's)",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quickstart = quickstart_search()
    tmp = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    earlier_raw = {**quickstart, "output": str(tmp / "earlier"), "tracking": {"enabled": False}}
    if args.earlier_trials is not None:
        earlier_raw["n_trials"] = args.earlier_trials
    earlier = parse_study(earlier_raw)
    run_study(earlier, progress=False)
    storage = f"sqlite:///{tmp / 'earlier' / 'study.db'}"
    second = {
        **quickstart,
        "name": "forget5",
        "forget": {"mode": "partial", "target_tasks": ["digit"], "where": {"digit": 5}},
        "n_trials": args.trials,
        "tracking": {"enabled": False},
    }
    results: dict[str, list[float]] = {"cold": [], "warm": []}
    for seed in args.seeds:
        for kind in ("cold", "warm"):
            raw = {**second, "sampler": {"name": "tpe", "seed": seed}, "output": str(tmp / f"{kind}-{seed}")}
            if kind == "warm":
                raw["warm_start"] = {"storage": storage, "study": "quickstart", "top": args.top}
            run_study(parse_study(raw), progress=False)
            document = json.loads((tmp / f"{kind}-{seed}" / "pareto.json").read_text())
            results[kind].append(float(document["hypervolume"]["value"]))
            print(f"seed {seed} {kind}: hypervolume {results[kind][-1]:.4f}", flush=True)
    print(
        f"\nforget digit 5 after {args.trials} trials (warm: the quickstart's top {args.top}); "
        f"{time.perf_counter() - started:.0f} s"
    )
    print("| start | mean | sd | per seed |")
    print("|---|---|---|---|")
    for kind, values in results.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        cells = ", ".join(f"{v:.4f}" for v in values)
        print(f"| {kind} | {statistics.mean(values):.4f} | {sd:.4f} | {cells} |")
    gain = [w - c for w, c in zip(results["warm"], results["cold"], strict=True)]
    print(f"warm − cold per seed: {', '.join(f'{g:+.4f}' for g in gain)}; mean {statistics.mean(gain):+.4f}")


if __name__ == "__main__":
    main()
