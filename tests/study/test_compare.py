"""`compare`: equal-budget studies per method and seed, one leaderboard, one MLflow tree."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tune_unlearn.cli import main

from ..helpers import group_and_studies, tiny_study, write_study


def test_compare_runs_each_method_and_seed_at_one_budget_and_resumes(
    tmp_path: Path, session_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_study(
        tmp_path,
        references={"cache_dir": str(session_tmp / "cache")},
        tracking={"enabled": True},
    )
    study = write_study(tmp_path, config)
    command = ["compare", str(study), "--methods", "graddiff,npo,scrub", "--seeds", "2", "--n-trials", "2"]
    assert main([*command, "--threads", "1", "--no-progress"]) == 0
    assert "| 1 |" in capsys.readouterr().out
    folder = tmp_path / "out" / "compare"
    board = json.loads((folder / "leaderboard.json").read_text())
    assert {m["method"] for m in board["methods"]} == {"graddiff", "npo", "scrub"}
    assert board["nothing_to_forget"] == []  # every 3 from the digit head: plenty to forget
    means = [m["hypervolume"]["mean"] for m in board["methods"]]
    assert means == sorted(means, reverse=True)  # ranked by mean hypervolume
    for entry in board["methods"]:
        assert len(entry["hypervolume"]["per_seed"]) == 2 and entry["hypervolume"]["seeds"] == 2
        assert 0.0 <= entry["hypervolume"]["ci95_low"] <= entry["hypervolume"]["mean"]
    assert (folder / "leaderboard.png").stat().st_size > 0 and "| scrub |" in (
        folder / "leaderboard.md"
    ).read_text()

    # Every member is an ordinary study: same budget and step budget, its own method and seed.
    spaces = {}
    for method in ("graddiff", "npo", "scrub"):
        for seed in (0, 1):
            storage = f"sqlite:///{folder / method / f'seed-{seed}' / 'study.db'}"
            member = optuna.load_study(study_name=f"tiny.{method}.seed-{seed}", storage=storage)
            assert len(member.trials) == 2
            resolved = member.user_attrs["study_file"]
            assert resolved["method"]["name"] == method and resolved["sampler"]["seed"] == seed
            # The file's written space keeps plain steps; a default space steps with Adam.
            steps = {} if method == "graddiff" else {"optimizer": "adam"}
            assert resolved["method"]["fixed"] == {"steps": 6, "batch_size": 16, **steps}
            spaces[method] = resolved["method"]["search"]
    # graddiff is the file's method: the file's space; the others run their default spaces.
    assert spaces["graddiff"]["ascent_lr"]["high"] == 1e-2  # the tiny study's, not the default 0.1
    assert set(spaces["scrub"]) == {"lr", "forget_weight", "alpha"}

    comparison, studies = group_and_studies(folder / "mlflow.db", "tiny", "comparison")
    parent = comparison.info.run_id
    assert len(studies) == 6
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    assert {a.path for a in client.list_artifacts(parent)} >= {
        "leaderboard.md",
        "leaderboard.json",
        "leaderboard.png",
    }

    # A rerun resumes: nothing left to run, the same leaderboard, the same comparison run.
    assert main([*command, "--threads", "1", "--no-progress"]) == 0
    assert "ran 0 trial(s)" in capsys.readouterr().out
    assert json.loads((folder / "leaderboard.json").read_text()) == board
    again = client.search_runs([comparison.info.experiment_id], "tags.`tune_unlearn.role` = 'comparison'")
    assert [r.info.run_id for r in again] == [parent]


@pytest.mark.parametrize(
    ("methods", "words"),
    [("graddiff,scrubb", "unknown method(s) scrubb; valid: "), ("graddiff,graddiff", "graddiff named twice")],
)
def test_a_bad_method_list_exits_2_naming_the_valid_ones_with_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], methods: str, words: str
) -> None:
    study = write_study(tmp_path, tiny_study(tmp_path))
    assert main(["compare", str(study), "--methods", methods, "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert words in err
    if "valid" in words:
        assert "salun" in err and "interference_aware" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]
    assert main(["compare", str(study), "--methods", "graddiff", "--seeds", "0"]) == 2
    assert not (tmp_path / "out").exists()
