"""``report.md``: the study in one page — the recommendation and why, the front, what failed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from optuna.trial import TrialState

from tune_unlearn.report.request_cost import cost_lines, request_cost, step_budget
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.scoring.metrics import reference_free_reference

if TYPE_CHECKING:
    from tune_unlearn.report.summary import StudySummary

_RULES = {
    "ideal_point": "the feasible Pareto trial nearest the ideal point once each objective is "
    "normalised to [0, 1] in the hypervolume box below",
    "knee": "the feasible Pareto trial with the smallest sum of objectives normalised to [0, 1] "
    "in the hypervolume box below",
    "lexicographic": "best on each objective in turn, within its tolerance",
}


def efficacy_conditioning(metrics: Mapping[str, float | None]) -> list[str]:
    """Report lines for target tasks where the original already scores the forget set inside
    the retrain ensemble's tolerance band: honest deletion would not show in that score."""
    lines = []
    for key in sorted(metrics):
        if not key.startswith("nothing_to_forget/") or metrics[key] != 1.0:
            continue
        task = key.split("/", 1)[1]
        original = metrics.get(f"score/original/forget/{task}")
        reference = metrics.get(f"score/retrain/forget/{task}", reference_free_reference(metrics, task))
        band = metrics.get(f"band/{task}")
        if not all(isinstance(v, (int, float)) for v in (original, reference, band)):
            continue
        lines.append(
            f"- `{task}`: the original scores the forget set {original:.3f}, the honest "
            f"reference {reference:.3f}: inside the tolerance band ±{band:.3f}."
        )
    if not lines:
        return []
    return [
        "## Forget efficacy: nothing detectable to forget",
        "",
        "On these target tasks the original already scores the forget set within the band of "
        "honest retrains (their seed spread and the forget set's sampling error), so the forget "
        "score cannot show whether the deletion happened: any model inside the band has "
        "efficacy 1. Judge such a request by the validators (probes, attacks) and "
        "`forget_score`, or forget a group with more to forget.",
        "",
        *lines,
        "",
    ]


