"""The study file: YAML parsed into pydantic models, then checked as a whole.

:func:`load_study` reports *every* problem at once, each as a :class:`ConfigIssue` with its
dotted path, the bad value and what was expected. Structural problems come from pydantic;
cross-field problems (a search key the method does not take, a task the problem does not have)
come from :func:`tune_unlearn.config.study_checks.semantic_issues`, which reads the raw mapping
defensively so that it still runs when another part of the file is malformed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from tune_unlearn.config.attack_specs import QuantizationSpec, RelearningSpec
from tune_unlearn.config.problem_config import ProblemConfig
from tune_unlearn.config.schema import ConfigError, ConfigIssue, Strict, pydantic_issues
from tune_unlearn.config.study_checks import semantic_issues
from tune_unlearn.methods import METHODS, Scale
from tune_unlearn.scoring.metrics import METRICS, RECOVERY_METRICS, RENAMED, RETRAIN_ONLY_METRICS

DEFAULT_OBJECTIVES = ("forget_efficacy", "retained_utility", "uis", "compute_cost")
SAMPLERS = ("tpe", "nsga2", "gp", "random")
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def _metric_name(name: str) -> str:
    if name in RENAMED:
        raise ValueError(RENAMED[name])
    METRICS.get(name)  # raises with the valid names and the closest one
    return name


MetricName = Annotated[str, AfterValidator(_metric_name)]


class SearchParam(Strict):
    """One dimension of the search space: ``float``, ``int`` or ``categorical``."""

    type: Literal["float", "int", "categorical"] = "float"
    # int before float: an integer bound stays an integer, so a resolved study file (and each
    # study of a comparison) reads back as the same integer range
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | None = None
    #: ``low`` and ``high`` are relative to a scale the study measures on the original before
    #: the first trial (``methods/_rate_scale.py``): the rates tried are the range times it.
    scale: Scale | None = None

    def absolute(self, scales: Mapping[Scale, float]) -> SearchParam:
        """This dimension in absolute units, given the measured ``scales``."""
        if self.scale is None:
            return self
        factor = scales[self.scale]
        assert self.low is not None and self.high is not None  # a float range
        return self.model_copy(update={"low": self.low * factor, "high": self.high * factor, "scale": None})

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this dimension can suggest (an absolute range's bounds
        included)."""
        if self.type == "categorical":
            return value in (self.choices or [])
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        steps = (value - self.low) / self.step  # a whole number on the grid, up to rounding
        return math.isclose(steps, round(steps), abs_tol=1e-9)

    def centre(self) -> Any:
        """The middle of the range (geometric on a log scale), on its ``step`` grid and an
        integer for ``int``; a categorical dimension's first choice."""
        if self.type == "categorical":
            return (self.choices or [None])[0]
        assert self.low is not None and self.high is not None
        middle = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        if self.step is not None:
            middle = self.low + round((middle - self.low) / self.step) * self.step
        return round(middle) if self.type == "int" else middle

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.scale is not None and (self.type != "float" or self.step is not None):
            raise ValueError("'scale' takes a float range without 'step'")
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"'low' ({self.low}) must be below 'high' ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scaled range needs 'low' > 0, got {self.low}")
        return self


class Constraint(Strict):
    """``metric <= bound`` or ``metric >= bound``; feasible when :meth:`violation` ≤ 0."""

    metric: MetricName
    op: Literal["<=", ">="]
    bound: float

    def violation(self, value: float) -> float:
        if math.isnan(value):
            return math.inf
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


class SamplerConfig(Strict):
    name: Literal["tpe", "nsga2", "gp", "random"] = "tpe"
    seed: int = 0
    #: Random trials before a model-based sampler (TPE, GP) takes over; Optuna's default if unset.
    n_startup_trials: int | None = Field(None, ge=1)
    #: TPE only: one joint density over the hyperparameters (Optuna's ``multivariate``), which
    #: can follow couplings such as the ratio of ascent to retain rate.
    multivariate: bool = False
    #: Run the method's own defaults first (``study/default_start.py``): one enqueued trial, so
    #: a study whose method ships a releasable default finds it at the price of one trial.
    start_at_defaults: bool = False

    @model_validator(mode="after")
    def _multivariate_is_tpe(self) -> SamplerConfig:
        if self.multivariate and self.name != "tpe":
            raise ValueError(f"multivariate applies to the tpe sampler, not {self.name}")
        return self


