"""Warm starts: an earlier study's best configurations run first in a new study.

A second deletion request on the same model rarely needs a search from nothing: the earlier
study's feasible Pareto configurations are good first guesses. They are enqueued once, when the
new study is created, and count toward its budget like any trial; the sampler then learns from
their results on *this* request. Nothing of the earlier study's measurements is copied: they
describe another request.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tune_unlearn.config.storages import StorageUrl, redact
from tune_unlearn.config.study_config import SearchParam, StudyConfig
from tune_unlearn.errors import UsageError
from tune_unlearn.methods import METHODS
from tune_unlearn.report import study_record
from tune_unlearn.report.pareto import HypervolumeBox, front_trials
from tune_unlearn.report.study_record import StudyRecord
from tune_unlearn.study.objective import open_storage

#: The new study's attribute recording what was enqueued from where.
WARM_START_ATTR = study_record.WARM_START  # a study attribute, and a trial attribute on the enqueued ones


def warm_configurations(config: StudyConfig) -> list[dict[str, Any]]:
    """The configurations to run first (at most ``top``), best first; a :class:`UsageError`
    naming ``warm_start.<key>`` when the earlier study cannot be read or searched other
    hyperparameters. Reads the storage only; creates nothing."""
    settings = config.warm_start
    if settings is None:
        return []
    url = StorageUrl.parse(settings.storage)
    path = url.local_path
    if path is not None and not path.exists():  # opening would create an empty store
        raise UsageError(f"warm_start.storage: {path} does not exist")
    try:
        storage = open_storage(settings.storage)
        source = optuna.load_study(study_name=settings.study, storage=storage)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise UsageError(
            f"warm_start.study: no study named {settings.study!r} in {redact(settings.storage)} "
            f"(studies there: {names})"
        ) from None
    except Exception as error:  # a server that is down, a file that is not a store
        raise UsageError(f"warm_start.storage: cannot read {redact(settings.storage)}: {error}") from None
    trials = source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    searched = set(config.method.search)
    theirs = {name for t in trials for name in t.params}
    if trials and theirs != searched:
        raise UsageError(
            f"warm_start.study: {settings.study!r} searched {', '.join(sorted(theirs))}; this study "
            f"searches {', '.join(sorted(searched)) or 'nothing'}: a warm start needs the same "
            "hyperparameters"
        )
    theirs_steps, ours_steps = (
        _steps(source, config),
        METHODS.get(config.method.name).steps_with(config.method.fixed),
    )
    if trials and theirs_steps != ours_steps:
        raise UsageError(
            f"warm_start.study: {settings.study!r} stepped with {theirs_steps}, this study steps with "
            f"{ours_steps}: the same rate is another step under each (a plain-step rate against a "
            f"per-weight step size); name `optimizer: {theirs_steps}` in method.fixed to start from "
            "it, or start without it"
        )
    return _best_first(source, trials, config.method.search, settings.top)


def _steps(source: optuna.Study, config: StudyConfig) -> str:
    """The optimizer the source's trials stepped with: its stored study file's, else the
    method's own (a study stored before a default space took Adam named none and stepped so)."""
    method = (StudyRecord.of(source).study_file or {}).get("method", {})
    if method.get("name") in METHODS:
        return METHODS.get(method["name"]).steps_with(method.get("fixed", {}))
    return METHODS.get(config.method.name).steps_with({})


def _best_first(
    source: optuna.Study, trials: list[FrozenTrial], space: dict[str, SearchParam], top: int
) -> list[dict[str, Any]]:
    """The source's feasible front nearest its ideal point first (ties: the earlier trial),
    keeping only configurations inside this study's ranges."""
    directions = [d.name.lower() for d in source.directions]
    front = front_trials(trials, directions)
    if not front:
        return []
    objectives = source.metric_names or []
    if len(objectives) == len(directions):
        box = HypervolumeBox.for_study(objectives, trials)
        distance = np.linalg.norm(box.normalise(np.array([t.values for t in front], dtype=float)), axis=1)
    else:  # a study that did not name its metrics: order by trial number alone
        distance = np.zeros(len(front))
    order = sorted(range(len(front)), key=lambda i: (round(float(distance[i]), 12), front[i].number))
    chosen = []
    for i in order:
        params = dict(front[i].params)
        if all(space[name].contains(value) for name, value in params.items()):
            chosen.append(params)
        if len(chosen) == top:
            break
    return chosen


def enqueue_warm_start(study: optuna.Study, config: StudyConfig, configurations: list[dict[str, Any]]) -> int:
    """Enqueue ``configurations`` in a study that has no trial yet (once: a rerun or a second
    worker finds them recorded); the number enqueued."""
    if config.warm_start is None or WARM_START_ATTR in study.user_attrs or study.get_trials(deepcopy=False):
        return 0
    for params in configurations:
        study.enqueue_trial(params, user_attrs={WARM_START_ATTR: config.warm_start.study})
    study.set_user_attr(
        WARM_START_ATTR,
        {
            "storage": redact(config.warm_start.storage),
            "study": config.warm_start.study,
            "enqueued": configurations,
        },
    )
    return len(configurations)
