"""The Optuna study: storage, sampler, search space, and the objective of one trial."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Collection, Mapping
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

from tune_unlearn.config.storages import StorageUrl, redact, storage_problem, unavailable_message
from tune_unlearn.config.study_config import SamplerConfig, SearchParam, StudyConfig
from tune_unlearn.errors import UsageError
from tune_unlearn.methods import DivergenceError, StepMonitor
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.report import study_record
from tune_unlearn.report import trial_record as record
from tune_unlearn.report.pareto import finite, objective_directions
from tune_unlearn.report.study_record import StudyRecord
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.scoring.metrics import METRICS
from tune_unlearn.study.optuna_adapter import set_dashboard_constraints
from tune_unlearn.study.successive_halving import SuccessiveHalving, rung_steps
from tune_unlearn.tracking.runs import Tracker
from tune_unlearn.trial import configuration_run
from tune_unlearn.trial.configuration_run import RunResult
from tune_unlearn.trial.guard import CollapseDetected, TrialStopped, study_guard
from tune_unlearn.trial.inputs import StudyInputs, build_method
from tune_unlearn.trial.study_references import StudyReferences


def storage_url(config: StudyConfig, override: str | None = None) -> str:
    """The storage string: ``--storage``, else the study file's, else SQLite in the output."""
    if override:
        return override
    if config.storage:
        return config.storage
    return f"sqlite:///{(config.output_dir() / 'study.db').resolve()}"


def open_storage(url: str) -> BaseStorage:
    """RDB for SQL URLs, journal-on-Redis for ``redis://``, else a journal file at that path.
    A URL of no known scheme or a server that cannot be opened is a :class:`UsageError` (exit
    2, one line naming the URL and what to do), not a traceback."""
    problem = storage_problem(url)
    if problem is not None:
        raise UsageError(f"storage {redact(url)}: {problem}")
    parsed = StorageUrl.parse(url)
    path = parsed.local_path
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if parsed.is_rdb:
            return RDBStorage(url)
        if parsed.kind == "redis":
            with warnings.catch_warnings():  # experimental since Optuna 3.1, the documented Redis storage
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                backend = JournalRedisBackend(url)
            probe_storage(url)  # the backend connects lazily: find a dead server now
            return JournalStorage(backend)
    except _UNAVAILABLE as error:
        raise UsageError(unavailable_message(url, error)) from None
    return JournalStorage(JournalFileBackend(str(path)))


def probe_storages(config: StudyConfig, override: str | None = None) -> None:
    """Connect to the study's storage servers, writing nothing: a missing database or a dead
    server is found by ``check`` and before a run trains anything, not by the run."""
    for url in (override or config.storage, config.warm_start.storage if config.warm_start else None):
        if url:
            probe_storage(url)


def probe_storage(url: str) -> None:
    """Connect to a storage server and let go, writing nothing (``check`` does this): raises
    :class:`UsageError` with :func:`unavailable_message` when it cannot be opened."""
    problem = storage_problem(url)
    if problem is not None:
        raise UsageError(f"storage {redact(url)}: {problem}")
    parsed = StorageUrl.parse(url)
    try:
        if parsed.kind in ("postgresql", "mysql"):
            import sqlalchemy

            engine = sqlalchemy.create_engine(url)
            try:
                with engine.connect():
                    pass
            finally:
                engine.dispose()
        elif parsed.kind == "redis":
            import redis

            client = redis.Redis.from_url(url)
            try:
                client.ping()
            finally:
                client.close()
    except _UNAVAILABLE as error:
        raise UsageError(unavailable_message(url, error)) from None


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """What opening a storage server raises when it is down, missing, refuses us, or its
    driver is not installed."""
    import redis.exceptions
    import sqlalchemy.exc

    return (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.ArgumentError,
        redis.exceptions.ConnectionError,
        ImportError,
    )


_UNAVAILABLE = _unavailable_errors()


def sampler_seed(seed: int, stream: int) -> int:
    """The sampler seed of the ``stream``-th process to join a study: the study file's seed for
    the first (so one uninterrupted run is reproducible), distinct for every later one (so a
    resumed run or a second worker does not replay the first one's suggestions)."""
    return seed if stream == 0 else (seed * 1_000_003 + stream * 7_919) % (2**31 - 1)


