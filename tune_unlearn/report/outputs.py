"""What a study leaves in its output folder: ``pareto.json``, ``trials.csv`` and a console table.

Everything here is rebuilt from the Optuna storage alone (plus the study file), so ``report``
can reproduce the files without running a trial. No timestamps are written, so the same
storage gives the same bytes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tune_unlearn._version import __version__
from tune_unlearn.config.study_config import StudyConfig
from tune_unlearn.errors import OutputNotWritable
from tune_unlearn.report.markdown import render_report
from tune_unlearn.report.pareto import (
    finite,
    is_feasible,
    objective_directions,
)
from tune_unlearn.report.summary import StudySummary
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.scoring.metrics import METRICS


def constraint_names(config: StudyConfig) -> list[str]:
    """The constraints every complete trial carries, in their stored order: the study file's,
    then ``collapse_guard`` with ``on_collapse: infeasible``."""
    guard = ["collapse_guard"] if config.collapse_guard.constrains else []
    return [str(c) for c in config.constraints] + guard


def constraint_values(config: StudyConfig, trial: FrozenTrial) -> dict[str, float]:
    """The trial's constraint violations by name (stored as a list, in :func:`constraint_names`'
    order: the form optuna-dashboard reads)."""
    stored = trial.constraints
    names = constraint_names(config)
    return {name: stored.get(str(i), stored.get(name, math.nan)) for i, name in enumerate(names)}


def _trial_entry(summary: StudySummary, trial: FrozenTrial) -> dict[str, Any]:
    record = TrialRecord.of(trial)
    return {
        "number": trial.number,
        "params": trial.params,
        "values": {k: finite(v) for k, v in zip(summary.config.objectives, trial.values or [], strict=False)},
        "metrics": dict(record.metrics),
        "diagnostics": dict(record.diagnostics),
        "constraints": constraint_values(summary.config, trial),
        "feasible": is_feasible(trial),
        "pareto": summary.is_pareto(trial),
        "recommended": summary.is_recommended(trial),
        "seed": record.seed,
        "validation": verdict.stored() if (verdict := summary.validation.get(trial.number)) else None,
    }


def pareto_document(summary: StudySummary) -> dict[str, Any]:
    config = summary.config
    states = Counter(t.state.name.lower() for t in summary.trials)
    not_complete = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "params": t.params,
            "reason": TrialRecord.of(t).reason,
        }
        for t in summary.trials
        if t.state in (TrialState.FAIL, TrialState.PRUNED)
    ]
    return {
        "study": config.name,
        "package_version": __version__,
        "problem": config.problem.name or config.problem.factory,
        "method": config.method.name,
        # Every trial's params run with these: a rate means nothing without its `optimizer`.
        "fixed": config.method.fixed,
        "forget_mode": config.forget.mode,
        # The measured gradient scales the default rate ranges are relative to (empty when
        # the space is absolute), and the space searched, in absolute units.
        "rate_scales": config.method.rate_scales,
        "rate_scales_cost": summary.rate_scales_cost,  # retrains spent measuring them
        "search": {
            name: d.model_dump(mode="json", exclude_none=True) for name, d in config.method.search.items()
        },
        "objectives": [
            {"name": name, "direction": direction, "metric_direction": METRICS.get(name).direction}
            for name, direction in zip(
                config.objectives, objective_directions(config.objectives), strict=True
            )
        ],
        "constraints": constraint_names(config),
        "counts": {
            **{s: states.get(s, 0) for s in ("complete", "fail", "pruned", "running")},
            "feasible": len(summary.feasible),
            "pareto": len(summary.front),
        },
        "hypervolume": {"value": summary.hypervolume, "history": summary.history, **summary.box.as_dict()},
        "importances": summary.importances,
        "collapse_guard": _guard_summary(summary),
        # What honest deletion keeps: read a trial's retained_utility against it, not against 1.
        "reference_retained_utility": summary.reference_retained_utility,
        "recommended": summary.recommended.number if summary.recommended else None,
        "recommendation_note": summary.recommendation_note,
        "recommendation_rule": summary.config.recommend.model_dump(mode="json"),
        "trials": [_trial_entry(summary, t) for t in summary.complete],
        "not_complete": not_complete,
    }


def _guard_summary(summary: StudySummary) -> dict[str, Any]:
    pruned = [t for t in summary.trials if t.state == TrialState.PRUNED]
    collapsed = [t for t in summary.complete if TrialRecord.of(t).collapsed]
    stopped = pruned + collapsed
    return {
        **summary.config.collapse_guard.model_dump(mode="json"),
        "pruned": len(pruned),
        "collapsed_infeasible": len(collapsed),
        "steps_saved": sum(TrialRecord.of(t).steps_saved for t in stopped),
        "seconds_saved": sum(TrialRecord.of(t).seconds_saved for t in stopped),
    }


def write_outputs(summary: StudySummary, output: Path) -> None:
    """Every file that the storage alone determines: JSON, CSV, plots and the report."""
    from tune_unlearn.report import plots  # matplotlib is slow to import; only here

    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "pareto.json", pareto_document(summary))
    write_trials_csv(output / "trials.csv", summary)
    plots.pareto_plot(summary, output / "pareto.png")
    plots.hypervolume_plot(summary, output / "hypervolume.png")
    plots.importance_plot(summary, output / "importance.png")
    (output / "report.md").write_text(render_report(summary))


def check_writable(folder: Path) -> None:
    """That ``folder`` and ``folder/models`` can be created and written, before any trial and
    without creating anything: a folder that exists takes a temporary file, one that does not
    needs a writable folder as its nearest existing ancestor."""
    for path in (folder, folder / "models"):
        ancestor = path
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        problem = None
        if not ancestor.is_dir():
            problem = f"{ancestor} is not a folder"
        elif ancestor == path:
            try:
                with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
                    pass
            except OSError as error:
                problem = error.strerror or str(error)
        elif not os.access(ancestor, os.W_OK | os.X_OK):
            problem = f"{ancestor} is not writable"
        if problem is not None:
            raise OutputNotWritable(
                f"the output folder {path} cannot be written ({problem}): "
                "choose another with --output or `output:` in the study file"
            )


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_trials_csv(path: Path, summary: StudySummary) -> None:
    """One row per trial of every state, with params, objectives and the headline metrics."""
    param_names = sorted({k for t in summary.trials for k in t.params})
    metric_names = [n for n in METRICS.names()]
    header = ["number", "state", "feasible", "pareto", "recommended", "validation", "seed"]
    header += [f"param/{p}" for p in param_names] + [f"metric/{m}" for m in metric_names] + ["reason"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for t in summary.trials:
            record = TrialRecord.of(t)
            metrics = record.metrics
            writer.writerow(
                [
                    t.number,
                    t.state.name.lower(),
                    is_feasible(t) if t.state == TrialState.COMPLETE else "",
                    summary.is_pareto(t),
                    summary.is_recommended(t),
                    verdict.verdict if (verdict := summary.validation.get(t.number)) else "",
                    "" if record.seed is None else record.seed,
                ]
                + [t.params.get(p, "") for p in param_names]
                + [_cell(metrics.get(m)) for m in metric_names]
                + [record.reason or ""]
            )


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def pareto_table(summary: StudySummary) -> str:
    """The Pareto trials as a fixed-width text table, the recommendation marked with ``*``."""
    if not summary.front:
        reason = "no feasible trial" if summary.complete else "no complete trial"
        return f"Pareto front: empty ({reason})"
    note = f"\nnote: {summary.recommendation_note}" if summary.recommendation_note else ""
    params = sorted({k for t in summary.front for k in t.params})
    columns = ["trial", *params, *summary.config.objectives]
    rows = []
    for t in summary.front:
        metrics = TrialRecord.of(t).metrics
        mark = "*" if summary.is_recommended(t) else " "
        rows.append(
            [f"{mark}{t.number}"]
            + [_cell(t.params.get(p)) for p in params]
            + [_cell(metrics.get(o)) for o in summary.config.objectives]
        )
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))
    body = "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows)
    title = (
        f"Pareto front: {len(summary.front)} of {len(summary.complete)} complete trials "
        f"(hypervolume {summary.hypervolume:.4f}; * = recommended)"
    )
    return f"{title}\n{line}\n{body}{note}"
