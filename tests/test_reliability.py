"""Nothing lost, nothing leaked, same answer twice: interrupts, concurrent starts, deaths of
workers and tracking servers, corrupted caches, unwritable folders, credentials, determinism.

Real processes, real signals, a real ``mlflow server`` and real PostgreSQL, as in CI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

from tune_unlearn.references.training import ReferenceCache
from tune_unlearn.report.trial_record import RETRY_OF
from tune_unlearn.study.distributed import counted_trials
from tune_unlearn.study.objective import open_storage, storage_url
from tune_unlearn.study.runner import run_study
from tune_unlearn.trial.study_references import LoadedStudy, load_study_values

from .helpers import (
    POSTGRES,
    cli,
    postgres_admin,
    start_mlflow_server,
    tiny_study,
    wait_for_running_trial,
    write_study,
)

LONG_TRIALS = {
    "name": "interference_aware",
    "fixed": {"steps": 300, "batch_size": 16},
    "search": {"ascent_lr": {"low": 1e-4, "high": 1e-3, "log": True}},
}


def load(config_or_url: object) -> optuna.Study:
    url = config_or_url if isinstance(config_or_url, str) else storage_url(config_or_url)  # type: ignore[arg-type]
    return optuna.load_study(study_name="tiny", storage=open_storage(url))


# -- interrupts ------------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "signum"), [("run", signal.SIGINT), ("worker", signal.SIGTERM)])
def test_an_interrupted_trial_fails_with_its_reason_is_retried_and_a_rerun_finishes_the_budget(
    tmp_path: Path, command: str, signum: int
) -> None:
    config = tiny_study(tmp_path, n_trials=2, method=LONG_TRIALS, tracking={"enabled": True})
    path = write_study(tmp_path, config)
    process = cli(command, str(path), "--no-progress", "--threads", "1")
    wait_for_running_trial(storage_url(config), process, attribute="mlflow_run_id")
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "run the same command again to resume" in err

    study = load(config)
    (interrupted,) = [t for t in study.trials if t.state == TrialState.FAIL]
    name = signal.Signals(signum).name
    assert interrupted.user_attrs["fail_reason"] == f"interrupted ({name}); retried"
    (retry,) = [t for t in study.trials if t.state == TrialState.WAITING]
    assert retry.user_attrs[RETRY_OF] == interrupted.number
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    killed = client.get_run(interrupted.user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED" and killed.data.tags["fail_reason"].startswith("interrupted")
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "KILLED"

    rerun = cli("run", str(path), "--no-progress", "--threads", "1")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    study = load(config)
    trials = study.get_trials(deepcopy=False)
    assert counted_trials(trials) == config.n_trials  # resumed to the budget, not n_trials more
    retried = [t for t in trials if t.user_attrs.get(RETRY_OF) == interrupted.number]
    assert [t.params for t in retried] == [interrupted.params]
    assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert (tmp_path / "out" / "pareto.json").exists()
    assert f"of a budget of {config.n_trials}" in out


def test_a_rerun_resumes_to_the_budget_and_add_trials_raises_it(tmp_path: Path) -> None:
    config = tiny_study(tmp_path)
    assert run_study(config, progress=False).trials_run == 3
    again = run_study(config, progress=False)
    assert again.trials_run == 0 and len(again.study.trials) == 3  # finished: nothing to add
    more = run_study(config, add_trials=2, progress=False)
    assert more.trials_run == 2 and len(more.study.trials) == 5
    params = [tuple(sorted(t.params.items())) for t in more.study.trials]
    assert len(set(params)) == 5  # a resumed process draws from its own sampler stream


# -- concurrent starts ----------------------------------------------------------------------
def test_two_runs_started_together_on_the_embedded_defaults_share_one_budget(tmp_path: Path) -> None:
    config = tiny_study(tmp_path, n_trials=4, tracking={"enabled": True})
    path = write_study(tmp_path, config)
    load_study_values(config)  # references cached: the two start their trials together
    processes = [cli("run", str(path), "--no-progress", "--threads", "1") for _ in range(2)]
    results = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
    study = load(config)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]  # one budget between them
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 4  # distinct sampler seeds: no configuration twice
    document = json.loads((tmp_path / "out" / "pareto.json").read_text())
    assert sum(document["counts"][s] for s in ("complete", "pruned", "fail")) == 4
    assert document["counts"]["running"] == 0  # written from a finished snapshot
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny"]
    runs = client.search_runs([experiment.experiment_id], "tags.`tune_unlearn.role` = 'trial'")
    assert len(runs) == 4 and all(r.info.status in ("FINISHED", "KILLED") for r in runs)


# -- workers that die ---------------------------------------------------------------------------
def test_a_worker_started_within_a_dead_workers_grace_period_waits_and_retries_its_trial(
    tmp_path: Path,
) -> None:
    config = tiny_study(
        tmp_path,
        method=LONG_TRIALS,
        tracking={"enabled": True},
        workers={"heartbeat_interval": 0.5, "grace_period": 8.0},
    )
    path = write_study(tmp_path, config)
    doomed = cli("worker", str(path), "--no-progress", "--threads", "1")
    wait_for_running_trial(storage_url(config), doomed, attribute="mlflow_run_id")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    started = time.monotonic()
    survivor = cli("worker", str(path), "--no-progress", "--threads", "1")  # well within 8 s
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    assert time.monotonic() - started > 8.0 - 1.0  # it waited out the grace period
    study = load(config)
    trials = study.get_trials(deepcopy=False)
    (orphan,) = [t for t in trials if "worker stopped" in t.user_attrs.get("fail_reason", "")]
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == orphan.number]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert counted_trials(trials) == config.n_trials
    assert "study complete" in out
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    abandoned = client.get_run(orphan.user_attrs["mlflow_run_id"])
    assert abandoned.info.status == "KILLED", err
    assert "worker stopped" in abandoned.data.tags["fail_reason"]


# -- a tracking server that dies mid-study ------------------------------------------------------
@pytest.fixture
def dying_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    server, uri = start_mlflow_server(
        f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts", tmp_path / "server.log"
    )
    yield server, uri
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.mark.parametrize("required", [False, True])
def test_a_tracking_server_dying_mid_study_loses_no_trial(
    tmp_path: Path, dying_server: tuple[subprocess.Popen[bytes], str], required: bool
) -> None:
    server, uri = dying_server
    config = tiny_study(tmp_path, n_trials=2, method=LONG_TRIALS, tracking={"uri": uri, "required": required})
    path = write_study(tmp_path, config)
    process = cli("run", str(path), "--no-progress", "--threads", "1")
    wait_for_running_trial(storage_url(config), process)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    started = time.monotonic()
    _, err = process.communicate(timeout=300)
    assert time.monotonic() - started < 120  # bounded retries, not MLflow's minutes per call
    assert "Traceback" not in err
    study = load(config)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert all(t.state != TrialState.FAIL or t.user_attrs.get("fail_reason") for t in finished)
    assert (tmp_path / "out" / "pareto.json").exists()  # the outputs, locally, either way
    if required:
        assert process.returncode == 3 and "stopped answering" in err
    else:
        assert process.returncode == 0, err
        assert "stopped logging" in err
        assert counted_trials(study.trials) == config.n_trials
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


# -- faults on disk ---------------------------------------------------------------------------
def test_a_corrupt_cached_reference_is_retrained_with_a_warning_naming_it(tmp_path: Path) -> None:
    config = tiny_study(tmp_path)
    experiment = load_study_values(config)
    cache = ReferenceCache(tmp_path / "cache")
    original = cache.root / f"original-{cache.key('original', experiment.inputs.problem, 0)}.pt"
    member = (
        cache.root
        / f"retrain-{cache.key('retrain', experiment.inputs.problem, 1, experiment.inputs.request)}.json"
    )
    original.write_bytes(original.read_bytes()[:100])  # truncated
    member.write_text("{not json")  # garbled
    with pytest.warns(UserWarning) as caught:
        again = load_study_values(config)
    messages = " ".join(str(w.message) for w in caught)
    assert str(original) in messages and str(member) in messages and "training it again" in messages
    assert again.references.trained == ("original", "retrain ×1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_study_values(config).references.trained == ()  # intact again


def test_an_output_folder_that_cannot_be_created_is_refused_before_anything_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tiny_study(tmp_path, output=str(blocker / "out"))
    path = write_study(tmp_path, config)
    process = cli("run", str(path), "--no-progress", "--threads", "1")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    assert f"the output folder {blocker / 'out'} cannot be written" in err
    assert "tracking" not in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # nothing trained


# -- secrets -----------------------------------------------------------------------------------
@pytest.fixture
def password_storage() -> Iterator[str]:
    """A PostgreSQL storage URL with a password in it (trust auth ignores the password)."""
    database = f"tune_unlearn_secret_{uuid.uuid4().hex[:8]}"
    with postgres_admin() as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    yield POSTGRES.replace("postgres@", "postgres:s3cr3t-pw@") + f"/{database}"
    with postgres_admin() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_a_password_in_the_storage_url_reaches_no_output(
    tmp_path: Path, password_storage: str, capfd: pytest.CaptureFixture[str]
) -> None:
    config = tiny_study(tmp_path, n_trials=2, storage=password_storage, tracking={"enabled": True})
    run = run_study(config, progress=False)
    captured = capfd.readouterr()
    secret = "s3cr3t-pw"
    assert secret not in captured.out + captured.err
    assert secret not in (run.output / "study.resolved.yaml").read_text()
    assert "postgres:***@" in (run.output / "study.resolved.yaml").read_text()
    assert secret not in json.dumps(run.study.user_attrs)
    client = MlflowClient(tracking_uri=f"sqlite:///{run.output / 'mlflow.db'}")
    parent = client.get_run(run.study.user_attrs["mlflow_parent_run_id"])
    assert secret not in json.dumps({**parent.data.params, **parent.data.tags})
    for artifact in (run.output / "mlartifacts").rglob("*.yaml"):
        assert secret not in artifact.read_text()


# -- same answer twice ----------------------------------------------------------------------------
def test_the_same_file_and_seed_sample_and_recommend_the_same_on_a_busy_or_idle_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured seconds vary run to run (here: at random); the sampler learns from the counted
    ``compute_cost``, so the configurations and the recommendation do not."""
    import random

    from tune_unlearn.trial import configuration_run

    noisy = random.Random()

    def timed_exit(self: configuration_run.PhaseTimer, *exc: object) -> None:
        self.seconds = noisy.uniform(0.1, 10.0)  # a machine busy at random

    monkeypatch.setattr(configuration_run.PhaseTimer, "__exit__", timed_exit)
    runs = []
    for folder in ("first", "second"):
        config = tiny_study(
            tmp_path,
            n_trials=6,
            sampler={"name": "tpe", "seed": 3, "n_startup_trials": 2},
            output=str(tmp_path / folder),
        )
        runs.append(run_study(config, progress=False))
    first, second = ([t.params for t in run.study.trials] for run in runs)
    assert first == second
    numbers = [run.summary.recommended.number if run.summary.recommended else None for run in runs]
    assert numbers[0] == numbers[1]
    seconds = [[t.user_attrs["metrics"]["gpu_seconds"] for t in run.study.trials] for run in runs]
    assert seconds[0] != seconds[1]  # the measurement is still reported, and it did differ


