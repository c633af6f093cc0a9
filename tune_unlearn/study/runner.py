"""Run a study: ``run`` and ``worker`` are one loop over one shared budget.

Every process that joins a study — a plain ``run``, a second ``run`` on the same output folder,
a ``worker`` on another machine — does the same thing:

1. checks that its output folder can be written, loads the study's fixed inputs and reference
   models as values (:mod:`tune_unlearn.trial.inputs`, references from the cache), and under
   the study's lock creates or loads the study, takes a sampler stream (distinct seeds per
   joining process) and opens or joins the MLflow parent run;
2. claims trials until the budget is spent (:func:`tune_unlearn.study.distributed.claim_trial`):
   ``n_trials`` trials that count, where an interrupted or abandoned trial is replaced by its
   retry; a rerun therefore *resumes* to the budget, and ``add_trials`` raises it;
3. waits while trials of other processes still run (one of them may die and need a retry);
4. under the lock, the process that sees the study finished first writes its outputs from one
   consistent snapshot (:mod:`tune_unlearn.study.finalize`).

An interrupt (Ctrl-C, SIGTERM) fails the trial in flight with the reason, enqueues its retry and
ends its MLflow run as killed; the parent run is ended as killed and reopened by the next run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from tune_unlearn.config.study_config import StudyConfig, with_rate_scales
from tune_unlearn.errors import UsageError, reading_input
from tune_unlearn.methods import DivergenceError, UnlearningMethod, measure_scales
from tune_unlearn.report import study_record
from tune_unlearn.report.outputs import check_writable
from tune_unlearn.report.study_record import StudyRecord
from tune_unlearn.report.summary import StudySummary, summarise
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.study.default_start import default_start, enqueue_default_start
from tune_unlearn.study.distributed import (
    Heartbeat,
    budget_lock,
    claim_trial,
    counted_trials,
    fail_and_retry,
    live_trials,
)
from tune_unlearn.study.finalize import finalize, study_fingerprint
from tune_unlearn.study.objective import (
    Objective,
    QuietDivergence,
    create_or_load,
    make_sampler,
    open_storage,
    refuse_changed_default_space,
    refuse_default_scale_never_measured,
    storage_url,
)
from tune_unlearn.study.optuna_adapter import fail_if_running, trial_log_name
from tune_unlearn.study.publish import open_tracker, parent_closed_on_error, record_study
from tune_unlearn.study.release_stop import ReleaseStop
from tune_unlearn.study.warm_start import enqueue_warm_start, warm_configurations
from tune_unlearn.tracking.runs import (
    Tracker,
    check_reachable,
    resolve_tracking_uri,
)
from tune_unlearn.trial.guard import ascent_probe_budget
from tune_unlearn.trial.inputs import StudyInputs, build_method, load_inputs
from tune_unlearn.trial.study_references import StudyReferences, load_study_references


class TrackingLost(RuntimeError):
    """The tracking server went away mid-study and the study file requires tracking."""


@dataclass(frozen=True)
class StudyRun:
    """What one process did to a study, and the study's analysed state afterwards."""

    study: optuna.Study
    summary: StudySummary
    output: Path
    trained_references: list[str]
    trials_run: int
    finalized: bool  # this process wrote the outputs
    budget: int
    complete: bool = True  # no trial left running or waiting (a timeout can leave some)


def run_study(
    config: StudyConfig,
    *,
    n_trials: int | None = None,
    add_trials: int | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    sampler: optuna.samplers.BaseSampler | None = None,
    method: UnlearningMethod | type[UnlearningMethod] | None = None,
    trust_pickle: bool = False,
) -> StudyRun:
    """Run (or resume) the study until ``n_trials`` trials count (default: the study file's),
    or ``add_trials`` more than it holds; then write every output.

    Objects replace what the study file names: ``sampler`` (an Optuna sampler), ``method`` (an
    unlearning method class, or an instance whose hyperparameters become the fixed ones; it
    need not be registered). The study file's ``search`` space still applies to it."""
    if method is not None:
        config = with_method(config, method)
    return _join(
        config,
        n_trials,
        add_trials,
        storage,
        tracking_uri,
        progress,
        sampler,
        config.n_jobs,
        trust_pickle,
        method if isinstance(method, type) or method is None else type(method),
    )


