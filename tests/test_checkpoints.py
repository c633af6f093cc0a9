"""A user's own trained model as the original, with no retrain reference (issue: bring your own)."""

from __future__ import annotations

import json
from pathlib import Path

from tune_unlearn.cli import main
from tune_unlearn.study.runner import run_study

from .helpers import tiny_study

RELEASE = Path(__file__).resolve().parents[1] / "validators" / "release.yaml"


def test_a_study_from_a_checkpoint_without_retrain_runs_end_to_end_reference_free(tmp_path: Path) -> None:
    trained = run_study(tiny_study(tmp_path / "first", n_trials=1), progress=False)
    checkpoint = trained.output / "models" / "original.pt"

    config = tiny_study(
        tmp_path / "second",
        # A random share of the 3s: the rest of the group stays, so reference-free can judge it.
        forget={"mode": "partial", "target_tasks": ["digit"], "where": {"digit": 3}, "fraction": 0.3},
        references={
            "original": str(checkpoint),
            "retrain": False,
            "cache_dir": str(tmp_path / "empty-cache"),
        },
    )
    run = run_study(config, progress=False)
    assert run.trained_references == []  # nothing trained: the original came from the file
    assert not (tmp_path / "empty-cache").exists()
    document = json.loads((run.output / "pareto.json").read_text())
    metrics = document["trials"][0]["metrics"]
    assert "score/retrain/val/digit" not in metrics
    assert 0.0 <= metrics["forget_efficacy"] <= 1.0
    report = (run.output / "report.md").read_text()
    assert "## Reference-free metrics" in report and "in place of the retrain" in report
    assert document["reference_retained_utility"] is None and "What honest deletion keeps" not in report

    study_file = tmp_path / "second.yaml"
    study_file.write_text(json.dumps(config.model_dump(mode="json")))
    out = tmp_path / "gate"
    code = main(
        [
            "gate",
            str(study_file),
            "--suite",
            str(RELEASE),
            "--candidate",
            str(checkpoint),
            "--output",
            str(out),
        ]
    )
    gate = json.loads((out / "gate.json").read_text())
    probe = next(c for c in gate["checks"] if c["name"] == "probe/unrelated")
    assert probe["details"]["reference"] == "original (reference-free)"
    assert probe["value"] == 0.0  # the original judged against itself
    assert code == 1  # an original forgets nothing: reference-free forget quality fails it
    assert gate["reference_mode"] == "reference-free" and gate["cost_retrains"]["references"] == 0.0
    assert "Judged in reference mode **reference-free**" in (out / "gate.md").read_text()


def test_reference_free_refuses_a_request_that_removes_a_whole_group(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Every 3 forgotten, no retrain: nothing retained is like the forget set, so check, run
    and gate refuse (exit 2) with the reason and the alternatives, and write nothing."""
    from tune_unlearn.config.schema import ConfigError

    raw_config = tiny_study(tmp_path, n_trials=1).model_dump(mode="json")
    raw_config["references"]["retrain"] = False
    study_file = tmp_path / "free.json"
    study_file.write_text(json.dumps(raw_config))
    for command in (
        ["check", str(study_file)],
        [str(study_file)],
        ["gate", str(study_file), "--suite", str(RELEASE), "--candidate", "x.pt"],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "references.retrain" in err and "digit == 3" in err and "seeds: K" in err
    assert not (tmp_path / "out").exists()
    raw_config["forget"]["fraction"] = 0.3  # a random share of the group: accepted
    try:
        tiny_study(tmp_path, forget=raw_config["forget"], references=raw_config["references"])
    except ConfigError as error:  # pragma: no cover - the assertion below reports it
        raise AssertionError(f"a random share of a group was refused: {error}") from None
