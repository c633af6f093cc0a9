"""One verdict: does a study's recommendation pass the release gate whenever one of its front
trials does?

For each seed the study runs as its file says (with its ``validation`` suite in the loop, front
trials are validated in the rule's order until one passes), tracking off, the sampler seeded.
Afterwards every trial of the feasible Pareto front is re-run from its own seed and judged with
the release suite (``validators/release.yaml``) through the gate's code, the recommended one
included. Per seed the table gives the front's size, how many of its trials the release suite
passes, the recommended trial (or none, with the study's reason) and the release verdict on it.
The target (issue 27): the recommendation passes release whenever any front trial does.

    python benchmarks/one_verdict.py --study studies/quickstart.yaml --seeds 0 1 2 3 4 --threads 1

``--sampler NAME`` runs the study with another sampler (its seed still the row's), to measure a
change of the study's sampler before it ships. ``--stop-at-releasable`` runs it with
``validation.stop_at_releasable`` (the search ends at the first trial its suite passes; the
recommended trial is then judged with the release suite too, on or off the front). Every row
gives the trials run, the verdicts the study stored, and the request's all-in cost as
``report.md`` states it (references, trials, the candidate's re-run; validation not counted)
plus the re-runs of the validated trials (their ``compute_cost``), in retrain units.

``--reuse-study-verdicts`` takes a front trial's release verdict from the study's own stored
verdict when the study validated it with the release suite file itself (the same re-run from
the trial's seed and the same gate code, so the same input gives the same verdict): on a study
whose suite is the release suite and whose front nothing passes, it halves the run. Front trials
the study did not validate are re-run and gated as without it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tune_unlearn.config.schema import read_yaml
from tune_unlearn.config.study_config import parse_study
from tune_unlearn.report.request_cost import request_cost, step_budget
from tune_unlearn.report.study_record import StudyRecord
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.study.runner import run_study
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.study_references import load_study_values
from tune_unlearn.validation import Candidate, ValidationContext, load_suite, validate

ROOT = Path(__file__).resolve().parents[1]


def judge_front(run: Any, release: Path, reuse: bool = False) -> list[dict[str, Any]]:
    """Every front trial re-run from its seed and gated with ``release`` (with ``reuse``, the
    study's own verdict where it judged the trial with that very suite file)."""
    summary = run.summary
    suite_file = summary.config.validation.suite
    same_suite = suite_file is not None and Path(suite_file).resolve() == release.resolve()
    stored = StudyRecord.of(run.study).verdicts if reuse and same_suite else {}
    experiment = load_study_values(summary.config)
    context = ValidationContext(*experiment)
    suite = load_suite(release)
    rows = []
    judged = {t.number: t for t in summary.front}
    if summary.recommended is not None:  # with stop_at_releasable it may lie off the front
        judged[summary.recommended.number] = summary.recommended
    for trial in sorted(judged.values(), key=lambda t: t.number):
        if trial.number in stored:
            verdict = stored[trial.number]
            rows.append(
                {
                    "trial": trial.number,
                    "recommended": summary.is_recommended(trial),
                    "release": verdict.verdict,
                    "failed": verdict.failed,
                    "from": "study",
                }
            )
            continue
        record = TrialRecord.of(trial)
        seed = int(record.seed or 0)
        result = configuration_run.run(*experiment, trial.params, seed=seed, recovery=context.recovery)
        metrics = {k: v for k, v in record.metrics.items() if v is not None}
        candidate = Candidate(result.model, f"trial {trial.number}", metrics, trial.params, seed)
        report = validate(context, candidate, suite)
        rows.append(
            {
                "trial": trial.number,
                "recommended": summary.is_recommended(trial),
                "release": report.verdict,
                "failed": [r.name for r in report.judged if not r.passed],
                "from": "re-run",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", type=Path, default=ROOT / "studies" / "quickstart.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=None, help="override the study's n_trials")
    parser.add_argument("--sampler", default=None, help="override the study's sampler name (tpe, gp, ...)")
    parser.add_argument("--release", type=Path, default=ROOT / "validators" / "release.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--stop-at-releasable",
        action="store_true",
        help="validation.stop_at_releasable: true (needs a suite)",
    )
    parser.add_argument(
        "--reuse-study-verdicts",
        action="store_true",
        help="take a front trial's verdict from the study where it validated it with the release suite",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep each seed's study outputs here (DIR/seedN/trials.csv)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = read_yaml(args.study)
    out = args.keep or Path(tempfile.mkdtemp())
    results = []
    started = time.perf_counter()
    for seed in args.seeds:
        changes: dict[str, Any] = {
            "output": str(out / f"seed{seed}"),
            "sampler": {
                **raw.get("sampler", {}),
                **({"name": args.sampler} if args.sampler else {}),
                "seed": seed,
            },
            "tracking": {"enabled": False},
        }
        if args.trials is not None:
            changes["n_trials"] = args.trials
        suite = (raw.get("validation") or {}).get("suite")
        if suite and not Path(suite).is_absolute():  # the shipped studies name it from the root
            changes["validation"] = {**raw["validation"], "suite": str(ROOT / suite)}
        if args.stop_at_releasable:
            changes["validation"] = {
                **changes.get("validation", raw.get("validation", {})),
                "stop_at_releasable": True,
            }
        run = run_study(parse_study({**raw, **changes}), progress=False)
        front = judge_front(run, args.release, args.reuse_study_verdicts)
        recommended = run.summary.recommended
        config, trials = run.summary.config, run.summary.trials
        cost = request_cost(config.references, trials, step_budget(config))
        verdicts = StudyRecord.of(run.study).verdicts
        by_number = {t.number: t for t in trials}
        validation = sum(TrialRecord.of(by_number[n]).metric("compute_cost") or 0.0 for n in verdicts)
        row = {
            "seed": seed,
            "front": front,
            "recommended": None if recommended is None else recommended.number,
            "note": run.summary.recommendation_note,
            "trials": len(trials),
            "verdicts": len(verdicts),
            "all_in": cost.total,
            "validation_reruns": validation,
        }
        results.append(row)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        passing = [f["trial"] for f in front if f["release"] == "pass"]
        verdict = next((f["release"] for f in front if f["recommended"]), "—")
        print(
            f"seed {seed}: front {len(front)}, release passes {passing}, recommended "
            f"{row['recommended']} ({verdict}); {row['trials']} trials, {row['verdicts']} validated, "
            f"all-in {cost.total:.2f} retrains (+ {validation:.2f} for the validation re-runs)"
            + (f"; note: {row['note']}" if row["note"] else ""),
            flush=True,
        )
        for f in front:
            print(
                f"    trial {f['trial']} ({f['from']}): {f['release']} {', '.join(f['failed'])}", flush=True
            )
    held = sum(
        any(f["release"] == "pass" for f in r["front"])
        <= any(f["recommended"] and f["release"] == "pass" for f in r["front"])
        for r in results
    )
    releasable = sum(any(f["release"] == "pass" for f in r["front"]) for r in results)
    costs = sorted(r["all_in"] + r["validation_reruns"] for r in results)
    print(
        f"all-in cost with the validation re-runs, median over seeds: {costs[len(costs) // 2]:.2f} retrains"
    )
    print(
        f"\n{args.study.name}: the recommendation passes release whenever a front trial does in "
        f"{held} of {len(results)} seeds ({releasable} with a releasable front trial); "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