class CollapseGuardConfig(Strict):
    """Stop a trial once retained utility on a ``val`` sample falls below ``floor``."""

    enabled: bool = True
    floor: float = Field(0.5, gt=0.0, le=1.0)
    every: int = Field(10, ge=1)
    sample_size: int = Field(256, ge=8)
    #: What a collapsed trial becomes. ``prune``: it ends pruned, and no sampler learns from it
    #: (the GP may propose the region again). ``infeasible``: it stops where it collapsed, is
    #: measured there and completes with the ``collapse_guard`` constraint violated (``floor −``
    #: the guard's utility, on every complete trial), so samplers that read constraints (GP,
    #: TPE, NSGA-II) learn to avoid the region.
    on_collapse: Literal["prune", "infeasible"] = "prune"

    @property
    def constrains(self) -> bool:
        """Whether every complete trial carries the ``collapse_guard`` constraint."""
        return self.enabled and self.on_collapse == "infeasible"


class SuccessiveHalvingConfig(Strict):
    """Judge each trial at rungs of its step budget and prune those not among the best
    ``1/reduction`` of the trials that reached the same rung (``study/successive_halving.py``)."""

    reduction: int = Field(3, ge=2)
    #: Rungs at ``steps / reduction^k`` for ``k = rungs … 1``, rounded up to a multiple of
    #: ``collapse_guard.every``.
    rungs: int = Field(2, ge=1)


class EvaluationConfig(Strict):
    """How each trial's model is measured.

    ``retain_sample``: the retain set's scores (``score/<model>/retain/<task>``, reported but in
    no metric) come from a seeded sample of at most this many samples; ``null`` scores the
    whole retain set, which on a large problem costs more than the unlearning itself.
    ``val``, forget and kept sets are always scored whole. ``batch_size``: rows per forward pass
    (small batches keep a CPU's caches warm; a GPU may want more).
    """

    retain_sample: int | None = Field(2000, ge=1)
    batch_size: int = Field(256, ge=1)
    #: N unlearning runs per trial (other seeds) for ``forget_score``; 0: not computed.
    forget_score_runs: int = Field(0, ge=0, le=256)
    #: How ``forget_score`` turns attack counts into rates: ``bounded`` (Clopper–Pearson upper
    #: bounds, the default) or ``challenge`` (the NeurIPS 2023 challenge's observed rates, for
    #: comparison with its published figures); see :mod:`tune_unlearn.scoring.forget_score`.
    forget_score_rule: Literal["bounded", "challenge"] = "bounded"
    #: The attacks behind ``relearn_recovery`` and ``quantization_recovery`` (run only when a
    #: study names one); the defaults are ``validators/release.yaml``'s, so that a constraint
    #: on the metric asks of a trial what the gate's check asks of the candidate.
    relearning: RelearningSpec = RelearningSpec()
    quantization: QuantizationSpec = QuantizationSpec()


class RecommendConfig(Strict):
    """How one configuration is recommended from the feasible Pareto front.

    Objectives are normalised in the hypervolume box: each metric from its ideal (0) to its
    worst (1), ``compute_cost`` from 0 to one retrain's cost, ``gpu_seconds`` from 0 to the
    study's slowest trial. (Not over the front's own range, which would let a second of timing
    noise weigh as much as a collapse.)
    ``ideal_point``: nearest the ideal (Euclidean); ``knee``: the smallest sum of normalised
    objectives; ``lexicographic``: best on ``order[0]``, then among those within its
    ``tolerances`` entry of that best, best on ``order[1]``, and so on.
    """

    rule: Literal["ideal_point", "knee", "lexicographic"] = "ideal_point"
    order: list[MetricName] = Field(default_factory=list)
    tolerances: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _lexicographic_needs_order(self) -> RecommendConfig:
        if self.rule == "lexicographic" and not self.order:
            raise ValueError("the lexicographic rule needs 'order': objectives, most important first")
        unknown = set(self.tolerances) - set(self.order)
        if unknown:
            raise ValueError(f"tolerances for objectives not in 'order': {', '.join(sorted(unknown))}")
        return self


