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

With ``--random-requests N`` the stream is N full-mode requests of disjoint seeded random
shares (``--share`` of the train set each, as index files) instead, on ``--problem digits`` or
``shapes`` (the shapes study's method and space, at ``--samples`` images); ``--bank`` judges them
against one bank of 5 retrains shared by the stream (``references.retrain.scope: stream``)
instead of 5 retrains per request. ``stream.md``'s table then gives each request's all-in cost:

    python benchmarks/request_stream.py --problem shapes --samples 4000 --random-requests 10 \
        --bank --trials 6 --threads 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from tune_unlearn.config.study_config import StudyConfig, parse_study
from tune_unlearn.study.stream import retrain_at, run_stream, stream_markdown
from tune_unlearn.trial.inputs import load_inputs

ROOT = Path(__file__).resolve().parents[1]


def random_requests(config: StudyConfig, count: int, share: float, folder: Path) -> list[dict[str, Any]]:
    """``count`` disjoint seeded random requests of ``share`` of the train set, as index files."""
    train = load_inputs(config).train
    size = max(1, round(share * len(train)))
    order = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))]
    requests = []
    for number in range(count):
        path = folder / f"request-{number}.txt"
        path.write_text("\n".join(str(int(i)) for i in order[number * size : (number + 1) * size]) + "\n")
        requests.append({"mode": "full", "index_file": str(path)})
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--digits", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--problem", choices=("digits", "shapes"), default="digits")
    parser.add_argument("--samples", type=int, default=4000, help="shapes: images")
    parser.add_argument("--random-requests", type=int, default=0, help="N random requests instead")
    parser.add_argument("--share", type=float, default=0.01, help="of the train set, per random request")
    parser.add_argument("--bank", action="store_true", help="one bank of 5 retrains for the stream")
    parser.add_argument("--cache", type=Path, default=None, help="reference cache (default: the user's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    study = "quickstart.yaml" if args.problem == "digits" else "shapes_full.yaml"
    raw = yaml.safe_load((ROOT / "studies" / study).read_text())
    raw["sampler"] = {"name": "tpe", "seed": 0}  # as recorded; the quickstart moved to GP later
    if args.problem == "shapes":
        raw["problem"]["params"]["num_samples"] = args.samples
    out = Path(tempfile.mkdtemp())
    requests = (
        random_requests(parse_study(raw), args.random_requests, args.share, out)
        if args.random_requests
        else [{"mode": "full", "where": {"digit": d}, "fraction": 0.2} for d in args.digits]
    )
    del raw["forget"]
    references = dict(raw.get("references") or {})
    references["retrain"] = {"seeds": 5, "scope": "stream"} if args.bank else {"seeds": 5}
    if args.cache is not None:
        references["cache_dir"] = str(args.cache)
    raw.update(
        {
            "name": "stream",
            "requests": requests,
            "references": references,
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
