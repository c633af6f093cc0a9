"""A comparison's verdict: per method, over the seeds of its equal-budget studies, the best
feasible value of each objective and the hypervolume in one shared box, each with its mean and
95% interval, and the seeds' fronts as empirical attainment bands (moocore's EAF).

Everything here reads finished studies (their summaries); nothing is timed or sampled, so the
same studies give the same leaderboard.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import moocore
import numpy as np
from scipy import stats

from tune_unlearn.report.pareto import HypervolumeBox, front_trials, objective_directions
from tune_unlearn.report.summary import StudySummary
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.scoring.metrics import METRICS


@dataclass(frozen=True)
class Interval:
    """Mean over seeds and its two-sided 95% Student-t interval (none from one seed)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None], bounds: tuple[float, float] | None = None) -> Interval:
        """``bounds``: the quantity's possible range; the interval is clipped to it (from few
        seeds a t interval can reach past it, which no mean can)."""
        known = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
        if len(known) == 0:
            return cls(None, None, None, 0)
        mean = float(known.mean())
        if len(known) < 2:
            return cls(mean, None, None, 1)
        half = float(stats.t.ppf(0.975, len(known) - 1) * known.std(ddof=1) / math.sqrt(len(known)))
        low, high = mean - half, mean + half
        if bounds is not None:
            low, high = max(low, bounds[0]), min(high, bounds[1])
        return cls(mean, low, high, len(known))

    def text(self, digits: int = 4) -> str:
        if self.mean is None:
            return "—"
        if self.low is None or self.high is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def as_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "ci95_low": self.low, "ci95_high": self.high, "seeds": self.n}


@dataclass(frozen=True)
class MethodResult:
    """One method's studies (one per seed) and what the leaderboard says of them."""

    method: str
    summaries: list[StudySummary]
    hypervolumes: list[float]
    best: dict[str, list[float | None]]  # per objective, the best feasible value of each seed

    @property
    def hypervolume(self) -> Interval:
        return Interval.of(self.hypervolumes, (0.0, 1.0))

    def best_interval(self, objective: str) -> Interval:
        # Not clipped: a metric's worst value bounds the hypervolume box, not the metric (UIS
        # and compute_cost can exceed it), so an interval past it can be true.
        return Interval.of(self.best[objective])


def _best_feasible(summary: StudySummary, index: int, direction: str) -> float | None:
    values = [float(t.values[index]) for t in summary.feasible if t.values is not None]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


