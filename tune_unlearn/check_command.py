"""``check``: a study file's resolved plan, printed before anything heavy runs.

The reference mode and its cost, the attacks a trial pays for, when the validation suite
judges, the references still to train and their estimated time, the storages reached, and the
search space as it will be sampled; any problem found on the way is an error and exit 2, with
nothing written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tune_unlearn.catalog import describe_search
from tune_unlearn.config.study_config import StudyConfig, SuccessiveHalvingConfig
from tune_unlearn.errors import EXIT_CONFIG, EXIT_OK
from tune_unlearn.methods import UnlearningMethod
from tune_unlearn.references.attacks import relearning_budget
from tune_unlearn.references.reference_models import ReferenceBudgetError
from tune_unlearn.report.request_cost import mode_options, reference_mode, step_budget
from tune_unlearn.study.default_start import default_start
from tune_unlearn.study.objective import probe_storages
from tune_unlearn.study.stream import request_indices
from tune_unlearn.study.successive_halving import rung_steps
from tune_unlearn.study.warm_start import warm_configurations
from tune_unlearn.trial.inputs import load_inputs


def validation_line(config: StudyConfig) -> str:
    """When the study's suite judges trials (``check`` prints it)."""
    settings = config.validation
    if settings.stop_at_releasable:
        when = "each trial the rule could recommend as it finishes; the search stops at the first that passes"
    elif settings.trials == "pareto":
        when = "every front trial after the search"
    else:
        when = "front trials in the rule's order after the search, until one passes"
    return f"validation: {settings.suite} judges {when}"


def successive_halving_line(
    config: StudyConfig, halving: SuccessiveHalvingConfig, method_class: type[UnlearningMethod]
) -> str:
    """Where ``check`` says the study's trials will be judged by successive halving."""

    every, reduction = config.collapse_guard.every, halving.reduction
    steps = step_budget(config)
    dropped = ""
    if steps is not None:
        first = method_class.first_monitored_step(steps)
        rungs = rung_steps(steps, every, reduction, halving.rungs, first)
        before = sorted(set(rung_steps(steps, every, reduction, halving.rungs)) - set(rungs))
        if rungs:
            where = f"at steps {', '.join(map(str, rungs))} of {steps}"
        elif before:
            where = "at no step"
        else:
            where = (
                f"at no step: no rung lies below {steps} steps on a period of {every} (collapse_guard.every)"
            )
        if before:
            dropped = (
                f" (step(s) {', '.join(map(str, before))} dropped: {config.method.name} is not judged "
                f"before step {first}, its monitor_from {method_class.monitor_from:g} of the budget)"
            )
    else:
        where = f"at 1/{reduction}^k of each trial's step budget, k = {halving.rungs} … 1"
        if method_class.monitor_from > 0:
            dropped = (
                f" (none before {method_class.monitor_from:g} of the budget: {config.method.name}'s "
                "monitor_from)"
            )
    line = f"successive halving: trials judged {where}{dropped}; the best 1/{reduction} at each rung go on"
    if config.sampler.name == "gp":  # measured on the quickstart: benchmarks/RESULTS.md
        line += " (note: the GP sampler learns nothing from a pruned trial and may propose it again)"
    return line


def check_study(config: StudyConfig, study: Path) -> int:
    """Print what running ``study`` will do; exit code 0, or 2 with the problem on stderr."""
    try:
        inputs = load_inputs(config)
        mode, per_request = reference_mode(
            config.references, None if config.requests is None else len(config.requests)
        )
        print(f"reference mode: {mode}, {per_request:.3g} retrain(s) per request")
        print("reference modes for this request (retrains per request; * this study's):")
        for line in mode_options(config):
            print(f"  {line}")
        if "relearn_recovery" in config.named_metrics:
            ensemble = config.references.ensemble()
            members = ensemble.seeds if ensemble else 1
            trial, once = relearning_budget(config.evaluation.relearning, members)
            unit = inputs.retrain_sample_gradients
            print(
                f"relearn_recovery: at most {trial / unit:.3g} retrain(s) of attack per trial, "
                f"and {once / unit:.3g} once for the retrains' side"
            )
        if config.successive_halving is not None:
            print(successive_halving_line(config, config.successive_halving, inputs.method_class))
        if config.validation.suite is not None:
            print(validation_line(config))
        if config.collapse_guard.constrains:
            print(
                "collapse guard: a collapsed trial stops, is measured and completes infeasible "
                "(collapse_guard.on_collapse: infeasible)"
            )
        cost = inputs.reference_plan.missing_cost()
        if cost[0]:
            print(f"references: {cost[0]} model(s) to train, estimated {cost[1]:.0f} s on this machine")
        inputs.reference_plan.check_budget(cost)
        warm = warm_configurations(config)
        probe_storages(config)
        if config.requests is not None:
            request_indices(config)  # overlapping or empty requests
    except ReferenceBudgetError as error:
        print(f"{study}: references.retrain.seeds: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except (LookupError, ValueError) as error:  # UsageError too (a warm start that cannot be read)
        print(f"{study}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if warm:
        print(f"warm start: {len(warm)} configuration(s) of {config.warm_start.study!r} run first")  # type: ignore[union-attr]
    if config.sampler.start_at_defaults:
        print(f"first trial: the method's defaults, {default_start_line(config, inputs.method_class)}")
    print(
        f"{study}: OK ({config.method.name} on {config.problem.name or config.problem.factory}, "
        f"{len(config.method.search)} searched hyperparameters, {config.n_trials} trials)"
    )
    given = "the method's default" if config.method.is_default_search() else "the study file's"
    print(f"search space ({given}; {inputs.method_class.steps_with(config.method.fixed)} steps):")
    print(describe_search(config.method.search, indent="  ") or "  (nothing searched)")
    return EXIT_OK


def default_start_line(config: StudyConfig, method_class: type[UnlearningMethod]) -> str:
    """What ``sampler.start_at_defaults`` runs first; a range relative to a scale not measured
    yet is judged when the study resolves it."""
    space = config.method.search
    if any(dimension.scale is not None for dimension in space.values()):
        return (
            "each resolved with its relative range on the original before the first trial (a "
            "default outside its range is replaced by the range's centre)"
        )
    return default_start(method_class, space, config.method.fixed).describe()