def make_sampler(config: SamplerConfig, stream: int = 0) -> BaseSampler:
    startup = 10 if config.n_startup_trials is None else config.n_startup_trials  # Optuna's default
    seed = sampler_seed(config.seed, stream)
    if config.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if config.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if config.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.multivariate:
        with warnings.catch_warnings():  # experimental in Optuna 5, and documented as such
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def suggest(trial: optuna.Trial, space: Mapping[str, SearchParam]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, dim in space.items():
        if dim.type == "categorical":
            params[name] = trial.suggest_categorical(name, dim.choices or [])
        elif dim.type == "int":
            step = int(dim.step) if dim.step else 1
            params[name] = trial.suggest_int(
                name, int(dim.low or 0), int(dim.high or 0), step=step, log=dim.log
            )
        else:
            params[name] = trial.suggest_float(
                name, float(dim.low or 0), float(dim.high or 0), step=dim.step, log=dim.log
            )
    return params


def trial_seed(study_seed: int, trial_number: int) -> int:
    """A distinct, reproducible seed per trial."""
    return (study_seed * 1_000_003 + trial_number) % (2**31 - 1)


def create_or_load(config: StudyConfig, storage: BaseStorage | str) -> optuna.Study:
    """Create the study, or load it to resume; refuse one whose objectives differ. The caller
    seeds the sampler per joining process (:func:`sampler_seed`)."""
    wanted = objective_directions(config.objectives)
    study = optuna.create_study(
        study_name=config.name,
        storage=storage,
        sampler=make_sampler(config.sampler),
        directions=wanted,
        load_if_exists=True,
    )
    refuse_old_metrics(study)
    existing = [d.name.lower() for d in study.directions]
    if existing != wanted:
        raise ValueError(
            f"study {config.name!r} in this storage optimises {existing}; the study file asks for "
            f"{wanted}: use another study name or storage"
        )
    names = study.metric_names
    if names is None:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(config.objectives))
    elif list(names) != list(config.objectives):
        raise ValueError(
            f"study {config.name!r} in this storage has objectives {names}; the study file asks for "
            f"{config.objectives}: use another study name or storage"
        )
    return study


def refuse_old_metrics(study: optuna.Study) -> None:
    """A study recorded before 0.2 holds ``uis`` in OrthoGrad's sense and ``param_shift``:
    resuming or reporting it would mix two meanings of one name, so say so instead."""
    for trial in study.get_trials(deepcopy=False):
        if "param_shift" in TrialRecord.of(trial).metrics:
            raise ValueError(
                f"study {study.study_name!r} was recorded by tune_unlearn < 0.2, where `uis` meant "
                "OrthoGrad's score (now `impact_score`) and `param_shift` the parameter shift (now "
                "`uis`); its values cannot mix with new trials: use a new study name or storage"
            )


def refuse_changed_default_space(study: optuna.Study, config: StudyConfig) -> None:
    """A study file that searches its method's *default* space means whatever space the package
    defines; if that space resolves differently from the one the study's trials were drawn from
    (a newer package moved a default range), resuming would mix two spaces under one name.
    Refuse, naming each dimension that changed; a file that writes its space out means what it
    says and is not checked."""
    stored = StudyRecord.of(study).study_file
    if not stored or not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return
    before = dict(stored.get("method", {}).get("search", {}))
    now = config.model_dump(mode="json")["method"]["search"]
    changed = [
        f"{name}: was {_span(before.get(name))}, now {_span(now.get(name))}"
        for name in sorted(set(before) | set(now))
        if before.get(name) != now.get(name)
    ]
    _refuse_moved(study, config, changed)


def refuse_default_scale_never_measured(
    study: optuna.Study, config: StudyConfig, known: Collection[str]
) -> None:
    """:func:`refuse_changed_default_space` before anything is measured: a study with complete
    trials drawn from a default space stored every scale that space named, so a default
    dimension relative to a scale the study does not hold is one the package moved to a new
    scale (as the ascent range moved to ``ascent_probe``). Refuse, naming it, rather than spend
    the probe's steps on a study that will be refused anyway."""
    stored = StudyRecord.of(study).study_file
    if not stored or not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return
    before = dict(stored.get("method", {}).get("search", {}))
    moved = [
        f"{name}: was {_span(before.get(name))}, now [{d.low:g}, {d.high:g}] × the {d.scale} scale, "
        "which this study never measured"
        for name, d in config.method.search.items()
        if d.scale is not None and d.scale not in known
    ]
    _refuse_moved(study, config, moved)