def honest_utility_lines(honest: float | None) -> list[str]:
    """What honest deletion keeps, beside the recommendation: retained utility is measured
    against the original, and a retrain of the request does not reach 1 either."""
    if honest is None:
        return []
    return [
        f"What honest deletion keeps: the retrain reference's own retained utility is "
        f"**{honest:.4f}** (the same formula on its scores). A trial near it keeps what a retrain "
        "keeps; one well above it on a request that deletes a class has not forgotten it.",
        "",
    ]


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "—" if value is None else str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_report(summary: StudySummary) -> str:
    config = summary.config
    objectives = list(config.objectives)
    states = Counter(t.state for t in summary.trials)
    out = [
        f"# Study `{config.name}`",
        "",
        f"- problem: `{config.problem.name or config.problem.factory}`, forget mode `{config.forget.mode}`, "
        f"method `{config.method.name}`, sampler `{config.sampler.name}` (seed {config.sampler.seed})",
        f"- objectives: {', '.join(objectives)}; "
        f"constraints: {', '.join(map(str, config.constraints)) or 'none'}",
        f"- trials: {states[TrialState.COMPLETE]} complete ({len(summary.feasible)} feasible), "
        f"{states[TrialState.PRUNED]} pruned, {states[TrialState.FAIL]} failed",
        "",
        "## Recommendation",
        "",
    ]
    rule = config.recommend
    if summary.recommended is None:
        reason = "no trial is feasible under the constraints" if summary.complete else "no trial completed"
        out += [f"**None**: {summary.recommendation_note or reason}.", ""]
    else:
        trial = summary.recommended
        metrics = TrialRecord.of(trial).metrics
        why = _RULES[rule.rule]
        if rule.rule == "lexicographic":
            why += f" (order: {', '.join(rule.order)}; tolerances: {rule.tolerances or 'none'})"
        out += [
            f"Trial **{trial.number}**, chosen by the `{rule.rule}` rule: {why}.",
            "",
            *([f"Note: {summary.recommendation_note}.", ""] if summary.recommendation_note else []),
            _table(["parameter", "value"], [[k, _number(v)] for k, v in sorted(trial.params.items())]),
            "",
            _table(
                ["metric", "value"], [[k, _number(metrics.get(k))] for k in sorted(metrics) if "/" not in k]
            ),
            "",
        ]
    out += honest_utility_lines(summary.reference_retained_utility)
    out += cost_lines(
        request_cost(config.references, summary.trials, step_budget(config), summary.rate_scales_cost)
    )
    complete = [t for t in summary.trials if t.state == TrialState.COMPLETE]
    if complete:  # the reference scores are the same in every trial
        out += efficacy_conditioning(TrialRecord.of(complete[0]).metrics)
    out += ["## Pareto front", ""]
    if summary.front:
        params = sorted({k for t in summary.front for k in t.params})
        rows = [
            [
                ("**" if summary.is_recommended(t) else "")
                + str(t.number)
                + ("**" if summary.is_recommended(t) else "")
            ]
            + [_number(t.params.get(p)) for p in params]
            + [_number(TrialRecord.of(t).metrics.get(o)) for o in objectives]
            for t in summary.front
        ]
        out += [_table(["trial", *params, *objectives], rows), ""]
    else:
        out += ["Empty: no feasible complete trial.", ""]
    out += [
        f"Hypervolume: **{summary.hypervolume:.4f}** of the unit box between the ideal point "
        f"{list(summary.box.ideal)} and the reference point {[round(w, 4) for w in summary.box.worst]} "
        "(objective units; see `pareto.json`). ![front](pareto.png) ![hypervolume](hypervolume.png)",
        "",
        "## Hyperparameter importance",
        "",
    ]
    if any(summary.importances.values()):
        params = sorted({p for values in summary.importances.values() for p in values})
        rows = [[p] + [_number(summary.importances[o].get(p)) for o in objectives] for p in params]
        out += [_table(["parameter", *objectives], rows), "", "![importance](importance.png)", ""]
    else:
        out += ["Not enough complete trials with varied parameters.", ""]
    if summary.validation:
        out += ["## Validation", ""]
        rows = [
            [str(number), v.suite, f"**{v.verdict}**", ", ".join(v.failed) or "—"]
            for number, v in sorted(summary.validation.items())
        ]
        out += [
            _table(["trial", "suite", "verdict", "failed checks"], rows),
            "",
            "Reports: `validation/`.",
            "",
        ]
    if config.references.retrain is False:
        out += [
            "## Reference-free metrics",
            "",
            "This study has no retrain reference, so the reference-free forms are used: forget "
            "efficacy takes the original's score on held-out samples of the forget set's group "
            "(`peers`) in place of the retrain's score on the forget set (`F^r`), membership "
            "inference takes the peers as non-members and is judged against 0.5, and validator "
            "probes measure damage against the original (`excess = original − unlearned`). "
            "Reference models trained for this request: none (0 retrains).",
            "",
        ]
    out += ["## Pruned and failed trials", ""]
    pruned = [t for t in summary.trials if t.state == TrialState.PRUNED]
    failed = [t for t in summary.trials if t.state == TrialState.FAIL]
    if pruned:
        steps = sum(TrialRecord.of(t).steps_saved for t in pruned)
        seconds = sum(TrialRecord.of(t).seconds_saved for t in pruned)
        out += [f"- {len(pruned)} pruned by the collapse guard, saving {steps} steps (~{seconds:.1f} s):"]
        out += [f"  - trial {t.number}: {TrialRecord.of(t).pruned_reason or 'pruned'}" for t in pruned]
    collapsed = [t for t in summary.complete if TrialRecord.of(t).collapsed]
    if collapsed:
        steps = sum(TrialRecord.of(t).steps_saved for t in collapsed)
        out += [
            f"- {len(collapsed)} stopped by the collapse guard and measured where they stood "
            f"(complete, infeasible on `collapse_guard`, so the sampler learns the region), "
            f"saving {steps} steps:"
        ]
        out += [f"  - trial {t.number}: {TrialRecord.of(t).collapsed}" for t in collapsed]
    if failed:
        out += [f"- {len(failed)} failed:"]
        out += [
            f"  - trial {t.number}: {TrialRecord.of(t).fail_reason or 'an error (see the log)'}"
            for t in failed
        ]
    if not pruned and not failed and not collapsed:
        out += ["None."]
    return "\n".join(out) + "\n"