@dataclass(frozen=True)
class Leaderboard:
    objectives: tuple[str, ...]
    box: HypervolumeBox
    results: list[MethodResult]  # best mean hypervolume first
    budget: int

    @classmethod
    def of(cls, by_method: dict[str, list[StudySummary]], budget: int) -> Leaderboard:
        """Rank methods by mean hypervolume, every front measured in the box of *all* studies."""
        first = next(iter(by_method.values()))[0]
        objectives = tuple(first.config.objectives)
        everything = [t for summaries in by_method.values() for s in summaries for t in s.trials]
        box = HypervolumeBox.for_study(objectives, everything)
        directions = objective_directions(objectives)
        results = []
        for method, summaries in by_method.items():
            volumes = []
            for summary in summaries:
                front = front_trials(summary.trials, directions)
                # the box works on objective values as the study saw them
                values = np.array([t.values for t in front], dtype=float).reshape(-1, len(objectives))
                volumes.append(box.hypervolume(values) if len(front) else 0.0)
            best = {
                name: [_best_feasible(s, i, directions[i]) for s in summaries]
                for i, name in enumerate(objectives)
            }
            results.append(MethodResult(method, summaries, volumes, best))
        results.sort(key=lambda r: (-(r.hypervolume.mean or 0.0), r.method))
        return cls(objectives, box, results, budget)

    @property
    def nothing_to_forget(self) -> list[str]:
        """The target tasks on which the original already scores the forget set inside the
        honest retrains' band. Every member shares the request and its references, so the
        first completed trial says it for all. On such a task any model inside the band has
        efficacy 1, and the least shift wins whether or not a method can forget."""
        first = next((t for r in self.results for s in r.summaries for t in s.complete), None)
        if first is None:
            return []
        prefix = "nothing_to_forget/"
        metrics = TrialRecord.of(first).metrics
        return sorted(k.removeprefix(prefix) for k, v in metrics.items() if k.startswith(prefix) and v)

    # -- files ------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {
            "objectives": list(self.objectives),
            "nothing_to_forget": self.nothing_to_forget,
            "trials_per_study": self.budget,
            "hypervolume_box": self.box.as_dict(),
            "interval": "mean over seeds with a two-sided 95% Student-t interval",
            "methods": [
                {
                    "rank": rank,
                    "method": r.method,
                    "hypervolume": {**r.hypervolume.as_dict(), "per_seed": r.hypervolumes},
                    "best_feasible": {
                        name: {**r.best_interval(name).as_dict(), "per_seed": r.best[name]}
                        for name in self.objectives
                    },
                    "feasible_trials_per_seed": [len(s.feasible) for s in r.summaries],
                    "studies": [s.config.name for s in r.summaries],
                }
                for rank, r in enumerate(self.results, start=1)
            ],
        }

    def markdown(self) -> str:
        seeds = max((len(r.summaries) for r in self.results), default=0)
        lines = [
            f"# Leaderboard: {len(self.results)} methods, {seeds} seed(s), {self.budget} trials per study",
            "",
            "Each cell is the mean over seeds with its 95% interval (Student t; none from one seed). "
            "*Best feasible*: the best value of the objective among the study's feasible trials. "
            "Hypervolume: the feasible front in one box shared by every study of the comparison "
            "(0 = nothing, 1 = a perfect free model).",
            "",
            "| rank | method | hypervolume | "
            + " | ".join(
                f"best {name} ({METRICS.get(name).study_direction()[:3]})" for name in self.objectives
            )
            + " | feasible trials |",
            "|---|---|---|" + "---|" * len(self.objectives) + "---|",
        ]
        if self.nothing_to_forget:
            warning = (
                f"**Nothing detectable to forget on {', '.join(self.nothing_to_forget)}**: the "
                "original already scores the forget set inside the honest retrains' band, so any "
                "model that stays inside it has efficacy 1 and the least shift ranks first whether "
                "or not a method can forget. Rank methods on a request with something to forget."
            )
            lines[4:4] = [warning, ""]
        for rank, r in enumerate(self.results, start=1):
            cells = [r.best_interval(name).text() for name in self.objectives]
            feasible = ", ".join(str(len(s.feasible)) for s in r.summaries)
            lines.append(
                f"| {rank} | {r.method} | {r.hypervolume.text()} | " + " | ".join(cells) + f" | {feasible} |"
            )
        lines += ["", "![attainment bands](leaderboard.png)", ""]
        return "\n".join(lines)

    def write(self, folder: Path, plot_objectives: tuple[str, str]) -> list[Path]:
        """``leaderboard.md``, ``.json`` and ``.png``, each replaced atomically (two processes
        sharing a comparison write the same files)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "leaderboard.md", folder / "leaderboard.json", folder / "leaderboard.png"]
        _atomic_text(paths[0], self.markdown())
        _atomic_text(paths[1], json.dumps(self.as_dict(), indent=1, allow_nan=False))
        temporary = paths[2].with_name(f".{paths[2].name}.{os.getpid()}.png")
        attainment_plot(self, plot_objectives, temporary)
        os.replace(temporary, paths[2])
        return paths


def _atomic_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def attainment_levels(fronts: Sequence[np.ndarray]) -> dict[float, np.ndarray]:
    """The empirical attainment surfaces of several 2-objective fronts (minimisation), keyed by
    the share of fronts attaining them: the best (some front), the median and the worst (every
    front). Fronts without a point are left out of the count."""
    sets = [f for f in fronts if len(f)]
    if not sets:
        return {}
    points = np.vstack(sets)
    labels = np.concatenate([np.full(len(f), i + 1) for i, f in enumerate(sets)])
    surfaces = moocore.eaf(points, sets=labels)
    levels = sorted(set(surfaces[:, -1].tolist()))
    chosen = {levels[0], levels[len(levels) // 2], levels[-1]}
    return {level / 100.0: surfaces[surfaces[:, -1] == level][:, :2] for level in sorted(chosen)}


def attainment_plot(board: Leaderboard, objectives: tuple[str, str], path: Path) -> None:
    """Per method, the attainment surfaces of its seeds' feasible fronts on two objectives, in
    the shared box's normalised units (0 = the metric's ideal, 1 = the reference point)."""
    columns = [board.objectives.index(name) for name in objectives]
    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    reach = np.zeros(2)  # how far the drawn surfaces' corners reach, to zoom on them
    for n, result in enumerate(board.results):
        colour = colours[n % len(colours)]
        fronts = []
        for summary in result.summaries:
            values = np.array([t.values for t in summary.feasible], dtype=float).reshape(
                -1, len(board.objectives)
            )
            projected = board.box.normalise(values)[:, columns] if len(values) else values[:, columns]
            if len(projected):
                projected = projected[moocore.is_nondominated(projected, keep_weakly=False)]
            fronts.append(projected)
        levels = attainment_levels(fronts)
        shares = sorted(levels)
        # the best (attained by some seed) dashed, the worst dotted, the median solid
        styles = {shares[0]: "--", shares[-1]: ":"} if shares else {}
        if shares:
            styles[shares[len(shares) // 2]] = "-"
        for share, surface in levels.items():
            style = styles[share]
            reach = np.maximum(reach, surface.max(axis=0))
            order = np.argsort(surface[:, 0])
            xs = np.concatenate([surface[order, 0], [1.0]])
            ys = np.concatenate([surface[order, 1], [surface[order, 1][-1]]])
            axis.step(
                np.concatenate([[xs[0]], xs]),
                np.concatenate([[1.0], ys]),
                where="post",
                color=colour,
                linestyle=style,
                label=f"{result.method}: attained by {share:.0%} of seeds",
            )
    limits = np.minimum(1.02, np.maximum(0.05, reach * 1.25))
    axis.set_xlim(0, float(limits[0]))
    axis.set_ylim(0, float(limits[1]))
    for setter, name in ((axis.set_xlabel, objectives[0]), (axis.set_ylabel, objectives[1])):
        metric = METRICS.get(name)
        setter(f"{name}: 0 = {metric.ideal}, 1 = reference (normalised)")
    axis.set_title("Feasible fronts' attainment over seeds (lower left is better)")
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=6, loc="upper right")
    else:  # say so on the plot rather than leave an empty box to guess at
        axis.text(
            0.5, 0.5, "no method has a feasible trial in any seed", ha="center", transform=axis.transAxes
        )
    figure.tight_layout()
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)


def default_plot_objectives(objectives: Sequence[str]) -> tuple[str, str]:
    """The trade-off the paper draws, utility against UIS, when both are objectives; else the
    first two objectives (or one twice)."""
    if "retained_utility" in objectives and "uis" in objectives:
        return "retained_utility", "uis"
    return objectives[0], objectives[1] if len(objectives) > 1 else objectives[0]
