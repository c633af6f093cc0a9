"""What a deletion request cost, all in, in retrain units (docs/guide.md, "All-in cost").

The unit is one retrain of the model with the problem's recipe (``epochs × |retain set|``
sample-gradients), the unit of ``compute_cost``. A request's cost is the reference models
trained for it plus every trial of its search plus the candidate's re-run plus what measuring
the rate scales of a relative search space spent (``methods/_rate_scale.py``). The original is not
counted: it is the model being unlearned, which the user already has.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from optuna.trial import FrozenTrial, TrialState

from tune_unlearn.config.study_checks import whole_group_removed
from tune_unlearn.config.study_config import (
    DEFAULT_RETRAIN_SEEDS,
    ReferencesConfig,
    StudyConfig,
)
from tune_unlearn.report.trial_record import PRUNED_AT_STEP, ROBUSTNESS_COST, TrialRecord


@dataclass(frozen=True)
class RequestCost:
    """Retrain units per part; ``pruned`` is estimated (see :func:`request_cost`)."""

    mode: str
    references: float
    trials: float
    pruned: float
    candidate: float
    #: The recovery attacks that complete trials ran for ``relearn_recovery`` (their
    #: ``robustness_cost``); 0 when the study names no recovery metric.
    attacks: float = 0.0
    #: Measuring the rate scales (the gradient norms and any probe); 0 for an absolute space.
    scales: float = 0.0

    @property
    def total(self) -> float:
        return self.references + self.trials + self.pruned + self.candidate + self.attacks + self.scales


def reference_mode(references: ReferencesConfig, stream_requests: int | None = None) -> tuple[str, float]:
    """The reference mode's name and what its models cost this request, in retrains: an
    ensemble of K trained members costs K; a bank of K members shared by n requests costs
    K / n each; a given retrain model and reference-free cost nothing here (a given model's own
    training is not known). ``stream_requests``: the requests of the stream a ``scope: stream``
    bank is shared by (the stream's file, before each request's study sets ``shared_by``)."""
    ensemble = references.ensemble()
    if ensemble is not None and ensemble.is_bank():
        n = stream_requests if ensemble.scope == "stream" and stream_requests else ensemble.shared_by
        return f"bank (K = {ensemble.seeds}, shared by {n} request{'s' * (n > 1)})", ensemble.seeds / n
    if ensemble is not None:
        return f"ensemble (K = {ensemble.seeds})", float(ensemble.seeds)
    if references.retrain is False:
        return "reference-free", 0.0
    return "given retrain model (its training not counted)", 0.0


def mode_options(config: StudyConfig) -> list[str]:
    """What each reference mode would cost this request (references per request, in retrains)
    and what it can judge, the study's own mode marked: ``check`` prints them before anything
    trains. Reference-free is refused for a request that removes a whole group."""
    ensemble = config.references.ensemble()
    k = ensemble.seeds if ensemble is not None else DEFAULT_RETRAIN_SEEDS
    chosen, _ = reference_mode(config.references, None if config.requests is None else len(config.requests))
    requests = config.requests if config.requests is not None else [config.forget]
    whole = [n for n, r in enumerate(requests) if whole_group_removed(r.model_dump())]
    if whole:
        at = f"requests.{whole[0]}" if config.requests is not None else "forget"
        free = f"refused: {at} removes a whole group, which only a model that never saw it can judge"
    else:
        free = (
            "0; the attacks and the retrain-only checks are not applicable (a suite that demands them fails)"
        )
    options = [
        (chosen.startswith("ensemble"), f"ensemble (K = {k}): {k:g}; judges every check"),
        (
            chosen.startswith("bank"),
            f"bank (K = {k}, shared by n requests known together): {k:g} / n, {k / 10:.2g} at n = 10; "
            "judges every check",
        ),
        (chosen == "reference-free", f"reference-free: {free}"),
    ]
    return [f"{'*' if mine else ' '} {text}" for mine, text in options]


def step_budget(config: StudyConfig) -> int | None:
    """A trial's step budget where the study does not search it: the file's ``fixed`` value,
    else the method's default (a study that leaves ``steps`` out still runs that many)."""
    from tune_unlearn.methods import METHODS

    fixed = config.method.fixed.get("steps")
    if fixed is None and "steps" not in config.method.search:
        fixed = METHODS.get(config.method.name).hyperparameters().get("steps")
    return fixed if isinstance(fixed, int) else None


def request_cost(
    references: ReferencesConfig, trials: list[FrozenTrial], steps: int | None, scales: float = 0.0
) -> RequestCost:
    """Complete trials count their ``compute_cost``; a pruned one the share of its step budget
    it ran (``steps``, :func:`step_budget`, or the trial's own where the search draws it) times
    the median complete trial's cost (its own count was not stored); the candidate's
    re-run costs what the recommended trial did, taken as the median here too. Failed trials
    count nothing (most diverge in their first steps). ``scales``: the study's
    ``rate_scales_cost``."""
    mode, reference_units = reference_mode(references)
    costs = [
        value
        for t in trials
        if t.state == TrialState.COMPLETE and (value := TrialRecord.of(t).metric("compute_cost")) is not None
    ]
    typical = median(costs) if costs else 0.0
    pruned = sum(
        typical * min(float(t.user_attrs.get(PRUNED_AT_STEP, 0)) / budget, 1.0)
        for t in trials
        if t.state == TrialState.PRUNED and (budget := t.params.get("steps", steps))
    )
    attacks = sum(
        value
        for t in trials
        if t.state == TrialState.COMPLETE and (value := TrialRecord.of(t).metric(ROBUSTNESS_COST)) is not None
    )
    return RequestCost(mode, reference_units, float(sum(costs)), pruned, typical, float(attacks), scales)


def cost_lines(cost: RequestCost) -> list[str]:
    """The report section stating the cost beside the verdict."""
    return [
        "## All-in cost of this request (retrain units)",
        "",
        f"Reference mode: **{cost.mode}**. One unit is one retrain with the problem's recipe.",
        "",
        "| part | retrains |",
        "| --- | --- |",
        f"| reference models (this request's share) | {cost.references:.3f} |",
        f"| complete trials (their `compute_cost`) | {cost.trials:.3f} |",
        f"| pruned trials (estimated from the steps they ran) | {cost.pruned:.3f} |",
        f"| the candidate's re-run | {cost.candidate:.3f} |",
        *(
            [f"| recovery attacks in the search (their `robustness_cost`) | {cost.attacks:.3f} |"]
            if cost.attacks
            else []
        ),
        *(
            [f"| measuring the rate scales (gradient norms, probes) | {cost.scales:.3f} |"]
            if cost.scales
            else []
        ),
        f"| **total** | **{cost.total:.3f}** |",
        "",
        "Not counted: the original (the model being unlearned), failed trials, and validation "
        "(see `gate.md`).",
        "",
    ]
