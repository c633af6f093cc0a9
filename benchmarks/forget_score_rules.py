"""The forgetting score under both rules on synthetic confidences with known truth.

    python benchmarks/forget_score_rules.py [--examples 200] [--seed 0]

Each case draws, per forget example, N unlearned and K retrained logit-scaled confidences from
normal distributions (retrains: mean 0, sd 1) and scores them with ``rule: bounded`` (the
default: Clopper–Pearson upper bounds of the rates) and ``rule: challenge`` (the NeurIPS 2023
challenge's observed rates, direction rule and cap). The issue-29 column is the challenge
scorer's own figure on the same cases as the issue reports it, for comparison.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tune_unlearn.scoring.forget_score import RULES, forgetting_quality, resolution

#: (label, models a side, unlearned mean, unlearned sd, the issue's challenge-scorer figure)
CASES = [
    ("identical distributions", 512, 0.0, 1.0, 0.203),
    ("shifted by 0.25 sd", 512, 0.25, 1.0, 0.117),
    ("shifted by 1 sd", 512, 1.0, 1.0, 0.014),
    ("unlearned spread 0.3 sd", 512, 0.0, 0.3, 0.001),
    ("10 models, unlearned spread 0.1 sd", 10, 0.0, 0.1, 0.039),
    ("20 models, unlearned spread 0.1 sd", 20, 0.0, 0.1, None),
    ("16 models, identical distributions", 16, 0.0, 1.0, None),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(
        "| case | models a side | bounded | challenge | challenge scorer (issue 29) "
        "| lowest showable (b / c) |"
    )
    print("|---|---|---|---|---|---|")
    started = time.perf_counter()
    for label, models, mean, sd, published in CASES:
        unlearned = rng.normal(mean, sd, size=(models, args.examples))
        retrained = rng.normal(0.0, 1.0, size=(models, args.examples))
        scores = [forgetting_quality(unlearned, retrained, rule=rule) for rule in RULES]
        floors = [resolution(models, models, rule=rule) for rule in RULES]
        reported = "—" if published is None else f"{published:.3f}"
        print(
            f"| {label} | {models} | {scores[0]:.3f} | {scores[1]:.3f} | {reported} | "
            f"{floors[0]:.4f} / {floors[1]:.4f} |"
        )
    print(f"\n{args.examples} examples a case, seed {args.seed}, {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
