"""How far honest retrains of different seeds land apart, per reference-training recipe.

    python benchmarks/reference_spread.py --recipes constant:20 cosine:20 cosine:30 \\
        --seeds 10001 10002 10007 10008 --threads 1

Each recipe (``schedule:epochs``) trains one retrain per seed for gate_power's shapes random
request (8000 samples, 30% of the colour-0 instances deleted, full mode) and scores it on
``val``, on the forget instances and on the retain sample. The figure is the range over seeds
of each task's score: the spread of honest deletions that the retrain ensemble's tolerance band
has to cover. The seeds default to four of gate_power's held-out retrains (``10000 + seed``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from gate_power import study

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.references.training import train_model
from tune_unlearn.trial.inputs import evaluate_scored, load_inputs, score


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", nargs="+", default=["constant:20", "cosine:30"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[10001, 10002, 10007, 10008])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp())
    print("| recipe | set/task | min | max | range | scores by seed |")
    print("|---|---|---|---|---|---|")
    for spec in args.recipes:
        schedule, _, epochs = spec.partition(":")
        raw = study("shapes", "random", out / "cache", out / "study")
        raw["problem"]["params"] |= {"schedule": schedule, "epochs": int(epochs)}
        inputs = load_inputs(parse_study(raw))
        scores: list[dict[str, float]] = []
        started = time.perf_counter()
        for seed in args.seeds:
            model = train_model(inputs.problem, inputs.data, inputs.sets.retain, seed=seed, progress=False)
            scores.append(score(inputs, "retrain", evaluate_scored(inputs, model)))
        seconds = (time.perf_counter() - started) / len(args.seeds)
        for key in scores[0]:
            if not key.startswith("score/retrain/"):
                continue
            values = [s[key] for s in scores]
            by_seed = ", ".join(f"{v:.3f}" for v in values)
            name = key.removeprefix("score/retrain/")
            print(
                f"| {spec} ({seconds:.0f} s/model) | {name} | {min(values):.3f} | {max(values):.3f} | "
                f"{max(values) - min(values):.3f} | {by_seed} |"
            )


if __name__ == "__main__":
    main()
