"""The release suite and the gate on the masked-collapse worked example (digits, full size)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tune_unlearn.cli import main

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "validators" / "release.yaml"


def local_copy(folder: Path, name: str) -> Path:
    """A shipped study file, writing into ``folder`` and without its post-study validation."""
    raw = yaml.safe_load((ROOT / "studies" / f"{name}.yaml").read_text())
    raw.update(output=str(folder / "out"), references={"cache_dir": str(folder / "cache")})
    raw.update(tracking={"enabled": False})
    raw.pop("validation", None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Half of the 3s forgotten from the digit head: the retrain still knows most of them."""
    return local_copy(tmp_path_factory.mktemp("gate"), "masked_collapse")


@pytest.fixture(scope="module")
def whole_class(study: Path) -> Path:
    """Every 3 forgotten from the digit head (the quickstart request): the retrain knows none."""
    return local_copy(study.parent / "whole", "quickstart")


def reference(study: Path, kind: str) -> str:
    """The cached reference model file of the study (trained on first use)."""
    cache = study.parent / "cache"
    if not any(cache.glob(f"{kind}-*.pt")):
        warm = ["apply", str(study), "--params", "ascent_lr=0.001", "--save", str(study.parent / "warm.pt")]
        assert main(warm) == 0
    return str(next(cache.glob(f"{kind}-*.pt")))


def gate(study: Path, candidate: str, name: str, suite: Path = RELEASE) -> tuple[int, dict]:
    out = study.parent / name
    code = main(["gate", str(study), "--suite", str(suite), "--candidate", candidate, "--output", str(out)])
    document = json.loads((out / "gate.json").read_text()) if (out / "gate.json").exists() else {}
    return code, document


def checks(document: dict) -> dict[str, dict]:
    return {c["name"]: c for c in document["checks"]}


def apply(study: Path, params: str, name: str) -> str:
    path = study.parent / f"{name}.pt"
    assert main(["apply", str(study), "--params", params, "--seed", "0", "--save", str(path)]) == 0
    return str(path)


def test_the_retrained_reference_passes_the_release_suite(study: Path) -> None:
    code, document = gate(study, reference(study, "retrain"), "retrain")
    assert code == 0 and document["verdict"] == "pass"
    assert len(document["checks"]) == 9


def test_the_original_fails_forget_quality_from_above(whole_class: Path) -> None:
    code, document = gate(whole_class, reference(whole_class, "original"), "original")
    assert code == 1
    gap = checks(document)["forget_quality/gap"]
    assert gap["status"] == "fail" and gap["value"] > 0.1 and "under-forgetting" in gap["message"]


def test_over_forgetting_fails_forget_quality_from_below(study: Path) -> None:
    code, document = gate(study, apply(study, "ascent_lr=0.01,retain_lr=0.2", "over"), "over")
    assert code == 1
    gap = checks(document)["forget_quality/gap"]
    assert gap["status"] == "fail" and gap["value"] < -0.1 and "over-forgetting" in gap["message"]


def test_masked_collapse_is_named(study: Path) -> None:
    code, document = gate(study, apply(study, "ascent_lr=0.005,retain_lr=0.2", "masked"), "masked")
    assert code == 1
    assert document["verdict"] == "masked collapse" and document["masked_collapse"] is True
    by_name = checks(document)
    assert by_name["probe/static_retain"]["status"] == "pass"
    assert by_name["probe/shared_label"]["status"] == "fail"
    assert "Masked collapse" in (study.parent / "masked" / "gate.md").read_text()


def test_the_junit_file_holds_one_case_per_check(whole_class: Path) -> None:
    gate(whole_class, reference(whole_class, "original"), "junit")
    suite = ET.parse(whole_class.parent / "junit" / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests", "0")) == 9
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failed == {"forget_quality/gap", "forget_quality/mia"}
    assert int(suite.get("failures", "0")) == 2


def test_a_check_that_raises_fails_the_gate(study: Path, tmp_path: Path) -> None:
    suite = tmp_path / "broken.yaml"
    suite.write_text(
        yaml.safe_dump({"name": "broken", "probes": {"shared_attribute": {"params": {"attribute": "nope"}}}})
    )
    code, document = gate(study, reference(study, "retrain"), "broken", suite)
    assert code == 1  # not 0: a check that could not run is never a pass
    (check,) = document["checks"]
    assert check["status"] == "error" and "no attribute 'nope'" in check["message"]


def test_a_too_small_probe_is_an_error_not_a_pass(study: Path, tmp_path: Path) -> None:
    suite = tmp_path / "small.yaml"
    suite.write_text(yaml.safe_dump({"name": "small", "probes": {"unrelated": {"params": {"size": 5}}}}))
    code, document = gate(study, reference(study, "retrain"), "small", suite)
    assert code == 1 and "too small to decide" in document["checks"][0]["message"]


def test_usage_and_configuration_errors_exit_2(study: Path, tmp_path: Path) -> None:
    assert gate(study, str(tmp_path / "missing.pt"), "missing")[0] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "probes": {"dependent_neighbours": {}}}))
    assert gate(study, reference(study, "retrain"), "bad", bad)[0] == 2
    assert main(["gate", str(study), "--suite", str(RELEASE)]) == 2  # no --candidate