class ForgetConfig(Strict):
    """Which train instances to forget (``where`` + ``fraction``, or ``index_file``), from which
    tasks (``target_tasks``; every task in ``full`` mode)."""

    mode: Literal["full", "partial"] = "full"
    target_tasks: list[str] | None = None
    where: dict[str, int | float] = Field(default_factory=dict)
    fraction: float = Field(1.0, gt=0.0, le=1.0)
    index_file: Path | None = None
    seed: int | None = None
    #: Train instances deleted by earlier requests (an index file; the same mode and tasks):
    #: kept out of the retain set and the retrain. Request streams fill it in.
    previously_forgotten: Path | None = None

    @model_validator(mode="after")
    def _mode_rules(self) -> ForgetConfig:
        if self.mode == "partial" and not self.target_tasks:
            raise ValueError("partial mode needs 'target_tasks': the tasks to forget from")
        if not self.where and self.index_file is None:
            raise ValueError("select instances with 'where' (label or attribute values) or 'index_file'")
        if self.where and self.index_file is not None:
            raise ValueError("give either 'where' or 'index_file', not both")
        return self


class MethodConfig(Strict):
    """The method, its fixed hyperparameters and its search space. Without ``search`` the
    method's own default space is searched (less what ``fixed`` gives), with Adam steps where
    ``fixed`` names no ``optimizer`` and no rate (``UnlearningMethod.study_fixed``); ``search:
    {}`` searches nothing."""

    name: str
    fixed: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, SearchParam] = Field(default_factory=dict)
    #: The scales behind the ``scale:`` dimensions of ``search``: measured on the original
    #: before the first trial when not given, then written here in the resolved study file.
    rate_scales: dict[Scale, float] = Field(default_factory=dict)

    def scaled(self) -> bool:
        """Whether a dimension of ``search`` is relative to a measured scale."""
        return bool(self.named_scales())

    def named_scales(self) -> set[Scale]:
        """The scales the relative dimensions of ``search`` name."""
        return {dimension.scale for dimension in self.search.values() if dimension.scale is not None}

    def with_rate_scales(self, scales: Mapping[Scale, float]) -> MethodConfig:
        """This section with every relative dimension in absolute units, and the scales."""
        search = {name: dimension.absolute(scales) for name, dimension in self.search.items()}
        return self.model_copy(update={"search": search, "rate_scales": dict(scales)})

    @model_validator(mode="before")
    @classmethod
    def _default_search(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping) or "search" in raw or raw.get("name") not in METHODS:
            return raw
        given = raw.get("fixed")
        if given is not None and not isinstance(given, Mapping):
            return raw  # the field's own validation names the problem
        # The default space steps with Adam unless the file says otherwise (study_fixed).
        fixed = METHODS.get(raw["name"]).study_fixed(given or {})
        return {**raw, "fixed": fixed, "search": _default_space(raw["name"], fixed)}

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        METHODS.get(name)  # raises with the valid names and the closest one
        return name

    def is_default_search(self) -> bool:
        """Whether ``search`` is the method's default space (what ``check`` reports)."""
        default = _default_space(self.name, self.fixed) if self.name in METHODS else {}
        return self.search == {k: SearchParam.model_validate(v) for k, v in default.items()}


def with_rate_scales(config: StudyConfig, scales: Mapping[Scale, float] | None) -> StudyConfig:
    """``config`` with its relative search dimensions in absolute units, given the ``scales``
    (where the study file's own ``rate_scales`` give one, theirs); unchanged when nothing is
    relative or a scale it names is not known yet."""
    section = config.method
    scales = {**(scales or {}), **section.rate_scales}
    if not section.scaled() or not section.named_scales() <= scales.keys():
        return config
    return config.model_copy(update={"method": section.with_rate_scales(scales)})