def test_compute_cost_counts_sample_gradients_against_one_retrain(tiny_values: LoadedStudy) -> None:
    """graddiff computes one forget and one retain gradient per step: ``steps × (B_f + B_r)``
    sample-gradients, over ``epochs × |retain|`` for a retrain."""
    from tune_unlearn.trial import configuration_run

    result = configuration_run.run(*tiny_values, {"ascent_lr": 1e-3, "retain_lr": 1e-2}, seed=0)
    steps, batch = 6, 16
    recipe = tiny_values.inputs.problem.recipe()
    expected = steps * (batch + batch) / (recipe.epochs * len(tiny_values.inputs.sets.retain))
    assert result.metrics["compute_cost"] == pytest.approx(expected)
    assert result.log.sample_gradients == steps * 2 * batch


def test_the_hypervolume_box_bounds_measured_seconds_by_the_study_itself() -> None:
    from optuna.distributions import FloatDistribution

    from tune_unlearn.report.pareto import HypervolumeBox

    trials = [
        optuna.trial.create_trial(
            values=[0.9, seconds], params={"x": 0.0}, distributions={"x": FloatDistribution(0.0, 1.0)}
        )
        for seconds in (2.0, 5.0)
    ]
    box = HypervolumeBox.for_study(["retained_utility", "gpu_seconds"], trials)
    assert box.worst == (0.0, pytest.approx(5.5))  # 1.1 × the slowest trial, no outside timing
    counted = HypervolumeBox.for_study(["retained_utility", "compute_cost"], trials)
    assert counted.worst == (0.0, 1.0)  # one retrain's compute


