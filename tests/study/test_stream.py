"""Request streams: requests unlearned one after another on the running model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tune_unlearn.cli import main
from tune_unlearn.config.study_config import parse_study
from tune_unlearn.study import stream as stream_module
from tune_unlearn.study.stream import run_stream

from ..helpers import group_and_studies, tiny_study

SUITE = {
    "name": "tiny",
    "min_probe_size": 5,
    "probes": {"static_retain": {"max_excess": 0.05, "params": {"size": 200}}},
    "forget_quality": {"max_gap": 0.1},
}


def stream_file(tmp_path: Path, session_tmp: Path, requests: list[Any], **changes: Any) -> dict[str, Any]:
    raw = tiny_study(tmp_path, references={"cache_dir": str(session_tmp / "cache")}).model_dump(
        mode="json", exclude_none=True
    )
    del raw["forget"]
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    raw.update({"requests": requests, "validation": {"suite": str(suite)}, "n_trials": 2, **changes})
    return raw


def digit(value: int, **more: Any) -> dict[str, Any]:
    return {"mode": "partial", "target_tasks": ["digit"], "where": {"digit": value}, **more}


def test_a_stream_of_three_requests_resumes_after_an_interruption_without_redoing_one(
    tmp_path: Path, session_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_study(
        stream_file(tmp_path, session_tmp, [digit(3), digit(5), digit(7)], tracking={"enabled": True})
    )
    real = stream_module.run_study
    ran: list[str] = []

    def interrupted_at_the_second(request: Any, **kwargs: Any) -> Any:
        if request.name.endswith("request-1"):
            raise KeyboardInterrupt
        ran.append(request.name)
        return real(request, **kwargs)

    monkeypatch.setattr(stream_module, "run_study", interrupted_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        run_stream(config, progress=False)
    folder = tmp_path / "out" / "stream"
    assert [r["request"] for r in json.loads((folder / "stream.json").read_text())["requests"]] == [0]

    def counted(request: Any, **kwargs: Any) -> Any:
        ran.append(request.name)
        return real(request, **kwargs)

    monkeypatch.setattr(stream_module, "run_study", counted)
    rows = run_stream(config, progress=False)
    assert ran == ["tiny.request-0", "tiny.request-1", "tiny.request-2"]  # request 0 once
    assert [row.request for row in rows] == [0, 1, 2]
    assert [row.deleted for row in rows] == sorted(row.deleted for row in rows) and rows[0].deleted > 0

    # Request i runs on request i-1's model against a retrain without everything deleted so far.
    second = optuna.load_study(
        study_name="tiny.request-1", storage=f"sqlite:///{folder / 'request-1' / 'study.db'}"
    )
    resolved = second.user_attrs["study_file"]
    assert resolved["references"]["original"] == rows[0].candidate
    previous = [int(v) for v in (folder / "request-1" / "previous.txt").read_text().split()]
    assert len(previous) == rows[0].deleted
    assert second.user_attrs["warm_start"]["study"] == "tiny.request-0"
    # The gate is in the loop: a request's model is one its suite passes, or there is none, the
    # stream stops there (no model to go on from) and says to retrain.
    stop = stream_module.retrain_at(rows)
    for row in rows if stop is None else rows[: rows.index(stop)]:
        assert row.cumulative_uis is not None and row.verdict == "pass" and row.candidate is not None
    if stop is not None:
        assert stop is rows[-1] and stop.candidate is None and stop.cumulative_uis is None
        assert stop.verdict == "no front trial passes the gate" and stop.failed
    assert rows[1].cumulative_uis is not None and rows[1].cumulative_uis > 0  # moved from the original

    document = json.loads((folder / "stream.json").read_text())
    assert document["retrain_at"] == (
        None if stop is None else {"request": stop.request, "failed": stop.failed, "verdict": stop.verdict}
    )
    assert (folder / "drift.png").stat().st_size > 0
    table = (folder / "stream.md").read_text()
    assert table.count("\n| ") == 4  # header and three requests
    _, studies = group_and_studies(folder / "mlflow.db", "tiny", "stream")
    assert sorted(r.info.run_name for r in studies) == ["tiny.request-0", "tiny.request-1", "tiny.request-2"]


@pytest.mark.parametrize(
    ("requests", "changes", "path", "words"),
    [
        ([], {}, "requests", "at least one deletion request"),
        ([digit(3), digit(3, fraction=0.5)], {}, "requests.1", "overlaps request 0"),
        ([digit(3), {"mode": "full", "where": {"digit": 5}}], {}, "requests.1.mode", "first's mode"),
        ([digit(3), digit(5)], {"validation": {}}, "validation.suite", "name a suite"),
    ],
)
def test_bad_streams_exit_2_with_the_path_and_nothing_written(
    tmp_path: Path,
    session_tmp: Path,
    capsys: pytest.CaptureFixture[str],
    requests: list[Any],
    changes: dict[str, Any],
    path: str,
    words: str,
) -> None:
    raw = stream_file(tmp_path, session_tmp, requests, **changes)
    study = tmp_path / "stream.yaml"
    study.write_text(yaml.safe_dump(raw))
    for command in (["check", str(study)], [str(study), "--threads", "1"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert path in err and words in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.yaml", "suite.yaml"]
