"""Equal-budget method comparison: one study per method and seed, then a leaderboard.

Every study of a comparison is the study file with only the method (and the sampler's seed)
changed: the same problem, request, references, trial budget, sampler, objectives and
constraints. The method the file names keeps the file's search space; every other method runs
its own default space, with the file's fixed hyperparameters that it declares (``steps`` and
``batch_size`` at least: the same step budget for all). Seed ``s`` runs the sampler with the
file's seed + ``s``.

Studies are ordinary studies (``<output>/compare/<method>/seed-<s>``, named
``<name>.<method>.seed-<s>``, in the study file's storage or each in its own SQLite file), so a
comparison resumes like ``run`` does and several processes share one the way workers share a
study: each runs the members in order and joins whichever still has budget. All of them log to
one MLflow experiment, each study's parent run nested under one comparison run.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tune_unlearn.config.study_config import StudyConfig, parse_study
from tune_unlearn.errors import UsageError
from tune_unlearn.methods import METHODS
from tune_unlearn.report.leaderboard import Leaderboard, default_plot_objectives
from tune_unlearn.report.study_record import StudyRecord
from tune_unlearn.report.summary import StudySummary
from tune_unlearn.study.publish import publish_group
from tune_unlearn.study.runner import run_study
from tune_unlearn.tracking.runs import resolve_tracking_uri

#: The tag naming a comparison on its MLflow run (a rerun finds and reuses the run).
COMPARISON_TAG = "tune_unlearn.comparison"


@dataclass(frozen=True)
class Member:
    """One study of a comparison."""

    method: str
    seed: int
    config: StudyConfig


@dataclass(frozen=True)
class Comparison:
    leaderboard: Leaderboard
    files: list[Path]
    members: list[Member]
    trials_run: int


def comparison_folder(config: StudyConfig) -> Path:
    return config.output_dir() / "compare"


def plan(
    config: StudyConfig, methods: Sequence[str], seeds: int, tracking_uri: str | None = None
) -> list[Member]:
    """Every member study, checked; a bad method name or seed count is a :class:`UsageError`
    naming the valid choices, a member that is not a valid study a ``ConfigError``."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UsageError(
            f"--methods: unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS.names())}"
        )
    if not methods:
        raise UsageError("--methods: name at least one method")
    repeated = sorted({m for m in methods if list(methods).count(m) > 1})
    if repeated:
        raise UsageError(f"--methods: {', '.join(repeated)} named twice")
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    folder = comparison_folder(config)
    base = config.model_dump(mode="json", exclude_none=True)
    tracking = dict(base.get("tracking", {}))
    if config.tracking.enabled:
        # One store and experiment for every member, not one SQLite file per member folder.
        tracking["uri"] = resolve_tracking_uri(config, tracking_uri, folder)
        tracking["experiment"] = config.tracking.experiment or config.name
    members = []
    for method in methods:
        declared = METHODS.get(method).hyperparameters()
        for seed in range(seeds):
            raw = copy.deepcopy(base)
            if method != config.method.name:
                fixed = {k: v for k, v in config.method.fixed.items() if k in declared}
                raw["method"] = {"name": method, "fixed": fixed}  # its default search space
            raw["name"] = f"{config.name}.{method}.seed-{seed}"
            raw["sampler"] = {**raw.get("sampler", {}), "seed": config.sampler.seed + seed}
            raw["output"] = str(folder / method / f"seed-{seed}")
            raw["tracking"] = tracking
            members.append(Member(method, seed, parse_study(raw)))
    return members


def run_comparison(
    config: StudyConfig,
    methods: Sequence[str],
    *,
    seeds: int = 1,
    n_trials: int | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    trust_pickle: bool = False,
) -> Comparison:
    """Run (or resume) every member study to the same budget, then write the leaderboard."""
    members = plan(config, methods, seeds, tracking_uri)
    budget = n_trials or config.n_trials
    by_method: dict[str, list[StudySummary]] = {m: [] for m in methods}
    parents: list[str] = []
    trials_run = 0
    for position, member in enumerate(members, start=1):
        if progress:
            print(
                f"compare: {member.method}, seed {member.seed} ({position}/{len(members)})",
                file=sys.stderr,
                flush=True,
            )
        run = run_study(
            member.config, n_trials=budget, storage=storage, progress=progress, trust_pickle=trust_pickle
        )
        trials_run += run.trials_run
        by_method[member.method].append(run.summary)
        parent = StudyRecord.of(run.study).parent_run
        if parent is not None:
            parents.append(parent)
    board = Leaderboard.of(by_method, budget)
    folder = comparison_folder(config)
    files = board.write(folder, default_plot_objectives(board.objectives))
    _publish(config, members, board, files, parents, tracking_uri)
    return Comparison(board, files, members, trials_run)


def _publish(
    config: StudyConfig,
    members: list[Member],
    board: Leaderboard,
    files: list[Path],
    parents: list[str],
    tracking_uri: str | None,
) -> None:
    """One comparison run (found again on a rerun) with the leaderboard, each member study's
    parent run nested under it."""
    metrics: dict[str, float | None] = {}
    for result in board.results:
        metrics[f"hypervolume/{result.method}"] = result.hypervolume.mean
        for name in board.objectives:
            metrics[f"best/{name}/{result.method}"] = result.best_interval(name).mean
    publish_group(
        members[0].config,
        tracking_uri,
        tag=COMPARISON_TAG,
        name=config.name,
        role="comparison",
        params={
            "methods": ",".join(r.method for r in board.results),
            "seeds": max(len(r.summaries) for r in board.results),
            "trials_per_study": board.budget,
        },
        metrics=metrics,
        tags={"leader": board.results[0].method},
        files=files,
        parents=parents,
    )
