"""Does the quickstart's interference-aware front beat plain GradDiff at the same step budget?

Runs the quickstart's search (``benchmarks/_quickstart.py``), then the same study with
``method: graddiff`` (same problem, request, steps, batch size, ascent/retain ranges, trial
count and sampler seed), and compares the best retained utility each reaches among trials that forget well
(forget efficacy ≥ 0.9), plus each study's two-dimensional (efficacy, utility) front.

    python benchmarks/quickstart_vs_graddiff.py [--trials N]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from _quickstart import quickstart_search

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.study.runner import run_study

ROOT = Path(__file__).resolve().parents[1]
GOOD_FORGETTING = 0.9


def run(raw: dict, out: Path, trials: int) -> tuple[list[dict], float]:
    config = parse_study({**raw, "output": str(out), "n_trials": trials})
    start = time.perf_counter()
    result = run_study(config, progress=False)
    seconds = time.perf_counter() - start
    rows = []
    for trial in result.summary.complete:
        metrics = trial.user_attrs["metrics"]
        rows.append(
            {
                "number": trial.number,
                "pareto": result.summary.is_pareto(trial),
                "efficacy": metrics["forget_efficacy"],
                "utility": metrics["retained_utility"],
                "params": trial.params,
            }
        )
    return rows, seconds


def best_forgetting(rows: list[dict]) -> dict | None:
    good = [r for r in rows if r["efficacy"] >= GOOD_FORGETTING]
    return max(good, key=lambda r: (r["utility"], r["efficacy"])) if good else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quickstart = quickstart_search()
    trials = args.trials or quickstart["n_trials"]
    graddiff = {
        **quickstart,
        "name": "quickstart_graddiff",
        "method": {
            "name": "graddiff",
            "fixed": {k: v for k, v in quickstart["method"]["fixed"].items() if k in ("steps", "batch_size")},
            "search": {k: quickstart["method"]["search"][k] for k in ("ascent_lr", "retain_lr")},
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        ia_rows, ia_seconds = run(quickstart, Path(tmp) / "ia", trials)
        gd_rows, gd_seconds = run(graddiff, Path(tmp) / "gd", trials)
    ia, gd = best_forgetting(ia_rows), best_forgetting(gd_rows)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}")
    print(
        f"trials per study: {trials}; "
        f"wall: interference_aware {ia_seconds:.1f} s, graddiff {gd_seconds:.1f} s"
    )
    for name, best in (("interference_aware", ia), ("graddiff", gd)):
        if best is None:
            print(f"{name}: no trial reached forget efficacy >= {GOOD_FORGETTING}")
        else:
            print(
                f"{name}: best utility among efficacy >= {GOOD_FORGETTING}: trial {best['number']} "
                f"efficacy {best['efficacy']:.4f} utility {best['utility']:.4f} params {best['params']}"
            )
    if ia and gd:
        beats = ia["efficacy"] >= gd["efficacy"] and ia["utility"] > gd["utility"]
        print(
            f"interference_aware beats graddiff on both: {beats} "
            f"(utility ratio {ia['utility'] / gd['utility']:.4f})"
        )
    for name, rows in (("interference_aware", ia_rows), ("graddiff", gd_rows)):
        front = sorted(
            (
                r
                for r in rows
                if not any(
                    o["efficacy"] >= r["efficacy"]
                    and o["utility"] >= r["utility"]
                    and (o["efficacy"] > r["efficacy"] or o["utility"] > r["utility"])
                    for o in rows
                )
            ),
            key=lambda r: -r["efficacy"],
        )
        print(
            f"{name} (efficacy, utility) front: "
            + ", ".join(f"({r['efficacy']:.3f}, {r['utility']:.3f})" for r in front)
        )


if __name__ == "__main__":
    main()
