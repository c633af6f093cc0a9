"""A default start: the method's own defaults run as a study's first trial.

A method's defaults are its authors' (or this project's measured) best single guess; where they
are releasable on a request, a search that tries them first finds a releasable model at the
price of one trial, where random start-up draws find one only as often as the space holds one
(benchmarks/RESULTS.md, "Cost to a releasable model on shapes"). Opt-in
(``sampler: {start_at_defaults: true}``): the first trial of every other study stays the
sampler's own draw.

The enqueued configuration covers the searched hyperparameters only (the study file's fixed
ones stay fixed). A default the searched range does not contain (a study file's own bounds, or a
relative range resolved on this model) is replaced by the range's centre, geometric on a log
scale, and the replacement is recorded: the trial stays inside the space the file states. So is
a rate's default where the study steps with another optimizer than the method's own: a default
rate is a step size for the method's own steps (a plain-step rate on every gradient method but
``shrink_perturb``), and under Adam the same number is a per-weight step size, so it is not the
method's best guess there even where the range holds it.
Like a warm start it is enqueued once, when the study is created, counts toward the budget
like any trial, and the sampler learns from its result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from tune_unlearn.config.study_config import SearchParam
from tune_unlearn.methods import UnlearningMethod
from tune_unlearn.report import study_record

DEFAULT_START_ATTR = study_record.DEFAULT_START


@dataclass(frozen=True)
class DefaultStart:
    """The configuration a default start runs, and which of its values are the range's centre
    because the method's default lies outside the searched range."""

    params: dict[str, Any]
    replaced: tuple[str, ...]
    #: The replaced rates whose default is a step size for another optimizer than the study's.
    other_steps: tuple[str, ...] = ()

    def describe(self) -> str:
        values = ", ".join(f"{name}={_short(value)}" for name, value in self.params.items())
        outside = [name for name in self.replaced if name not in self.other_steps]
        notes = [f"{', '.join(outside)}: the range's centre, the default lies outside it"] if outside else []
        if self.other_steps:
            notes.append(
                f"{', '.join(self.other_steps)}: the range's centre, the default is a rate for the "
                "method's own steps, not this study's optimizer"
            )
        return values + (f" ({'; '.join(notes)})" if notes else "")


def default_start(
    method_class: type[UnlearningMethod],
    space: Mapping[str, SearchParam],
    fixed: Mapping[str, Any] | None = None,
) -> DefaultStart:
    """The method's default for every searched hyperparameter, or the range's centre where the
    range does not contain it, or where it is a rate and ``fixed`` (the study's fixed values)
    names another optimizer than the method's own. ``space`` is in absolute units (relative
    ranges resolved)."""
    defaults = method_class.hyperparameters()
    declared = method_class.constraints()
    steps_differ = method_class.steps_with(fixed or {}) != method_class.steps_with({})
    params: dict[str, Any] = {}
    replaced, other_steps = [], []
    for name, dimension in space.items():
        default = defaults[name]
        foreign = steps_differ and declared[name].rate
        if dimension.contains(default) and not foreign:
            params[name] = default
        else:
            params[name] = dimension.centre()
            replaced.append(name)
            if foreign:
                other_steps.append(name)
    return DefaultStart(params, tuple(replaced), tuple(other_steps))


def enqueue_default_start(study: optuna.Study, start: DefaultStart) -> bool:
    """Enqueue ``start`` in a study created by this process (the caller says so: a rerun or a
    second worker finds it recorded, or a study begun without it); whether it was enqueued."""
    if DEFAULT_START_ATTR in study.user_attrs:
        return False
    study.enqueue_trial(start.params, user_attrs={DEFAULT_START_ATTR: True})
    study.set_user_attr(DEFAULT_START_ATTR, {"params": start.params, "replaced": list(start.replaced)})
    return True


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
