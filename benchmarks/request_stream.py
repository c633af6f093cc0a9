"""A request stream on digits: how far does the running model drift, what does the stream cost
against one retrain per request, and where does it recommend retraining?

Six full-mode requests arrive one after another, each deleting a seeded 20% of one digit's train
images (digits 0-5: disjoint). Each request is tuned with the quickstart's method and space
(``--trials`` trials, ``forget_efficacy >= 0.9``), warm-started from the one before, and its
recommended model is gated with ``validators/release.yaml`` against a retrain ensemble on every
image deleted so far.

Cost is counted, not timed: ``compute_cost`` is a configuration's sample-gradients as a fraction
of one retrain's, so the chosen configurations' costs add up to what the stream spent unlearning,
the whole study's trials to what it spent searching; one retrain per request costs 1.0 each.

    python benchmarks/request_stream.py [--trials 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

from tune_unlearn.config import parse_study
from tune_unlearn.stream import retrain_at, run_stream, stream_markdown

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--digits", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    del raw["forget"]
    out = Path(tempfile.mkdtemp())
    raw.update(
        {
            "name": "stream",
            "requests": [{"mode": "full", "where": {"digit": d}, "fraction": 0.2} for d in args.digits],
            "n_trials": args.trials,
            "validation": {"suite": str(ROOT / "validators" / "release.yaml")},
            "output": str(out),
            "tracking": {"enabled": False},
        }
    )
    started = time.perf_counter()
    rows = run_stream(parse_study(raw), progress=False)
    seconds = time.perf_counter() - started
    print(stream_markdown(rows).split("\n![")[0])
    print("\n| request | unlearning cost (chosen configuration) | search cost (all trials) |")
    print("|---|---|---|")
    total_unlearning = total_search = 0.0
    for row in rows:
        trials = json.loads((out / "stream" / f"request-{row.request}" / "pareto.json").read_text())["trials"]
        search = sum(t["metrics"].get("compute_cost") or 0.0 for t in trials)
        chosen = next((t["metrics"].get("compute_cost") or 0.0 for t in trials if t["recommended"]), 0.0)
        total_unlearning += chosen
        total_search += search
        print(f"| {row.request} | {chosen:.3f} | {search:.3f} |")
    print(
        f"\n{len(rows)} requests in {seconds:.0f} s. In retrain units: unlearning {total_unlearning:.2f}, "
        f"search {total_search:.2f}, against {len(rows)} for one retrain per request."
    )
    stop = retrain_at(rows)
    print(
        "retrain recommended at:",
        "none" if stop is None else f"request {stop.request} ({', '.join(stop.failed)})",
    )


if __name__ == "__main__":
    main()
