"""Does minimising UIS trade against robustness to the recovery attacks? Fronts with and without.

Three studies per seed on one request, the same sampler and trial budget:

- ``without``: the study's own objectives (forget efficacy, retained utility, UIS, compute);
- ``objective``: the same plus ``relearn_recovery`` as a fifth objective;
- ``constraint``: the same four objectives, plus ``relearn_recovery <= margin`` (the release
  gate's relearning check, as a constraint).

Every complete trial of ``without`` is re-run (same configuration, same seed: the same model)
and measured with the attacks, so its recovery is known though the search never saw it. Reported
per arm: the Spearman rank correlation of UIS with ``relearn_recovery`` over complete trials
(positive: smaller shifts come back more), the share of feasible front trials within the margin,
and the recommended trial's UIS, recovery and whether it is within the margin.

    python benchmarks/robustness_fronts.py --problem digits --trials 30 --seeds 0 1 2 --threads 1
    python benchmarks/robustness_fronts.py --problem shapes --samples 4000 --trials 16 --seeds 0 1
    python benchmarks/robustness_fronts.py --problem scenes --samples 600 --trials 12 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from _quickstart import quickstart_search
from _shapes_study import shapes_study
from optuna.trial import FrozenTrial
from scipy.stats import spearmanr

from tune_unlearn.config.study_config import parse_study
from tune_unlearn.references.attacks import RecoveryMeasures
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.study.runner import run_study
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.study_references import LoadedStudy, load_study_values

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("without", "objective", "constraint")


def base_study(problem: str, samples: int, trials: int, cache: Path) -> dict[str, Any]:
    if problem == "digits":
        raw = quickstart_search()
    elif problem == "scenes":
        # studies/scenes_partial.yaml as written (interference_aware on its default space; the
        # segmentation labels of every scene with a ball) at ``samples`` renders, without its
        # budget_hours, and with the quickstart's constraint.
        raw = yaml.safe_load((ROOT / "studies" / "scenes_partial.yaml").read_text())
        raw["problem"] = {"name": "scenes", "params": {"num_samples": samples}, "seed": 0}
        raw["constraints"] = ["forget_efficacy >= 0.9"]
    else:
        raw = shapes_study(
            samples,
            trials=trials,
            steps=60,
            out=Path("unused"),
            cache=cache,
            search={
                "ascent_lr": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
                "retain_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "projection_strength": {"type": "float", "low": 0.0, "high": 1.0},
            },
            # Every circle: with half of them the retrain still knows the rest's shape, so
            # there is next to nothing to forget, or to relearn (unlearn_vs_retrain.py).
            fraction=1.0,
            objectives=["forget_efficacy", "retained_utility", "uis", "compute_cost"],
            constraints=["forget_efficacy >= 0.6"],
        )
    raw.pop("validation", None)
    raw.update(n_trials=trials, tracking={"enabled": False}, references={"cache_dir": str(cache)})
    return raw


def arm_study(raw: dict[str, Any], arm: str, seed: int, out: Path) -> dict[str, Any]:
    margin = raw.get("evaluation", {}).get("relearning", {}).get("margin", 0.1)
    study = {**raw, "output": str(out), "sampler": {"name": "tpe", "seed": seed}}
    if arm == "objective":
        study["objectives"] = [*raw["objectives"], "relearn_recovery"]
    elif arm == "constraint":
        study["constraints"] = [*raw.get("constraints", []), f"relearn_recovery <= {margin}"]
    return study


def recovery_of(experiment: LoadedStudy, recovery: RecoveryMeasures, trial: FrozenTrial) -> float:
    """The trial's model again (its configuration and seed), attacked."""
    seed = int(TrialRecord.of(trial).seed or 0)
    model = configuration_run.run(*experiment, trial.params, seed=seed).model
    return recovery.measure(model, ["relearn_recovery"])[0]["relearn_recovery"]


def measure_arm(raw: dict[str, Any], arm: str, seed: int, out: Path) -> dict[str, Any]:
    config = parse_study(arm_study(raw, arm, seed, out))
    run = run_study(config, progress=False)
    summary = run.summary
    complete = summary.complete
    if arm == "without":
        experiment = load_study_values(config)
        attacks = configuration_run.recovery_measures(*experiment)
        recovery = {t.number: recovery_of(experiment, attacks, t) for t in complete}
    else:
        recovery = {t.number: float(TrialRecord.of(t).metrics["relearn_recovery"]) for t in complete}
    uis = {t.number: float(TrialRecord.of(t).metrics["uis"]) for t in complete}
    margin = config.evaluation.relearning.margin
    numbers = sorted(recovery)
    rho = float(spearmanr([uis[n] for n in numbers], [recovery[n] for n in numbers]).statistic)
    front = [t.number for t in summary.front]
    chosen = summary.recommended.number if summary.recommended is not None else None
    return {
        "arm": arm,
        "seed": seed,
        "complete": len(complete),
        "spearman_uis_recovery": rho,
        "front": len(front),
        "front_within_margin": sum(recovery[n] <= margin for n in front if n in recovery),
        "recommended": chosen,
        "recommended_uis": uis.get(chosen) if chosen is not None else None,
        "recommended_recovery": recovery.get(chosen) if chosen is not None else None,
        "recommended_within_margin": chosen is not None and recovery[chosen] <= margin,
        "attack_cost": sum(float(TrialRecord.of(t).metrics.get("robustness_cost", 0.0)) for t in complete),
        "search_cost": sum(float(TrialRecord.of(t).metrics["compute_cost"]) for t in complete),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", choices=["digits", "shapes", "scenes"], default="digits")
    parser.add_argument("--samples", type=int, default=4000, help="shapes and scenes")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None, help="reference cache (default: a temp dir)")
    parser.add_argument("--rows", type=Path, default=None, help="write the per-study rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp) / "cache"
        raw = base_study(args.problem, args.samples, args.trials, cache)
        rows = []
        for seed in args.seeds:
            for arm in ARMS:
                row = measure_arm(raw, arm, seed, Path(tmp) / f"{arm}-{seed}")
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.rows:
        args.rows.write_text(json.dumps(rows, indent=1))

    print(f"\n{args.problem}, {args.trials} trials, seeds {args.seeds}\n")
    print(
        "| arm | Spearman(UIS, relearn_recovery) median | front trials within margin | "
        "recommended within margin | recommended UIS (median) | recommended recovery (median) | "
        "attack cost / search cost |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        chosen = [r for r in mine if r["recommended"] is not None]

        def med(key: str, rows: list[dict[str, Any]] = chosen) -> str:
            values = [r[key] for r in rows if r[key] is not None]
            return f"{statistics.median(values):.4f}" if values else "—"

        print(
            f"| {arm} | {statistics.median(r['spearman_uis_recovery'] for r in mine):+.2f} | "
            f"{sum(r['front_within_margin'] for r in mine)}/{sum(r['front'] for r in mine)} | "
            f"{sum(r['recommended_within_margin'] for r in mine)}/{len(mine)} | {med('recommended_uis')} | "
            f"{med('recommended_recovery')} | "
            f"{sum(r['attack_cost'] for r in mine):.3f} / {sum(r['search_cost'] for r in mine):.3f} |"
        )


if __name__ == "__main__":
    main()
