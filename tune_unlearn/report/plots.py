"""Figures a reviewer would rather look at than read: the front, its hypervolume, importances."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt

from tune_unlearn.report.trial_record import TrialRecord

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from tune_unlearn.report.summary import StudySummary


def pareto_plot(summary: StudySummary, path: Path) -> None:
    """Pairwise scatter of the objectives: every complete trial, the front, the recommendation."""
    objectives = summary.config.objectives
    pairs = list(itertools.combinations(range(len(objectives)), 2)) or [(0, 0)]
    columns = min(3, len(pairs))
    rows = -(-len(pairs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False)
    complete, front = summary.complete, summary.front

    def metric(trials: list[FrozenTrial], index: int) -> list[float]:
        name = objectives[index]
        values = (TrialRecord.of(t).metric(name) for t in trials)
        return [float("nan") if value is None else value for value in values]

    for axis, (i, j) in zip(axes.flat, pairs, strict=False):
        axis.scatter(metric(complete, i), metric(complete, j), s=14, c="#bbbbbb", label="trial")
        axis.scatter(metric(front, i), metric(front, j), s=26, c="#1f77b4", label="Pareto front")
        if summary.recommended is not None:
            chosen = [summary.recommended]
            axis.scatter(
                metric(chosen, i), metric(chosen, j), s=160, marker="*", c="#d62728", label="recommended"
            )
        axis.set_xlabel(objectives[i])
        axis.set_ylabel(objectives[j])
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(pairs) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=8, loc="best")
    figure.suptitle(f"{summary.config.name}: {len(front)} Pareto trials of {len(complete)} complete")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def hypervolume_plot(summary: StudySummary, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.plot(range(len(summary.history)), summary.history, marker="o", markersize=3)
    axis.set_xlabel("trial")
    axis.set_ylabel("hypervolume (normalised box)")
    axis.set_title(f"{summary.config.name}: hypervolume of the feasible front")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def importance_plot(summary: StudySummary, path: Path) -> None:
    objectives = [name for name in summary.config.objectives if summary.importances.get(name)]
    figure, axes = plt.subplots(
        1, max(len(objectives), 1), figsize=(3.6 * max(len(objectives), 1), 3.2), squeeze=False
    )
    for axis, name in zip(axes.flat, objectives, strict=False):
        items = sorted(summary.importances[name].items(), key=lambda kv: kv[1])
        axis.barh([k for k, _ in items], [v for _, v in items], color="#1f77b4")
        axis.set_title(name)
        axis.set_xlim(0, 1)
    if not objectives:
        axes.flat[0].text(0.5, 0.5, "not enough complete trials", ha="center", va="center")
        axes.flat[0].axis("off")
    figure.suptitle("hyperparameter importance (fANOVA)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