# -- recommendations -------------------------------------------------------------------------------
def test_a_trial_below_the_collapse_floor_is_never_recommended_and_the_report_says_so(tmp_path: Path) -> None:
    from optuna.distributions import FloatDistribution

    from tune_unlearn.report.markdown import render_report
    from tune_unlearn.report.summary import summarise

    config = tiny_study(tmp_path, objectives=["forget_efficacy", "retained_utility"])
    study = optuna.create_study(directions=["maximize", "maximize"])
    for efficacy, utility in ((1.0, 0.43), (0.2, 0.45)):
        study.add_trial(
            optuna.trial.create_trial(
                values=[efficacy, utility],
                params={"x": 0.0},
                distributions={"x": FloatDistribution(0.0, 1.0)},
                user_attrs={"metrics": {"forget_efficacy": efficacy, "retained_utility": utility}},
            )
        )
    summary = summarise(study, config)
    assert len(summary.front) == 2 and summary.recommended is None
    assert summary.recommendation_note is not None and "collapse floor 0.5" in summary.recommendation_note
    assert "no configuration is recommended" in render_report(summary)
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.95, 0.8],
            params={"x": 0.0},
            distributions={"x": FloatDistribution(0.0, 1.0)},
            user_attrs={"metrics": {"forget_efficacy": 0.95, "retained_utility": 0.8}},
        )
    )
    summary = summarise(study, config)
    assert summary.recommended is not None and summary.recommended.number == 2
    assert "not considered" in (summary.recommendation_note or "")


