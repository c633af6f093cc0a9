"""MLflow tracking, read back through MlflowClient: local SQLite store and a real server."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.pytorch
import optuna
import pytest
import torch
from mlflow import MlflowClient

from tune_unlearn.config.study_config import StudyConfig
from tune_unlearn.scoring.metrics import METRICS, RECOVERY_METRICS
from tune_unlearn.study.runner import run_study
from tune_unlearn.tracking.runs import TrackingUnavailable

from ..helpers import POSTGRES, free_port, postgres_admin, start_mlflow_server, tiny_study

# One trial each that diverges (fails), collapses (pruned by the guard), and completes.
MIXED = {
    "name": "gradient_ascent",
    # The step bound lifted, so that the huge rate diverges (bounded, it would not).
    "fixed": {"steps": 30, "batch_size": 16, "max_step": 1e12},
    "search": {"ascent_lr": {"type": "categorical", "choices": [1e6, 0.5, 1e-3]}},
}
GUARD = {"enabled": True, "floor": 0.8, "every": 5, "sample_size": 64}


def tracked_study(tmp: Path, uri: str | None = None, **overrides: object) -> StudyConfig:
    tracking = {"enabled": True, **({"uri": uri} if uri else {})}
    return tiny_study(tmp, tracking=tracking, **overrides)  # type: ignore[arg-type]


def children(client: MlflowClient, parent_id: str) -> list[mlflow.entities.Run]:
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")


def test_parent_and_one_child_per_trial_with_metrics_params_artifacts_and_model(tmp_path: Path) -> None:
    config = tracked_study(tmp_path, method=MIXED, n_trials=9, collapse_guard=GUARD)
    run = run_study(config, progress=False)
    states = {t.state for t in run.study.trials}
    assert states == {
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.COMPLETE,
    }

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    parents = client.search_runs([experiment.experiment_id], "tags.`tune_unlearn.role` = 'study'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["method"] == "gradient_ascent" and parent.data.tags["forget_mode"] == "partial"
    assert parent.data.tags["device"] == "cpu"  # what gpu_seconds timed: wall seconds here
    assert parent.data.params["method.name"] == "gradient_ascent"
    # The UI opens the experiment on its runs, and the parent run compares studies side by side.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    recommended = run.summary.recommended
    assert recommended is not None
    assert parent.data.tags["recommended_trial"] == str(recommended.number)
    assert parent.data.metrics["hypervolume"] == pytest.approx(run.summary.hypervolume)
    for name in config.objectives:
        assert parent.data.metrics[f"recommended/{name}"] == pytest.approx(
            recommended.user_attrs["metrics"][name]
        )
    # optuna-dashboard: feasibility per trial, the front and the recommendation on the study.
    complete = [t for t in run.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(isinstance(t.user_attrs["feasible"], bool) for t in complete)
    assert run.study.user_attrs["recommended_trial"] == recommended.number
    assert run.study.user_attrs["pareto_trials"] == [t.number for t in run.summary.front]

    runs = {int(r.data.tags["trial"]): r for r in children(client, parent.info.run_id)}
    assert sorted(runs) == [t.number for t in run.study.trials]
    expected_status = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}
    for trial in run.study.trials:
        child = runs[trial.number]
        assert child.info.status == expected_status[trial.state.name]
        assert float(child.data.params["ascent_lr"]) == trial.params["ascent_lr"]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            # NaN metrics are not logged: forget_score and the recovery metrics when the study
            # does not name them (they are computed only then), MIA on tiny sets
            not_computed = {"mia_auc", "forget_score", *RECOVERY_METRICS}
            assert set(METRICS.names()) - not_computed <= set(child.data.metrics)
            assert child.data.metrics["retained_utility"] == pytest.approx(
                trial.user_attrs["metrics"]["retained_utility"]
            )
            assert "score/unlearned/val/digit" in child.data.metrics
            curve = client.get_metric_history(child.info.run_id, "curve/forget_loss")
            assert [m.step for m in curve] == list(range(30))
            assert child.data.tags["pareto"] in ("true", "false")
        elif trial.state == optuna.trial.TrialState.PRUNED:
            assert "below the floor" in child.data.tags["pruned_reason"]
        else:
            assert "diverged" in child.data.tags["fail_reason"]
    assert sum(r.data.tags.get("recommended") == "true" for r in runs.values()) == 1

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.json", "trials.csv", "report.md", "pareto.png", "study.resolved.yaml"} <= artifacts
    models = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert len(models) == 1 and models[0].source_run_id == parent.info.run_id
    loaded = mlflow.pytorch.load_model(models[0].model_uri)
    requirements = Path(mlflow.pyfunc.get_model_dependencies(models[0].model_uri)).read_text()
    assert "tune-unlearn==" in requirements and "torch==" in requirements  # stated, not inferred
    saved = torch.load(run.output / "models" / "candidate.pt", weights_only=True)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved[key])


def test_threaded_trials_log_to_their_own_runs(tmp_path: Path) -> None:
    config = tracked_study(tmp_path, n_trials=6, n_jobs=2)
    run = run_study(config, progress=False)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    by_run_id = {t.user_attrs["mlflow_run_id"]: t for t in run.study.trials}
    assert len(by_run_id) == 6
    for run_id, trial in by_run_id.items():
        logged = client.get_run(run_id).data
        assert logged.tags["trial"] == str(trial.number)
        assert float(logged.params["ascent_lr"]) == pytest.approx(trial.params["ascent_lr"])
        metrics = trial.user_attrs["metrics"]
        for name in (
            "forget_efficacy",
            "retained_utility",
            "uis",
            "impact_score",
            "score/unlearned/val/parity",
            "spread/retrain/val/parity",
        ):
            assert logged.metrics[name] == pytest.approx(metrics[name])
        history = client.get_metric_history(run_id, "curve/forget_loss")
        assert len(history) == 6  # this trial's steps only, not a neighbour's too


def test_an_unreachable_required_server_stops_the_study_before_its_first_trial(tmp_path: Path) -> None:
    config = tracked_study(tmp_path, uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TrackingUnavailable, match="cannot be reached"):
        run_study(config, progress=False)
    assert not (tmp_path / "out" / "study.db").exists()
    assert not (tmp_path / "cache").exists()  # no reference was trained


def test_an_unreachable_optional_server_warns_and_keeps_local_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_study(tmp_path, tracking={"uri": f"http://127.0.0.1:{free_port()}", "required": False})
    run = run_study(config, progress=False)
    assert "tracking disabled" in capsys.readouterr().err
    assert (run.output / "pareto.json").exists() and len(run.study.trials) == 3


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on a free loopback port, its backend store on PostgreSQL."""
    database = f"tune_unlearn_mlflow_{uuid.uuid4().hex[:8]}"
    with postgres_admin() as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    artifacts = tmp_path_factory.mktemp("server-artifacts")
    server, uri = start_mlflow_server(f"{POSTGRES}/{database}", artifacts, artifacts / "server.log")
    try:
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        server.wait(timeout=30)
        with postgres_admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_a_study_against_a_real_tracking_server_on_postgres(
    tmp_path: Path, mlflow_server: str, capfd: pytest.CaptureFixture[str]
) -> None:
    config = tracked_study(tmp_path, uri=mlflow_server, n_trials=2)
    run = run_study(config, progress=False)
    printed = capfd.readouterr()
    assert "View run" not in printed.out + printed.err  # no link per trial on the terminal
    client = MlflowClient(tracking_uri=mlflow_server)
    parent_id = run.study.user_attrs["mlflow_parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["study"] == "tiny"
    runs = children(client, parent_id)
    assert sorted(r.data.tags["trial"] for r in runs) == ["0", "1"]
    assert all("forget_efficacy" in r.data.metrics for r in runs)
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert "pareto.json" in artifacts and "report.md" in artifacts