def with_method(config: StudyConfig, method: UnlearningMethod | type[UnlearningMethod]) -> StudyConfig:
    """The study file with ``method`` in place of the one it names (see :func:`run_study`)."""
    cls = method if isinstance(method, type) else type(method)
    unknown = sorted(set(config.method.search) - set(cls.hyperparameters()))
    if unknown:
        raise UsageError(f"{cls.__name__} has no hyperparameter {', '.join(unknown)} to search")
    fixed = dict(config.method.fixed)
    if not isinstance(method, type):
        fixed = {k: v for k, v in method.get_params().items() if k not in config.method.search}
    section = config.method.model_copy(update={"name": cls.name or cls.__name__, "fixed": fixed})
    return config.model_copy(update={"method": section})


def run_worker(
    config: StudyConfig,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    trust_pickle: bool = False,
) -> StudyRun:
    """Join a distributed study: the same loop as :func:`run_study`, one trial at a time."""
    return _join(config, None, None, storage, tracking_uri, progress, None, 1, trust_pickle, None)


def _join(
    config: StudyConfig,
    n_trials: int | None,
    add_trials: int | None,
    storage: str | None,
    tracking_uri: str | None,
    progress: bool,
    sampler: optuna.samplers.BaseSampler | None,
    n_jobs: int,
    trust_pickle: bool,
    method_class: type[UnlearningMethod] | None,
) -> StudyRun:
    output = config.output_dir()
    check_writable(output)  # before anything heavy, and naming the folder
    warm = warm_configurations(config)  # a warm start that cannot be read: exit 2, nothing written
    settings = config.tracking
    if settings.enabled and settings.required:  # a server that is down: fail before anything heavy
        check_reachable(resolve_tracking_uri(config, tracking_uri))
    with reading_input():  # the data, the request, the references: a bad one is exit 2
        inputs = load_inputs(
            config, method=method_class, tracking_uri=tracking_uri, trust_pickle=trust_pickle
        )
        references = load_study_references(inputs, progress=progress)
    url = storage_url(config, storage)
    with budget_lock(url, config.name):
        with reading_input():  # a study of that name with other objectives, or recorded by < 0.2
            study = create_or_load(config, open_storage(url))
        fresh = not study.get_trials(deepcopy=False)
        inputs = _resolve_rate_scales(study, inputs, references)
        enqueue_warm_start(study, inputs.config, warm)
        if fresh and config.sampler.start_at_defaults:  # after a warm start's, in a new study only
            start = default_start(
                inputs.method_class, inputs.config.method.search, inputs.config.method.fixed
            )
            enqueue_default_start(study, start)
        stream = StudyRecord.of(study).sampler_streams
        study.set_user_attr(study_record.SAMPLER_STREAMS, stream + 1)
        study.sampler = sampler if sampler is not None else make_sampler(config.sampler, stream)
        budget = _budget(study, config, n_trials, add_trials)
        tracker = open_tracker(config, tracking_uri)
        record_study(study, inputs.config, inputs.device, tracker, url)
    quiet_trial_logs()
    objective = Objective(inputs, references, tracker)
    release = (
        ReleaseStop(objective.inputs, references, output, objective.recovery)
        if config.validation.stop_at_releasable
        else None
    )
    session = _Session(study, objective, url, budget, progress, release)
    try:
        with parent_closed_on_error(tracker):
            try:
                done = session.drive(n_jobs)
            except TrackingLost:
                _finish(session)  # the outputs, locally: nothing finished is lost
                raise
            summary, finalized = _finish(session)
    finally:
        _close_stale_runs(session)
    complete = not live_trials(study)
    return StudyRun(study, summary, output, list(references.trained), done, finalized, budget, complete)


