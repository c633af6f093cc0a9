from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tune_unlearn.cli import main

from .test_config import BAD


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
    assert "OK" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["check"]) == 2
    assert main(["run", "x.yaml", "--n-trials", "many"]) == 2