def _refuse_moved(study: optuna.Study, config: StudyConfig, changes: list[str]) -> None:
    if changes:
        raise ValueError(
            f"study {study.study_name!r} was drawn from {config.method.name}'s default space as "
            f"tune_unlearn {study.user_attrs.get(study_record.PACKAGE_VERSION, '< 0.2')} "
            f"resolved it, and that space has changed: {'; '.join(changes)}. To resume it, write "
            "the old space out in method.search; otherwise use a new study name or storage"
        )


def _span(dimension: Mapping[str, Any] | None) -> str:
    if dimension is None:
        return "not searched"
    if dimension.get("choices") is not None:
        return f"one of {dimension['choices']}"
    span = f"[{dimension.get('low'):.4g}, {dimension.get('high'):.4g}]"
    return span + (" log" if dimension.get("log") else "")


class QuietDivergence(logging.Filter):
    """Optuna logs a caught trial exception with its traceback; a divergence is an expected
    outcome of an aggressive configuration, so keep its one-line message and drop the trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], DivergenceError):
            record.exc_info = None
        return True


class Objective:
    """One trial: suggest, unlearn, measure, record (storage and tracking), return the values."""

    def __init__(
        self, inputs: StudyInputs, references: StudyReferences, tracker: Tracker | None = None
    ) -> None:
        self.inputs, self.references, self.tracker = inputs, references, tracker
        self.config = inputs.config
        # Both serve every trial of this process (threads of n_jobs too): the guard is
        # stateless, and the recovery attacks compute the retrains' side once.
        self.guard = study_guard(inputs, references)
        self.recovery = configuration_run.recovery_measures(inputs, references)

    def __call__(self, trial: optuna.Trial) -> list[float]:
        started = time.perf_counter()
        tracking_seconds = 0.0  # local: one Objective serves every thread of n_jobs
        params = suggest(trial, self.config.method.search)
        seed = trial_seed(self.config.sampler.seed, trial.number)
        trial.set_user_attr(record.SEED, seed)
        run_id = None
        if self.tracker is not None:
            tracking_started = time.perf_counter()
            run_id = self.tracker.start_trial(trial.number, params, {"seed": str(seed)})
            tracking_seconds += time.perf_counter() - tracking_started
            if run_id is not None:  # None: the tracker was lost
                trial.set_user_attr(record.MLFLOW_RUN, run_id)
        every = self.config.collapse_guard.every
        collapsed: list[CollapseDetected] = []  # filled when a collapse ends the run as infeasible
        unlearning_started = time.perf_counter()
        try:
            result = configuration_run.run(
                self.inputs,
                self.references,
                params,
                seed=seed,
                recovery=self.recovery,
                monitor=self.monitor(trial, params, collapsed),
                monitor_every=every,
            )
        except DivergenceError as error:
            trial.set_user_attr(record.FAIL_REASON, str(error))
            self._end_run(run_id, "failed", tags={"fail_reason": str(error)})
            raise
        except TrialStopped as stopped:  # the collapse guard, or successive halving
            seconds = time.perf_counter() - unlearning_started
            self.record_stopped(trial, stopped, params, seconds, record.PRUNED_REASON, record.PRUNED_AT_STEP)
            self._end_run(run_id, "pruned", tags={"pruned_reason": str(stopped)})
            raise optuna.TrialPruned(str(stopped)) from stopped
        except KeyboardInterrupt as error:  # Ctrl-C or SIGTERM: retried by the next run
            reason = f"interrupted ({getattr(error, 'signal_name', 'SIGINT')}); retried"
            self._end_run(run_id, "killed", tags={"fail_reason": reason})
            raise
        except BaseException as error:  # a bug: the run says so, then it propagates
            self._end_run(run_id, "failed", tags={"fail_reason": f"{type(error).__name__}: {error}"})
            raise
        collapse = collapsed[0] if collapsed else None
        if collapse is not None:
            seconds = result.metrics["gpu_seconds"]
            self.record_stopped(trial, collapse, params, seconds, record.COLLAPSED, record.COLLAPSED_AT_STEP)
        storage_started = time.perf_counter()
        violations = self.violations(result, collapse)
        self.record(trial, result, violations)
        storage_seconds = time.perf_counter() - storage_started
        values = [METRICS.get(name)().objective(result.metrics[name]) for name in self.config.objectives]
        tracking_seconds += self._end_run(
            run_id,
            "complete",
            metrics={**result.metrics, **result.diagnostics},
            curves=result.log.curves(self.inputs.task_names),
            tags={"feasible": str(all(v <= 0 for v in violations))},
        )
        # Where the trial's wall time went (the framework overhead is all but `unlearning`).
        # Optuna's own final write (the values) comes after and is not in `storage`.
        trial.set_user_attr(
            record.SECONDS,
            {
                "unlearning": result.metrics["gpu_seconds"],
                "evaluation": result.diagnostics["seconds/evaluation"],
                "tracking": tracking_seconds,
                "storage": storage_seconds,
                "total": time.perf_counter() - started,
            },
        )
        return values

    def _end_run(self, run_id: str | None, state: str, **kwargs: Any) -> float:
        """End the trial's MLflow run; the seconds it took."""
        if self.tracker is None or run_id is None:  # also a tracker that was lost mid-study
            return 0.0
        started = time.perf_counter()
        self.tracker.end_trial(run_id, state, **kwargs)
        return time.perf_counter() - started

    def monitor(
        self, trial: optuna.Trial, params: Mapping[str, Any], collapsed: list[CollapseDetected]
    ) -> StepMonitor | None:
        """What watches this trial's steps: the collapse guard, and successive halving's rungs
        when the study asks for them (both every ``collapse_guard.every`` steps). With
        ``on_collapse: infeasible`` a collapse ends the run where it stands and is appended to
        ``collapsed``, instead of raising (which prunes the trial)."""
        halving = self.config.successive_halving
        guard = self.guard
        keep_collapsed = self.config.collapse_guard.constrains
        if halving is None and not keep_collapsed:
            return guard
        judge = None
        if halving is not None:
            steps = build_method(self.inputs, params).steps
            first = self.inputs.method_class.first_monitored_step(steps)
            every = self.config.collapse_guard.every
            judge = SuccessiveHalving(
                trial,
                rung_steps(steps, every, halving.reduction, halving.rungs, first),
                halving.reduction,
                self.config.objectives,
                self.config.constraints,
                lambda model: configuration_run.measure(self.inputs, self.references, model),
            )

        def watch(step: int, model: MultiTaskModel) -> bool:
            if guard is not None:
                try:
                    guard(step, model)
                except CollapseDetected as collapse:
                    if not keep_collapsed:
                        raise
                    collapsed.append(collapse)
                    return True  # measured as it stands, and infeasible
            if judge is not None:
                judge(step, model)
            return False

        return watch

    def record_stopped(
        self,
        trial: optuna.Trial,
        stopped: TrialStopped,
        params: Mapping[str, Any],
        seconds: float,
        reason_key: str,
        step_key: str,
    ) -> None:
        """Why the guard or successive halving stopped the trial (under ``reason_key`` and
        ``step_key``: pruned, or collapsed and measured), and the compute it saved (the
        remaining steps at the rate the trial ran so far)."""
        steps = build_method(self.inputs, params).steps
        trial.set_user_attr(reason_key, str(stopped))
        trial.set_user_attr(step_key, stopped.step)
        trial.set_user_attr(record.STEPS_SAVED, steps - stopped.step)
        trial.set_user_attr(record.SECONDS_SAVED, seconds * (steps - stopped.step) / stopped.step)

    def violations(self, result: RunResult, collapse: CollapseDetected | None) -> list[float]:
        """The study file's constraints, in its order, then (with ``on_collapse: infeasible``)
        the ``collapse_guard`` constraint: ``floor −`` the guard's utility where it stopped the
        run, or on the finished model."""
        violations = [c.violation(result.metrics[c.metric]) for c in self.config.constraints]
        settings = self.config.collapse_guard
        if settings.constrains and self.guard is not None:
            utility = collapse.utility if collapse is not None else self.guard.utility(result.model)
            violations.append(settings.floor - utility)
        return violations

    def record(self, trial: optuna.Trial, result: RunResult, violations: list[float]) -> None:
        # One attribute each rather than one per key: fewer storage writes per trial.
        trial.set_user_attr(record.METRICS, {k: finite(v) for k, v in result.metrics.items()})
        trial.set_user_attr(record.DIAGNOSTICS, {k: finite(v) for k, v in result.diagnostics.items()})
        if violations:
            # The list form: what optuna-dashboard plots feasibility from, and Optuna reads too.
            set_dashboard_constraints(trial, violations)
        trial.set_user_attr(record.FEASIBLE, all(v <= 0 for v in violations))
