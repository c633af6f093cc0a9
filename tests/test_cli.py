from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.config.test_config import BAD
from tune_unlearn.cli import main


def test_check_reports_all_errors_and_exits_2_writing_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "bad.yaml"
    study.write_text(yaml.safe_dump({**BAD, "output": str(tmp_path / "out")}))
    assert main(["check", str(study)]) == 2
    err = capsys.readouterr().err
    assert "method.search.ascent_lr" in err and "forget.where.digit" in err and "objectives.0" in err
    assert main([str(study)]) == 2  # the run checks the same way before anything heavy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_check_accepts_the_quickstart(capsys: pytest.CaptureFixture[str]) -> None:
    quickstart = Path(__file__).parents[1] / "studies" / "quickstart.yaml"
    assert main(["check", str(quickstart)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    assert "validation: validators/release.yaml judges each trial the rule could recommend" in out
    assert "the search stops at the first that passes" in out
    assert "search space (the study file's; sgd steps):" in out  # its written rates are plain-step rates


def test_check_shows_the_default_space_under_adam_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path, method={"name": "npo", "fixed": {"steps": 4}})
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "search space (the method's default; adam steps):\n  lr: float in [1e-05, 0.01], log" in out


def test_check_says_when_a_collapse_completes_infeasible(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path, collapse_guard={"on_collapse": "infeasible"})
    assert main(["check", str(path)]) == 0
    assert (
        "collapse guard: a collapsed trial stops, is measured and completes infeasible"
        in capsys.readouterr().out
    )


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["check"]) == 2
    assert main(["run", "x.yaml", "--n-trials", "many"]) == 2


def _study(tmp_path: Path, **changes: object) -> Path:
    from .helpers import tiny_study

    raw = tiny_study(tmp_path).model_dump(mode="json", exclude_none=True)
    raw.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("changes", "path", "words"),
    [
        ({"references": {"retrain": {"seeds": 0}}}, "references.retrain.seeds", "greater than or equal to 1"),
        ({"objectives": ["forget_efficacy", "param_shift"]}, "objectives.1", "`param_shift` is now `uis`"),
        ({"objectives": ["forget_score"]}, "<file>", "evaluation.forget_score_runs"),
    ],
)
def test_bad_reference_and_metric_input_exits_2_writing_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict, path: str, words: str
) -> None:
    study = _study(tmp_path, **changes)
    assert main(["check", str(study)]) == 2
    assert main([str(study)]) == 2
    err = capsys.readouterr().err
    assert path in err and words in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_an_ensemble_over_the_time_budget_is_refused_with_its_estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    study = _study(
        tmp_path,
        references={"retrain": {"seeds": 200}, "budget_hours": 1e-6, "cache_dir": str(cache)},
    )
    assert main(["check", str(study)]) == 2
    captured = capsys.readouterr()
    assert "references: 201 model(s) to train, estimated" in captured.out
    assert "references.retrain.seeds" in captured.err and "over references.budget_hours" in captured.err
    assert main([str(study)]) == 2  # the run refuses before training anything
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["worker"],
        ["apply", "--trial", "0", "--save", "m.pt"],
        ["gate", "--suite", "s.yaml", "--candidate", "m.pt"],
    ],
)
def test_every_command_that_trains_takes_threads_and_refuses_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    study = _study(tmp_path)
    name, *rest = command
    assert main([name, str(study), *rest, "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]  # nothing written


def test_an_error_inside_a_trial_is_a_failed_run_naming_the_trial_not_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tune_unlearn.trial import configuration_run

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug in the step loop")

    monkeypatch.setattr(configuration_run, "run", broken)
    assert main([str(_study(tmp_path)), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "error: trial 0 failed: ValueError: a bug in the step loop" in err


def test_list_shows_every_method_with_its_default_search_space(capsys: pytest.CaptureFixture[str]) -> None:
    from tune_unlearn.methods import METHODS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    names = METHODS.names()
    assert len(names) >= 12  # the interference-aware family and the field's standard baselines
    for name in ("random_label", "l1_sparse", "salun", "scrub", "npo"):
        assert f"\n  {name}: " in out
    methods_section = out.split("\n\n")[0]
    assert len(re.findall(r"\n    default search[ (:]", methods_section)) == len(names)
    # A study's default space steps with Adam at absolute rates; plain steps keep the relative ones
    graddiff = methods_section.split("\n  graddiff: ")[1].split("\n  gradient_ascent: ")[0]
    assert "default search (optimizer: adam):\n      ascent_lr: float in [1e-05, 0.01], log" in graddiff
    assert (
        "with optimizer: sgd (or a rate the file fixes), instead:\n      ascent_lr: float in [0.3, 30]"
        in graddiff
    )
    shrink = re.split(r"\n  (?=\S)", methods_section.split("\n  shrink_perturb: ")[1])[0]
    assert "default search:\n" in shrink and "retain_lr: float in [0.0003, 0.01], log" in shrink
    assert "optimizer: sgd" not in shrink  # its own steps are Adam's: nothing else to show


def _study_text(tmp_path: Path, extra: str = "", **changes: object) -> Path:
    path = _study(tmp_path, **changes)
    if extra:
        path.write_text(path.read_text() + extra)
    return path


@pytest.mark.parametrize(
    ("case", "path", "words"),
    [
        ("duplicate key", "n_trials", "given twice"),
        ("unknown storage scheme", "storage", "unknown storage scheme mongodb://"),
        ("unknown tracking scheme", "tracking.uri", "unknown tracking scheme ftp://"),
        ("missing original", "references.original", "no such model file"),
        ("unparsable index file", "forget.index_file", "not a JSON list or one integer per line"),
        ("postgres spelling", "storage", "write postgresql://"),
    ],
)
def test_bad_input_that_used_to_slip_through_exits_2_writing_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    path: str,
    words: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # a storage taken for a journal path would make folders here
    index = tmp_path / "forget.txt"
    changes: dict[str, object] = {
        "duplicate key": {},
        "unknown storage scheme": {"storage": "mongodb://db.example:27017/studies"},
        "unknown tracking scheme": {"tracking": {"enabled": True, "uri": "ftp://files.example/mlruns"}},
        "missing original": {"references": {"original": "missing.pt", "cache_dir": str(tmp_path / "c")}},
        "unparsable index file": {
            "forget": {"mode": "partial", "target_tasks": ["digit"], "index_file": str(index)}
        },
        "postgres spelling": {"storage": "postgres://postgres:secret@127.0.0.1:5432/test"},
    }[case]
    study = _study_text(tmp_path, "n_trials: 5\n" if case == "duplicate key" else "", **changes)
    index.write_text("12\n40\nforty-one\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["check", str(study)]) == 2
    assert main([str(study)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and words in err, err
    assert "secret" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql://postgres:secret@127.0.0.1:5432/tune_unlearn_no_such_db", "createdb"),
        ("postgresql://postgres:secret@127.0.0.1:5999/test", "is the server running"),
        ("redis://127.0.0.1:6999/0", "is the server running"),
    ],
)
def test_a_storage_server_that_cannot_be_opened_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, words: str
) -> None:
    study = _study(tmp_path, storage=url)
    assert main(["check", str(study)]) == 2
    check_err = capsys.readouterr().err
    assert main([str(study)]) == 2
    run_err = capsys.readouterr().err
    for err in (check_err, run_err):
        assert words in err, err
        assert "postgres:***@" in err or url.startswith("redis"), err
        assert "Traceback" not in err and "secret" not in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]