def _resolve_rate_scales(
    study: optuna.Study, inputs: StudyInputs, references: StudyReferences
) -> StudyInputs:
    """Put a search space written relative to the original's scales in absolute rates: the
    scales the study file gives, and those the study stored (a worker, a rerun) for the rest; a
    named scale neither holds is measured now, on the original, and stored beside them (a given
    scale keeps its value), so every process searches one space and measures nothing twice. A
    study resumed on a default space that no longer resolves as its trials' did is refused
    (exit 2) before anything is stored."""
    section = inputs.config.method
    named = section.named_scales()
    scales = {**(StudyRecord.of(study).rate_scales or {}), **(section.rate_scales or {})}
    measured = None
    if not named <= scales.keys():
        if section.is_default_search():
            with reading_input():
                refuse_default_scale_never_measured(study, inputs.config, scales.keys())
        ascent = ascent_probe_budget(inputs, references) if "ascent_probe" in named else None
        # The retain loss's curvature on a batch of the size the retain step takes.
        retain_batch = build_method(inputs, {}).batch_size if "retain_curvature" in named else None
        measured = measure_scales(
            references.original_model(),
            inputs.setup,
            named,
            inputs.config.problem.seed,
            ascent,
            retain_batch,
        )
        scales = {**measured.scales, **scales}
    resolved = replace(inputs, config=with_rate_scales(inputs.config, scales))
    if section.is_default_search():
        with reading_input():
            refuse_changed_default_space(study, resolved.config)
    if measured is not None:
        study.set_user_attr(study_record.RATE_SCALES, scales)
        spent = measured.sample_gradients / inputs.retrain_sample_gradients
        study.set_user_attr(study_record.RATE_SCALES_COST, StudyRecord.of(study).rate_scales_cost + spent)
    return resolved


def _budget(study: optuna.Study, config: StudyConfig, n_trials: int | None, add_trials: int | None) -> int:
    """The study's budget: the largest any process asked for (a budget never shrinks, and a
    worker joining with the study file's ``n_trials`` keeps an earlier ``--add-trials``)."""
    stored = StudyRecord.of(study).budget
    wanted = n_trials if n_trials is not None else config.n_trials
    if add_trials is not None:
        wanted = counted_trials(study.get_trials(deepcopy=False)) + add_trials
    budget = max(stored, wanted)
    study.set_user_attr(study_record.BUDGET, budget)
    return budget


class _Session:
    """One process's part in a study: claim, run and record trials until the budget is spent."""

    def __init__(
        self,
        study: optuna.Study,
        objective: Objective,
        url: str,
        budget: int,
        progress: bool,
        release: ReleaseStop | None = None,
    ) -> None:
        self.study, self.objective, self.url = study, objective, url
        #: ``validation.stop_at_releasable``: judges each finished trial, ends the search at a pass
        self.release = release
        self.tracker: Tracker | None = objective.tracker
        self.config = objective.inputs.config
        self.budget, self.progress = budget, progress
        self.in_flight: dict[int, optuna.Trial] = {}
        self.stop = threading.Event()
        self.done = 0
        self.stale_runs: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _on_stale(self, trial: FrozenTrial, reason: str) -> None:
        run_id = TrialRecord.of(trial).mlflow_run_id
        if run_id is not None:
            self.stale_runs.append((str(run_id), reason))

    def drive(self, n_jobs: int) -> int:
        """Run trials until the budget is spent and no other process's trial is running;
        the number this process ran."""
        settings = self.config.workers
        deadline = time.monotonic() + self.config.timeout if self.config.timeout else None
        bar = tqdm(
            total=self.budget,
            initial=min(self.budget, counted_trials(self.study.get_trials(deepcopy=False))),
            desc=self.config.name,
            unit="trial",
            disable=not self.progress,
            leave=False,
        )
        errors: list[BaseException] = []

        def loop() -> None:
            try:
                while not self.stop.is_set() and (deadline is None or time.monotonic() < deadline):
                    if self.release is not None and self.release.found(self.study):
                        return  # a releasable trial is known: the search is over
                    trial = claim_trial(
                        self.study, self.url, self.budget, settings.grace_period, self._on_stale
                    )
                    if trial is None:
                        if not self._others_running():
                            return
                        # A trial of another process is still running: it may die and need a
                        # retry, so wait for its outcome rather than leave the budget unfinished.
                        self.stop.wait(min(settings.heartbeat_interval, 1.0))
                        continue
                    self._run_one(trial)
                    bar.update(1)
                    if self.release is not None and self.release.judge(self.study, trial.number):
                        self.stop.set()  # other threads finish their trial and claim no more
                    if self.tracker is not None and self.tracker.lost and self.config.tracking.required:
                        raise TrackingLost(
                            f"the MLflow tracking server stopped answering ({self.tracker.lost}); "
                            "finished trials are kept in the storage and the outputs written here; "
                            "run again when it is back to resume (or set tracking.required: false)"
                        )
            except BaseException as error:
                errors.append(error)
                self.stop.set()

        try:
            if n_jobs <= 1:
                loop()
            else:
                threads = [threading.Thread(target=loop, daemon=True) for _ in range(n_jobs)]
                for thread in threads:
                    thread.start()
                while any(t.is_alive() for t in threads):
                    for thread in threads:
                        thread.join(timeout=0.2)
        except KeyboardInterrupt as interrupt:
            self.stop.set()
            self._retry_in_flight(interrupt)
            raise
        finally:
            bar.close()
        if errors:
            if isinstance(errors[0], KeyboardInterrupt):
                self._retry_in_flight(errors[0])
            raise errors[0]
        return self.done

    def _others_running(self) -> bool:
        mine = set(self.in_flight)
        return any(t.number not in mine for t in live_trials(self.study))

    def _run_one(self, trial: optuna.Trial) -> None:
        with self._lock:
            self.in_flight[trial.number] = trial
        try:
            with Heartbeat(self.study, trial, self.config.workers.heartbeat_interval):
                self._tell(trial)
        except KeyboardInterrupt:
            raise  # stays in flight: drive() fails it with the reason and enqueues its retry
        except BaseException:
            with self._lock:
                self.in_flight.pop(trial.number, None)
            raise
        with self._lock:
            self.in_flight.pop(trial.number, None)
            self.done += 1

    def _tell(self, trial: optuna.Trial) -> None:
        """Run one claimed trial and record its outcome, as ``study.optimize`` would."""
        try:
            values = self.objective(trial)
        except optuna.TrialPruned:
            self.study.tell(trial, state=TrialState.PRUNED)
            return
        except DivergenceError:
            self.study.tell(trial, state=TrialState.FAIL)
            return
        except KeyboardInterrupt:
            raise  # failed and retried by drive(), which sees every trial in flight
        except BaseException as error:
            reason = f"{type(error).__name__}: {error}"
            fail_if_running(self.study, trial, reason)
            raise TrialError(trial.number, reason) from error
        self.study.tell(trial, values)

    def _retry_in_flight(self, interrupt: BaseException) -> None:
        signal_name = getattr(interrupt, "signal_name", "SIGINT")
        with self._lock:
            trials = list(self.in_flight.values())
        for trial in trials:
            with contextlib.suppress(Exception):
                fail_and_retry(self.study, trial, trial.params, f"interrupted ({signal_name}); retried")