def _default_space(method: str, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The method's default search space, less the hyperparameters the file fixes (and its
    rates absolute where the file fixes ``optimizer: adam``)."""
    return METHODS.get(method).default_space(fixed)


#: Retrain ensemble size when the study file says ``retrain: true``: five digits retrains cost
#: about 2 s on two cores; the spread of five seeds is a usable (if rough) noise estimate.
DEFAULT_RETRAIN_SEEDS = 5


class EnsembleConfig(Strict):
    """``retrain: {seeds: K}``: K retrains with seeds ``problem.seed + 0 … K − 1``, trained in
    ``n_jobs`` processes (default: as many as cores and members allow, or this process alone
    when the processes would save less than the 10 s they take to start, judged from a few
    timed training steps; a CPU member then trains on one thread either way, so the choice
    does not change its weights).

    ``scope``: ``request`` (default) trains the K members for this request alone; ``stream``
    (a request stream only) trains one **bank** of K members on the train set less *every*
    request's instances, shared by all the stream's requests (K / n retrains each).
    ``left_out`` is such a bank given by hand: an index file of the train instances its members
    never saw (on the request's target tasks; it must hold every instance of this request and
    of earlier ones), and ``shared_by`` the number of requests its cost is split among.
    """

    seeds: int = Field(DEFAULT_RETRAIN_SEEDS, ge=1, le=256)
    n_jobs: int | None = Field(None, ge=1)
    scope: Literal["request", "stream"] = "request"
    left_out: Path | None = None
    shared_by: int = Field(1, ge=1)

    def is_bank(self) -> bool:
        return self.scope == "stream" or self.left_out is not None


def _retrain_kind(value: Any) -> str:
    if isinstance(value, (Mapping, EnsembleConfig)):
        return "ensemble"
    return "flag" if isinstance(value, bool) else "path"


# The retrain union's member tags ("ensemble", "flag", "path") are dropped from dotted paths
# by schema.pydantic_issues (schema.UNION_TAGS).


class ReferencesConfig(Strict):
    """Where the reference models come from.

    ``original``: trained with the problem's recipe (default), or a state-dict file or MLflow
    model URI of the model you already have. ``retrain``: an ensemble trained with the recipe
    (``true`` for the default size, or ``{seeds: K}``), a file or URI (one model, no spread),
    or ``false`` for none: metrics and checks then use their reference-free forms.
    ``budget_hours``: training references that are not cached yet may take at most this long
    (estimated before anything is trained); raise it to accept a bigger ensemble.
    """

    original: str | None = None
    retrain: Annotated[
        Annotated[bool, Tag("flag")]
        | Annotated[str, Tag("path")]
        | Annotated[EnsembleConfig, Tag("ensemble")],
        Discriminator(_retrain_kind),
    ] = True
    cache_dir: Path | None = None
    budget_hours: float = Field(1.0, gt=0.0)

    def stream_bank(self) -> bool:
        """One bank for a stream's requests (``retrain: {scope: stream}``)."""
        ensemble = self.ensemble()
        return ensemble is not None and ensemble.scope == "stream"

    def ensemble(self) -> EnsembleConfig | None:
        """The retrain ensemble to train, or ``None`` (a given model, or no retrain)."""
        if self.retrain is True:
            return EnsembleConfig()
        return self.retrain if isinstance(self.retrain, EnsembleConfig) else None


class ValidationConfig(Strict):
    """Validators to run after the study, on the recommended trial or on every Pareto trial."""

    suite: Path | None = None
    trials: Literal["recommended", "pareto"] = "recommended"
    #: Judge each feasible trial with the suite as it finishes, and end the search at the first
    #: that passes; the recommendation is then the rule's first among the trials that passed.
    #: Costs a validation per feasible trial, and saves the rest of the budget.
    stop_at_releasable: bool = False

    @model_validator(mode="after")
    def _stop_needs_a_suite(self) -> ValidationConfig:
        if self.stop_at_releasable and self.suite is None:
            raise ValueError(
                "stop_at_releasable judges trials with the gate: name a suite file (validation.suite)"
            )
        return self


class WarmStartConfig(Strict):
    """Start from an earlier study: its ``top`` feasible Pareto configurations (nearest the
    ideal point first, in that study's hypervolume box) run first, before the sampler picks.
    The earlier study must search the same hyperparameters; its trials stay where they are."""

    storage: str
    study: str
    top: int = Field(5, ge=1)


class WorkersConfig(Strict):
    """Distributed workers: how often a running trial proves its worker alive, and how long a
    silent trial may stay running before another worker fails and retries it."""

    heartbeat_interval: float = Field(5.0, gt=0.0)
    grace_period: float = Field(30.0, gt=0.0)

    @model_validator(mode="after")
    def _grace_exceeds_interval(self) -> WorkersConfig:
        if self.grace_period <= 2 * self.heartbeat_interval:
            raise ValueError("grace_period must exceed twice heartbeat_interval, or live trials look dead")
        return self


class TrackingConfig(Strict):
    """MLflow: ``uri`` defaults to ``sqlite:///<output>/mlflow.db``; the experiment to the study
    name. With ``required: false`` an unreachable server is a warning, not an error."""

    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None
    required: bool = True


