"""The release suite and the gate on the masked-collapse worked example (digits, full size)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tune_unlearn.cli import main
from tune_unlearn.plants import RetainMemorised, finetuned, val_neighbours
from tune_unlearn.references.training import save_state_dict, train_model
from tune_unlearn.study_file import load_study
from tune_unlearn.trial.study_references import load_study_values
from tune_unlearn.validation import Candidate, ValidationContext, load_suite, validate

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


@pytest.fixture(scope="module")
def full_mode(study: Path) -> Path:
    """Every 3 forgotten from every task: cross_task does not apply."""
    path = local_copy(study.parent / "full", "quickstart")
    raw = yaml.safe_load(path.read_text())
    raw["forget"] = {"mode": "full", "where": {"digit": 3}}
    path.write_text(yaml.safe_dump(raw))
    return path


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


def heldout_retrain(study: Path, seed: int = 10_000) -> str:
    """A retrain with a seed outside the reference ensemble: an exact deletion the gate has
    never seen."""
    path = study.parent / f"heldout-{seed}.pt"
    if not path.exists():
        experiment = load_study_values(load_study(study))
        model = train_model(
            experiment.inputs.problem,
            experiment.inputs.data,
            experiment.inputs.sets.retain,
            seed=seed,
            progress=False,
        )
        save_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return str(path)


def test_an_honest_retrain_of_another_seed_passes_the_release_suite(study: Path) -> None:
    code, document = gate(study, heldout_retrain(study), "retrain")
    assert code == 0 and document["verdict"] == "pass", [c["message"] for c in document["checks"]]
    assert {c["status"] for c in document["checks"]} == {"pass"}  # partial mode: all 12 apply
    assert len(document["checks"]) == 12


def test_a_full_mode_request_runs_every_applicable_check(full_mode: Path) -> None:
    code, document = gate(full_mode, heldout_retrain(full_mode), "full")
    by_name = checks(document)
    assert by_name["probe/cross_task"]["status"] == "skipped"
    assert "not applicable" in by_name["probe/cross_task"]["message"]
    assert code == 0 and document["verdict"] == "pass"
    cases = ET.parse(full_mode.parent / "full" / "junit.xml").getroot().find("testsuite")
    assert cases is not None and cases.get("skipped") == "1"
    skipped = [c.get("name") for c in cases.findall("testcase") if c.find("skipped") is not None]
    assert skipped == ["probe/cross_task"]
    assert "N/A" in (full_mode.parent / "full" / "gate.md").read_text()


def test_the_original_fails_forget_quality_from_above(whole_class: Path) -> None:
    code, document = gate(whole_class, reference(whole_class, "original"), "original")
    assert code == 1
    gap = checks(document)["forget_quality/gap"]
    assert gap["status"] == "fail" and gap["value"] > 0.5 and "under-forgetting" in gap["message"]
    assert gap["details"]["worst_task"] == "digit"


def test_over_forgetting_fails_forget_quality_from_below(study: Path) -> None:
    code, document = gate(study, apply(study, "ascent_lr=0.01,retain_lr=0.2", "over"), "over")
    assert code == 1
    gap = checks(document)["forget_quality/gap"]
    assert gap["status"] == "fail" and "over-forgetting" in gap["message"]
    assert gap["details"]["per_task"]["digit"]["gap"] < -gap["details"]["per_task"]["digit"]["band"]


def test_the_worked_example_reproduces_what_its_study_file_says(study: Path) -> None:
    """studies/masked_collapse.yaml documents the verdict of its commands; rerun them."""
    code, document = gate(study, apply(study, "ascent_lr=0.005,retain_lr=0.2", "example"), "example")
    by_name = checks(document)
    # Against the retrain ensemble no dependent probe shows damage: the 0.1.0 "masked collapse"
    # came from comparing with a single retrain.
    assert code == 0 and document["verdict"] == "pass" and document["masked_collapse"] is False
    static = by_name["probe/static_retain"]
    assert static["status"] == "pass" and abs(static["value"]) < 0.005
    assert not any(c["details"].get("damage_proven") for c in document["checks"])
    text = (ROOT / "studies" / "masked_collapse.yaml").read_text()
    assert "verdict: pass" in text and "static_retain excess +0.000" in text


def test_a_suppressed_class_fails_the_relearning_attack(whole_class: Path) -> None:
    """The original with the 3s pushed down in the digit head scores the forget set like a
    retrain, but ten fine-tuning steps on sixteen 3s bring everything back."""
    experiment = load_study_values(load_study(whole_class))
    state = {k: v.clone() for k, v in experiment.references.original.state_dict.items()}
    state["heads.digit.bias"][3] -= 16.0
    path = whole_class.parent / "suppressed.pt"
    save_state_dict(state, path)
    code, document = gate(whole_class, str(path), "suppressed")
    by_name = checks(document)
    assert code == 1
    assert by_name["forget_quality/gap"]["status"] == "pass"  # it looks forgotten...
    relearn = by_name["attack/relearn_forget"]
    assert relearn["status"] == "fail" and relearn["details"]["candidate_after"] > 0.9  # ...and is not
    assert max(relearn["details"]["retrains_after"]) < 0.2


def test_the_junit_file_holds_one_case_per_check(whole_class: Path) -> None:
    gate(whole_class, reference(whole_class, "original"), "junit")
    suite = ET.parse(whole_class.parent / "junit" / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests", "0")) == 12
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert {"forget_quality/gap", "attack/relearn_forget"} <= failed
    assert int(suite.get("failures", "0")) == len(failed)


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


def test_the_gate_names_masked_collapse_when_only_held_out_neighbours_are_damaged(whole_class: Path) -> None:
    """An exact deletion with the forget instances' held-out neighbourhood damaged: as it is,
    the static retain set shows the damage too (a plain failure); behind a memory of the retain
    training inputs the static set sees nothing and the verdict names masked collapse."""
    experiment = load_study_values(load_study(whole_class))
    ctx = ValidationContext(*experiment)
    heldout = train_model(
        experiment.inputs.problem,
        experiment.inputs.data,
        experiment.inputs.sets.retain,
        seed=10_000,
        progress=False,
    )
    damaged = finetuned(
        experiment.inputs,
        heldout,
        experiment.inputs.sets.retain,
        20,
        1e-3,
        seed=0,
        ascend=val_neighbours(ctx),
    )
    memorised = RetainMemorised(
        damaged, heldout, experiment.inputs.data.inputs[experiment.inputs.sets.retain.indices]
    )
    suite = load_suite(RELEASE)
    plain = validate(ctx, Candidate(damaged, "damaged"), suite)
    masked = validate(ctx, Candidate(memorised, "memorised"), suite)
    plain_checks = {r.name: r for r in plain.results}
    masked_checks = {r.name: r for r in masked.results}
    assert plain.verdict == "fail" and plain_checks["probe/static_retain"].status == "fail"
    assert masked.verdict == "masked collapse" and masked.masked_collapse
    assert masked_checks["probe/static_retain"].status == "pass"
    assert masked_checks["probe/static_retain"].value == pytest.approx(0.0, abs=1e-9)
    proven = [r for r in masked.results if r.details.get("damage_proven")]
    assert proven and all(r.status == "fail" for r in proven)
    # the damage the memory hides is the same damage: every held-out probe judges it alike
    assert masked_checks["probe/cross_task"].value == pytest.approx(plain_checks["probe/cross_task"].value)


def test_a_second_candidate_does_not_overwrite_the_first_ones_reports(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "small.yaml"
    suite.write_text(yaml.safe_dump({"name": "small", "probes": {"unrelated": {"params": {"size": 5}}}}))
    first = reference(study, "retrain")
    assert gate(study, first, "shared", suite)[0] == 1
    report = (study.parent / "shared" / "gate.json").read_text()
    capsys.readouterr()
    assert gate(study, reference(study, "original"), "shared", suite)[0] == 2
    err = capsys.readouterr().err
    assert f"holds the report of candidate {first}" in err and "--output" in err
    assert (study.parent / "shared" / "gate.json").read_text() == report
    assert gate(study, first, "shared", suite)[0] == 1  # the same candidate refreshes its own


def test_the_quickstart_searches_under_the_release_gate_s_thresholds_and_gates_its_front() -> None:
    """One verdict: the shipped quickstart's recommendation is a front trial that the release
    suite passed in the loop, and its search is held to the same thresholds as that suite's
    relearning attack and static retain probe, so that the two cannot drift apart."""
    config = load_study(ROOT / "studies" / "quickstart.yaml")
    release = load_suite(RELEASE)
    assert config.validation.suite is not None and config.validation.suite.resolve() == RELEASE
    bounds = {c.metric: (c.op, c.bound) for c in config.constraints}
    assert release.attacks is not None and release.attacks.relearning is not None
    assert bounds["relearn_recovery"] == ("<=", release.attacks.relearning.margin)
    assert bounds["retain_damage"] == ("<=", release.probes["static_retain"].max_excess)
    assert bounds["forget_efficacy"][0] == ">="