class TrialError(RuntimeError):
    """A trial raised an unexpected error (a bug, not a configuration problem): exit 3."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"trial {number} failed: {reason}")
        self.number, self.reason = number, reason


def _finish(session: _Session) -> tuple[StudySummary, bool]:
    """Write the outputs if this process is the one that sees the study finished first."""
    study, config = session.study, session.config
    with budget_lock(session.url, study.study_name):
        trials = study.get_trials(deepcopy=False)
        unfinished = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        fingerprint = study_fingerprint(trials, config.validation)
        written = (config.output_dir() / "pareto.json").exists()
        if not unfinished and (StudyRecord.of(study).finalized != fingerprint or not written):
            objective = session.objective
            summary = finalize(
                study, objective.inputs, objective.references, session.tracker, recovery=objective.recovery
            )
            study.set_user_attr(study_record.FINALIZED, fingerprint)
            return summary, True
    if session.tracker is not None and not unfinished:
        session.tracker.finish_study()
    return summarise(study, config), False


def _close_stale_runs(session: _Session) -> None:
    """End the MLflow runs of trials this process found abandoned (a worker that died)."""
    if session.tracker is None:
        return
    for run_id, reason in session.stale_runs:
        session.tracker.end_abandoned_trial(run_id, reason)


def quiet_trial_logs() -> None:
    # The progress bar shows progress; per-trial INFO lines would interleave with it. A
    # divergence is an expected outcome: keep its one-line warning, drop the traceback (on
    # the logger that reports failed trials: a parent's filter would not see its records).
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial_logger = logging.getLogger(trial_log_name())
    if not any(isinstance(f, QuietDivergence) for f in trial_logger.filters):
        trial_logger.addFilter(QuietDivergence())


def default_threads() -> int:
    """Torch CPU threads when ``--threads`` is not given: half the cores, at most 4. The
    models here are small; every core on a shared machine mostly buys contention."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))