class StudyConfig(Strict):
    """A whole study file."""

    name: str = Field(pattern=r"^[\w.-]+$")
    problem: ProblemConfig
    forget: ForgetConfig
    method: MethodConfig
    n_trials: int = Field(20, ge=1)
    #: Trials run in this many threads of one process (Optuna's ``n_jobs``).
    n_jobs: int = Field(1, ge=1)
    timeout: float | None = Field(None, gt=0)
    sampler: SamplerConfig = SamplerConfig()
    objectives: list[MetricName] = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES), min_length=1)
    constraints: list[Constraint] = Field(default_factory=list)
    storage: str | None = None
    output: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    references: ReferencesConfig = Field(default_factory=ReferencesConfig)
    collapse_guard: CollapseGuardConfig = CollapseGuardConfig()
    #: Multi-fidelity: prune trials at rungs of their step budget; off unless given.
    successive_halving: SuccessiveHalvingConfig | None = None
    evaluation: EvaluationConfig = EvaluationConfig()
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)
    tracking: TrackingConfig = TrackingConfig()
    validation: ValidationConfig = ValidationConfig()
    workers: WorkersConfig = WorkersConfig()
    warm_start: WarmStartConfig | None = None
    #: A request stream: deletion requests in the order they arrive, unlearned one after
    #: another on the running model (``study/stream.py``). Given instead of ``forget``.
    requests: list[ForgetConfig] | None = None

    @model_validator(mode="before")
    @classmethod
    def _first_request_is_the_forget_section(cls, raw: Any) -> Any:
        # Every study has a forget section; a stream's is its first request.
        requests = raw.get("requests") if isinstance(raw, Mapping) else None
        if isinstance(requests, list) and requests and "forget" not in raw:
            return {**raw, "forget": requests[0]}
        return raw

    @model_validator(mode="after")
    def _recommend_uses_objectives(self) -> StudyConfig:
        missing = [name for name in self.recommend.order if name not in self.objectives]
        if missing:
            raise ValueError(f"recommend.order names metrics that are not objectives: {', '.join(missing)}")
        return self

    @property
    def named_metrics(self) -> set[str]:
        """The metrics the search reads: its objectives and constraints."""
        return set(self.objectives) | {c.metric for c in self.constraints}

    @model_validator(mode="after")
    def _retrain_only_metrics_need_retrains(self) -> StudyConfig:
        for name in sorted(self.named_metrics & RETRAIN_ONLY_METRICS):
            if self.references.retrain is False:
                what = (
                    "recovery beyond what honest retrains allow under the same attack"
                    if name in RECOVERY_METRICS
                    else "damage beyond what honest retrains score"
                )
                raise ValueError(
                    f"{name} measures {what}: reference-free mode cannot judge it (set "
                    "references.retrain, or drop the metric)"
                )
        return self

    @model_validator(mode="after")
    def _forget_score_needs_runs(self) -> StudyConfig:
        named = self.named_metrics
        if "forget_score" in named and self.evaluation.forget_score_runs < 2:
            raise ValueError(
                "forget_score compares N unlearning runs with the retrains: set "
                "evaluation.forget_score_runs to N ≥ 2 (each trial then costs N runs)"
            )
        if "forget_score" in named and self.references.retrain is False:
            raise ValueError("forget_score needs the retrain ensemble (references.retrain)")
        return self

    @field_validator("objectives")
    @classmethod
    def _distinct_objectives(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("objectives must not repeat")
        return names

    @field_validator("constraints", mode="before")
    @classmethod
    def _parse_constraints(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        parsed = []
        for item in value:
            match = _CONSTRAINT.match(item) if isinstance(item, str) else None
            if isinstance(item, str) and match is None:
                raise ValueError(f"expected 'metric <= number' or 'metric >= number', got {item!r}")
            parsed.append(
                {"metric": match.group(1), "op": match.group(2), "bound": float(match.group(3))}
                if match
                else item
            )
        return parsed

    def output_dir(self) -> Path:
        return self.output if self.output is not None else Path("runs") / self.name


def parse_study(raw: Any, source: str = "<study>") -> StudyConfig:
    """Validate a study mapping; raise :class:`ConfigError` listing every problem."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            source, [ConfigIssue("", "expected a mapping at the top level", type(raw).__name__)]
        )
    issues: list[ConfigIssue] = []
    config = None
    try:
        config = StudyConfig.model_validate(raw)
    except ValidationError as error:
        issues.extend(pydantic_issues(error))
    issues.extend(semantic_issues(raw))
    if issues or config is None:
        raise ConfigError(source, issues)
    return config
