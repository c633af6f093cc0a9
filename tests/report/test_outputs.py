from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from tune_unlearn.scoring.metrics import reference_retained_utility
from tune_unlearn.study.replay import rebuild_report
from tune_unlearn.study.runner import run_study

from ..helpers import tiny_study


def test_report_rebuilds_every_output_byte_for_byte_from_storage(tmp_path: Path) -> None:
    config = tiny_study(tmp_path, n_trials=4)
    run = run_study(config, progress=False)
    names = ("pareto.json", "trials.csv", "report.md")
    before = {name: (run.output / name).read_bytes() for name in names}
    for name in names:
        (run.output / name).unlink()
    rebuild_report(config)
    for name in names:
        assert (run.output / name).read_bytes() == before[name], name
    # what honest deletion keeps, from the retrains' recorded scores, beside the trials
    document = json.loads(before["pareto.json"])
    honest = document["reference_retained_utility"]
    assert honest is not None and honest == reference_retained_utility(document["trials"][0]["metrics"])
    assert f"**{honest:.4f}**" in before["report.md"].decode()


def test_plots_are_real_images(tmp_path: Path) -> None:
    config = tiny_study(tmp_path, n_trials=4)
    run = run_study(config, progress=False)
    for name in ("pareto.png", "hypervolume.png", "importance.png"):
        path = run.output / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert float(np.std(pixels[..., :3])) > 0.05  # not a blank canvas


def test_the_same_file_and_seed_suggest_the_same_parameters(tmp_path: Path) -> None:
    def suggestions(folder: str) -> list[dict[str, float]]:
        config = tiny_study(
            tmp_path / folder,
            n_trials=5,
            sampler={"name": "tpe", "seed": 7, "n_startup_trials": 2},
            objectives=["forget_efficacy", "retained_utility"],  # deterministic on CPU
        )
        return [t.params for t in run_study(config, progress=False).study.trials]

    first, second = suggestions("a"), suggestions("b")
    assert first == second
    assert len({tuple(p.values()) for p in first}) == 5


def test_validators_run_after_the_study_in_the_rule_s_order_until_one_passes(tmp_path: Path) -> None:
    import json

    release = Path(__file__).resolve().parents[2] / "validators" / "release.yaml"
    config = tiny_study(tmp_path, n_trials=3, validation={"suite": str(release)})
    run = run_study(config, progress=False)
    document = json.loads((run.output / "pareto.json").read_text())
    judged = {t["number"]: t["validation"] for t in document["trials"] if t["validation"] is not None}
    assert judged, "the suite ran on no trial"
    for verdict in judged.values():
        assert verdict["suite"] == "release" and verdict["verdict"] in ("pass", "fail", "masked collapse")
        assert verdict["passed"] == (verdict["verdict"] == "pass")
    # At most one passed: the search for a releasable trial stops at the first.
    passed = [number for number, verdict in judged.items() if verdict["passed"]]
    assert document["recommended"] == (passed[0] if passed else None) and len(passed) <= 1
    for number in judged:
        for suffix in (".json", ".xml", ".md"):
            assert (run.output / "validation" / f"trial_{number}{suffix}").exists()
    assert "## Validation" in (run.output / "report.md").read_text()


def test_the_study_suite_runs_robustness_and_compute_on_the_front_trials_it_judges(tmp_path: Path) -> None:
    import json

    suite = Path(__file__).resolve().parents[2] / "validators" / "study.yaml"
    config = tiny_study(tmp_path, n_trials=2, validation={"suite": str(suite)})
    run = run_study(config, progress=False)
    recommended = next(
        t for t in json.loads((run.output / "pareto.json").read_text())["trials"] if t["validation"]
    )
    report = json.loads((run.output / "validation" / f"trial_{recommended['number']}.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    robustness, compute = checks["robustness"], checks["compute_budget"]
    assert robustness["status"] in ("pass", "fail")  # it ran: configuration and seed were known
    assert set(robustness["details"]["spreads"]) == {"forget_efficacy", "retained_utility"}
    assert len(robustness["details"]["outcomes"]["forget_efficacy"]) == 2 + 4 + 1  # seeds, lr ±, itself
    assert compute["status"] == ("pass" if compute["value"] <= compute["threshold"] else "fail")
    assert compute["value"] == pytest.approx(recommended["metrics"]["compute_cost"])
