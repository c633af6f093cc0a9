"""Warm starts: an earlier study's best configurations run first in a new one."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tune_unlearn.cli import main
from tune_unlearn.study.runner import run_study
from tune_unlearn.study.warm_start import WARM_START_ATTR

from ..helpers import tiny_study, write_study


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory, session_tmp: Path) -> tuple[str, list[dict]]:
    """A finished study on the digit 3 request: its storage and its feasible front's params."""
    folder = tmp_path_factory.mktemp("earlier")
    config = tiny_study(folder, n_trials=6, references={"cache_dir": str(session_tmp / "cache")})
    run_study(config, progress=False)
    document = json.loads((folder / "out" / "pareto.json").read_text())
    front = [t["params"] for t in document["trials"] if t["pareto"]]
    assert front  # the tiny study forgets: something to start from
    return f"sqlite:///{folder / 'out' / 'study.db'}", front


def test_a_warm_started_study_runs_the_earlier_front_first_once(
    tmp_path: Path, session_tmp: Path, earlier: tuple[str, list[dict]]
) -> None:
    storage, front = earlier
    top = min(2, len(front))
    config = tiny_study(
        tmp_path,
        name="digit5",
        n_trials=3,
        forget={"mode": "partial", "target_tasks": ["digit"], "where": {"digit": 5}},
        references={"cache_dir": str(session_tmp / "cache")},
        warm_start={"storage": storage, "study": "tiny", "top": top},
    )
    run = run_study(config, progress=False)
    trials = sorted(run.study.trials, key=lambda t: t.number)
    assert len(trials) == 3
    first = [t.params for t in trials[:top]]
    assert all(params in front for params in first)
    assert all(t.user_attrs.get(WARM_START_ATTR) == "tiny" for t in trials[:top])
    assert WARM_START_ATTR not in trials[top].user_attrs  # then the sampler's own
    recorded = run.study.user_attrs[WARM_START_ATTR]
    assert recorded["study"] == "tiny" and recorded["enqueued"] == first
    # A rerun with a larger budget enqueues nothing again.
    again = run_study(config, n_trials=4, progress=False)
    assert sum(WARM_START_ATTR in t.user_attrs for t in again.study.trials) == top


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"study": "nope"}, "warm_start.study: no study named 'nope'"),
        ({"storage": "sqlite:///{missing}/x.db"}, "warm_start.storage: "),
        ({"search_only_ascent": True}, "warm_start.study: 'tiny' searched ascent_lr, retain_lr"),
        ({"adam": True}, "warm_start.study: 'tiny' stepped with sgd, this study steps with adam"),
    ],
)
def test_a_warm_start_that_cannot_be_used_exits_2_with_its_path_and_nothing_written(
    tmp_path: Path,
    earlier: tuple[str, list[dict]],
    capsys: pytest.CaptureFixture[str],
    change: dict,
    words: str,
) -> None:
    storage, _ = earlier
    warm = {"storage": storage, "study": "tiny"}
    overrides: dict = {}
    if change.get("search_only_ascent"):
        overrides["method"] = {
            "name": "graddiff",
            "fixed": {"steps": 6, "batch_size": 16, "retain_lr": 0.05},
            "search": {"ascent_lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        }
    elif change.get("adam"):  # the same space, its rates per-weight step sizes now
        overrides["method"] = {**tiny_study(tmp_path).method.model_dump(mode="json", exclude_none=True)}
        overrides["method"]["fixed"] = {**overrides["method"]["fixed"], "optimizer": "adam"}
    else:
        warm.update({k: str(v).format(missing=tmp_path / "missing") for k, v in change.items()})
    study = write_study(tmp_path, tiny_study(tmp_path, warm_start=warm, **overrides))
    for command in (["check", str(study)], [str(study), "--threads", "1"]):
        assert main(command) == 2
        assert words in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]
    if "storage" in change:
        assert not (tmp_path / "missing").exists()
    assert optuna.get_all_study_names(storage) == ["tiny"]