# -- untrusted models ---------------------------------------------------------------------------
@pytest.fixture
def registered(tmp_path: Path) -> tuple[Path, str]:
    """A study file whose MLflow store holds two registered models of its original: one logged
    by tune_unlearn (weights inside) and one plain pickled module (as anyone could log)."""
    import mlflow
    import mlflow.pytorch

    from tune_unlearn.tracking.runs import Tracker

    config = tiny_study(tmp_path, tracking={"enabled": True})
    experiment = load_study_values(config)
    model = experiment.references.original_model()
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    tracker = Tracker(uri, "tiny", artifact_root=tmp_path / "out" / "mlartifacts")
    tracker.start_study("models", {}, {})
    example = experiment.inputs.data.inputs[experiment.inputs.val[:2]]
    mlflow.register_model(tracker.log_model(model, example), "safe")
    with mlflow.start_run(run_id=tracker.parent_run_id):
        info = mlflow.pytorch.log_model(model, name="plain", serialization_format="pickle")
    mlflow.register_model(info.model_uri, "pickled")
    tracker.finish_study()
    return write_study(tmp_path, config), uri


def test_mlflow_models_load_without_unpickling_unless_trusted(
    registered: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pytorch

    from tune_unlearn.references.training import load_state

    _, uri = registered
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    unpickled = []
    real_load = mlflow.pytorch.load_model
    monkeypatch.setattr(
        mlflow.pytorch, "load_model", lambda *a, **k: unpickled.append(a) or real_load(*a, **k)
    )
    state = load_state("models:/safe/1", tracking_uri=uri)
    with pytest.raises(ValueError, match="--trust-pickle"):
        load_state("models:/pickled/1", tracking_uri=uri)
    assert unpickled == []  # refused before any unpickling
    trusted = load_state("models:/pickled/1", tracking_uri=uri, trust_pickle=True)
    assert unpickled and trusted.keys() == state.keys()
    assert all(torch.equal(trusted[k], state[k]) for k in state)  # the same weights, two ways
    assert not (elsewhere / "mlflow.db").exists()  # no stray store in the working folder


def test_the_gate_resolves_models_against_the_studys_store_and_refuses_pickles(
    registered: tuple[Path, str], tmp_path: Path
) -> None:
    study, uri = registered
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps({"name": "mini", "probes": {"static_retain": {"max_excess": 0.5}}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    common = ["gate", str(study), "--suite", str(suite), "--threads", "1"]
    safe = cli(*common, "--output", str(tmp_path / "g"), "--candidate", "models:/safe/1", cwd=elsewhere)
    out, err = safe.communicate(timeout=300)
    assert safe.returncode in (0, 1), err  # judged: the study's own store resolved the name
    assert "Registered Model" not in err and not (elsewhere / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=uri)
    judged = client.get_model_version("safe", "1").run_id  # the run that logged the model
    assert f"reports attached to MLflow run {judged}" in out
    assert {a.path for a in client.list_artifacts(judged, "gate")} >= {"gate/gate.json", "gate/gate.md"}
    assert client.get_run(judged).data.tags["gate_verdict"] in ("pass", "fail", "masked collapse")
    common += ["--output", str(tmp_path / "g-pickled")]  # one candidate's reports per folder
    pickled = cli(*common, "--candidate", "models:/pickled/1", cwd=elsewhere)
    _, err = pickled.communicate(timeout=300)
    assert pickled.returncode == 2 and "--trust-pickle" in err
    trusted = cli(*common, "--candidate", "models:/pickled/1", "--trust-pickle", cwd=elsewhere)
    _, err = trusted.communicate(timeout=300)
    assert trusted.returncode in (0, 1), err


def test_constraints_are_stored_where_optuna_dashboard_reads_feasibility(tmp_path: Path) -> None:
    config = tiny_study(tmp_path, n_trials=2, constraints=["retained_utility >= 0.99"])
    run = run_study(config, progress=False)
    for trial in run.study.trials:
        if trial.state != TrialState.COMPLETE:
            continue
        (violation,) = trial.system_attrs["constraints"]  # the list form the dashboard plots
        assert violation == pytest.approx(0.99 - trial.user_attrs["metrics"]["retained_utility"])
        assert trial.user_attrs["feasible"] is (violation <= 0)
    document = json.loads((run.output / "pareto.json").read_text())
    assert all(set(t["constraints"]) == {"retained_utility >= 0.99"} for t in document["trials"])
