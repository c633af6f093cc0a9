"""Sampler efficiency: hypervolume after N trials for each sampler, over seeds.

Each sampler runs the quickstart study (interference-aware on digits, four objectives, the
``forget_efficacy >= 0.9`` constraint) with tracking off and the references cached, once per
seed. The hypervolume is the study's own (``pareto.json``: feasible complete trials, the fixed
box of docs/guide.md and pareto.py), so the figures compare directly.

Samplers are the study file's names (``tpe``, ``nsga2``, ``gp``, ``random``) or a lever on
TPE: ``tpe-multivariate`` (one joint density over the hyperparameters instead of one per
hyperparameter), ``tpe-startup5`` (model-based after 5 random trials instead of 10),
``tpe-relearn`` (the gate's relearning check as a search constraint), ``tpe-retain`` (that and
the gate's retain-set threshold, ``retain_damage <= 0.02``), or ``gp-retain`` (Optuna's GP
sampler with the same two constraints), or ``gp-retain-sh`` (that, with successive halving over
the step budget), or ``gp-retain-startup5`` (that, modelling after 5 random trials instead of
10), or ``gp-retain-defaults`` (that, running the method's defaults as the first trial,
``sampler.start_at_defaults``), or ``gp-retain-infeasible`` (that, with the collapse guard
ending a collapsed trial as complete and infeasible instead of pruned, so the GP learns the
region).
``--study-file FILE`` measures another study instead of the quickstart: its problem, request,
method, space, objectives, constraints and collapse guard (its sampler, validation and output
are the benchmark's; a lever's constraints are added to the file's, once each).
``--search-steps LOW HIGH`` adds the step budget to the search (a fidelity: fewer steps cost
less), so that ``compute_cost`` varies.

``--gate SUITE`` also reports, per sampler, the **cost to a releasable model**: walking the
trials in the order they ran, the search compute spent (complete trials' ``compute_cost``,
pruned ones at the share of steps they ran, as in the all-in cost) until the first trial that
meets the constraints *and* passes the suite, plus the validation of every feasible trial
judged on the way (its re-run's ``compute_cost`` and the attacks' sample-gradients, the
retrains' side once), in retrain units. References are not counted: every sampler shares
them. A study with no passing trial within the budget is censored (reported as ``> budget``).

    python benchmarks/sampler_efficiency.py [--trials 40] [--seeds 0 1 2] [--threads 1]
    python benchmarks/sampler_efficiency.py --samplers tpe random --seeds 0 1 2 3 4 5 6 7 8 9 \
        --trials 30 --gate validators/release.yaml
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _quickstart import quickstart_search

from tune_unlearn.config.schema import read_yaml
from tune_unlearn.config.study_config import parse_study
from tune_unlearn.study.runner import StudyRun, run_study
from tune_unlearn.trial.study_references import load_study_values

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ("tpe", "nsga2", "gp", "random")


LEVERS = {
    "tpe-multivariate": {"multivariate": True},
    "tpe-startup5": {"n_startup_trials": 5},
}
#: Levers on the study rather than the sampler: ``tpe-relearn`` adds the release gate's
#: relearning check as a constraint (``relearn_recovery <= 0.1``), so TPE's constraint-aware
#: split learns from the attack each trial now runs (its cost counted as the trials').
#: ``tpe-retain`` adds the release gate's retain-set threshold too (``retain_damage <= 0.02``,
#: release.yaml's ``static_retain`` max_excess), from scores every trial already computes.
#: ``gp-retain`` is Optuna's GP sampler (constraint-aware too) with the same two constraints;
#: ``gp-retain-sh`` adds successive halving over the step budget (reduction 3, two rungs: on the
#: quickstart's 60 steps, at steps 10 and 20; ``study/successive_halving.py``).
#: ``gp-retain-startup5`` is ``gp-retain`` modelling after 5 random trials instead of Optuna's 10.
#: ``gp-retain-defaults`` is ``gp-retain`` with the method's defaults as its first trial.
#: ``gp-retain-infeasible`` keeps ``gp-retain`` and sets ``collapse_guard.on_collapse:
#: infeasible``: a collapsed trial stops, is measured where it stood and completes infeasible.
STUDY_LEVERS: dict[str, dict[str, Any]] = {
    "tpe-relearn": {"constraints": ["relearn_recovery <= 0.1"]},
    "tpe-retain": {"constraints": ["relearn_recovery <= 0.1", "retain_damage <= 0.02"]},
    "gp-retain": {"sampler": "gp", "constraints": ["relearn_recovery <= 0.1", "retain_damage <= 0.02"]},
    "gp-retain-sh": {
        "sampler": "gp",
        "constraints": ["relearn_recovery <= 0.1", "retain_damage <= 0.02"],
        "successive_halving": {"reduction": 3, "rungs": 2},
    },
    "gp-retain-startup5": {
        "sampler": "gp",
        "sampler_options": {"n_startup_trials": 5},
        "constraints": ["relearn_recovery <= 0.1", "retain_damage <= 0.02"],
    },
    "gp-retain-defaults": {
        "sampler": "gp",
        "sampler_options": {"start_at_defaults": True},
        "constraints": ["relearn_recovery <= 0.1", "retain_damage <= 0.02"],
    },
    "gp-retain-infeasible": {
        "sampler": "gp",
        "constraints": ["relearn_recovery <= 0.1", "retain_damage <= 0.02"],
        "collapse_guard": {"on_collapse": "infeasible"},
    },
}


def cost_to_releasable(
    run: StudyRun, suite_path: Path, failures: Counter[str] | None = None
) -> tuple[float | None, float, int]:
    """``(cost until the first gate-passing trial or None, what the walk cost in all, trials
    validated)``, in retrain units; see the module docstring. ``failures`` counts the checks
    that failed the trials judged on the way."""
    from tune_unlearn.references.attacks import RelearningAttack
    from tune_unlearn.report.request_cost import request_cost, step_budget
    from tune_unlearn.report.trial_record import TrialRecord
    from tune_unlearn.trial import configuration_run
    from tune_unlearn.validation import Candidate, ValidationContext, load_suite, validate

    config = run.summary.config
    experiment = load_study_values(config)
    suite = load_suite(suite_path)
    context = ValidationContext(*experiment)
    feasible = {t.number for t in run.summary.feasible}
    trials = sorted(run.summary.trials, key=lambda t: t.number)
    steps = step_budget(config)
    reruns = 0.0
    validated = 0

    def spent(upto: int) -> float:
        search = request_cost(config.references, trials[: upto + 1], steps)
        attacks = 0.0
        if suite.attacks is not None and suite.attacks.relearning is not None:
            attack = context.attack(RelearningAttack, suite.attacks.relearning)
            attacks = attack.sample_gradients / experiment.inputs.retrain_sample_gradients
        return search.trials + search.pruned + search.attacks + reruns + attacks

    for position, trial in enumerate(trials):
        if trial.number not in feasible:
            continue
        record = TrialRecord.of(trial)
        seed = int(record.seed or 0)
        result = configuration_run.run(*experiment, trial.params, seed=seed, recovery=context.recovery)
        reruns += float(result.metrics["compute_cost"])
        validated += 1
        metrics = {k: v for k, v in record.metrics.items() if v is not None}
        report = validate(
            context, Candidate(result.model, f"trial {trial.number}", metrics, trial.params, seed), suite
        )
        if failures is not None:
            failures.update(r.name for r in report.judged if not r.passed)
            failures.update(r.name for r in report.unjudged)
        if report.passed:
            return spent(position), spent(position), validated
    return None, spent(len(trials) - 1) if trials else 0.0, validated


def study_file_search(path: Path) -> dict[str, Any]:
    """A study file as this benchmark runs it: without what each sampler run sets itself."""
    raw: dict[str, Any] = read_yaml(path)  # the project's bounded reader, its errors
    for key in ("sampler", "validation", "output", "tracking", "n_trials"):
        raw.pop(key, None)
    return raw


def run_sampler(raw: dict, sampler: str, seed: int, trials: int, out: Path) -> StudyRun:
    extra = STUDY_LEVERS.get(sampler, {})
    name = extra.get("sampler", "tpe") if sampler in LEVERS or sampler in STUDY_LEVERS else sampler
    config = parse_study(
        {
            **raw,
            "constraints": list(dict.fromkeys([*raw.get("constraints", []), *extra.get("constraints", [])])),
            "output": str(out),
            "n_trials": trials,
            "sampler": {
                "name": name,
                "seed": seed,
                **LEVERS.get(sampler, {}),
                **extra.get("sampler_options", {}),
            },
            "tracking": {"enabled": False},
            **{key: extra[key] for key in ("successive_halving", "collapse_guard") if key in extra},
        }
    )
    return run_study(config, progress=False)


def hypervolume(out: Path) -> float:
    return float(json.loads((out / "pareto.json").read_text())["hypervolume"]["value"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--search-steps", type=int, nargs=2, metavar=("LOW", "HIGH"))
    parser.add_argument(
        "--study",
        choices=("quickstart", "shapes-tied"),
        default="quickstart",
        help="shapes-tied: the quickstart's method and space on shapes with shape and colour tied "
        "(correlation 0.9, 4,000 samples), forgetting half the circles from the shape head",
    )
    parser.add_argument(
        "--study-file", type=Path, default=None, help="measure this study file instead (see above)"
    )
    parser.add_argument(
        "--gate", type=Path, default=None, help="a suite: also the cost to a releasable model"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep each study's outputs here (DIR/SAMPLER-SEED/trials.csv)"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    raw = quickstart_search() if args.study_file is None else study_file_search(args.study_file)
    if args.study == "shapes-tied":
        raw["name"] = "shapes_tied"
        raw["problem"] = {"name": "shapes", "params": {"num_samples": 4000, "correlation": 0.9}, "seed": 0}
        raw["forget"] = {"mode": "partial", "target_tasks": ["shape"], "where": {"shape": 0}, "fraction": 0.5}
    if args.search_steps:
        del raw["method"]["fixed"]["steps"]
        low, high = args.search_steps
        raw["method"]["search"]["steps"] = {"type": "int", "low": low, "high": high, "log": True}
    raw.pop("validation", None)  # the benchmark judges trials itself (--gate), in trial order
    results: dict[str, list[float]] = {}
    releasable: dict[str, list[float | None]] = {}
    failures: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(args.keep) if args.keep else scratch
        # seed by seed, every sampler within a seed: a run cut short still compares
        for seed in args.seeds:
            for sampler in args.samplers:
                start = time.perf_counter()
                out = Path(tmp) / f"{sampler}-{seed}"
                run = run_sampler(raw, sampler, seed, args.trials, out)
                value = hypervolume(out)
                results.setdefault(sampler, []).append(value)
                gate = ""
                if args.gate is not None:
                    cost, walked, validated = cost_to_releasable(run, args.gate, failures)
                    releasable.setdefault(sampler, []).append(cost)
                    gate = (
                        f", first releasable at {cost:.3f} retrains"
                        if cost is not None
                        else ", none releasable"
                    ) + f" ({validated} validated, walk {walked:.3f})"
                print(
                    f"{sampler} seed {seed}: hypervolume {value:.4f}{gate} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    best = max(statistics.mean(v) for v in results.values())
    print(f"\nhypervolume after {args.trials} trials, mean over seeds {args.seeds}:")
    print("| sampler | mean | sd | per seed | mean / best |")
    print("|---|---|---|---|---|")
    for sampler, values in results.items():
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = ", ".join(f"{v:.4f}" for v in values)
        ratio = f"{mean / best:.3f}" if best > 0 else "— (no feasible trial anywhere)"
        print(f"| {sampler} | {mean:.4f} | {sd:.4f} | {per_seed} | {ratio} |")
    if releasable:
        print(f"\ncompute to the first trial that passes {args.gate} (retrain units, validation included):")
        print("| sampler | median | per seed | none releasable | median / random's |")
        print("|---|---|---|---|---|")
        medians = {
            s: statistics.median(math.inf if c is None else c for c in v) for s, v in releasable.items()
        }
        for sampler, costs in releasable.items():
            per_seed = ", ".join("—" if c is None else f"{c:.3f}" for c in costs)
            base = medians.get("random", math.nan)
            known = math.isfinite(base) and base > 0 and math.isfinite(medians[sampler])
            ratio = f"{medians[sampler] / base:.2f}" if known else "— (a median is censored)"
            print(
                f"| {sampler} | {medians[sampler]:.3f} | {per_seed} | "
                f"{sum(c is None for c in costs)} | {ratio} |"
            )
        failed = ", ".join(f"{name} ×{count}" for name, count in failures.most_common())
        print(f"\nchecks that failed the trials judged on the way, most often first: {failed}")


if __name__ == "__main__":
    main()
