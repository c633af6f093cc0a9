"""Reference modes: the per-request ensemble, banks shared by requests, reference-free."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.study.test_stream import digit, stream_file
from tune_unlearn.cli import main
from tune_unlearn.config.schema import ConfigError
from tune_unlearn.config.study_config import parse_study
from tune_unlearn.errors import UsageError
from tune_unlearn.references import reference_models
from tune_unlearn.references.training import ReferenceCache
from tune_unlearn.report.trial_record import TrialRecord
from tune_unlearn.study.runner import run_study
from tune_unlearn.study.stream import run_stream
from tune_unlearn.trial.inputs import load_inputs
from tune_unlearn.trial.study_references import load_study_values

from ..helpers import tiny_study


def _recording_training(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every set the retrain members are trained on (one entry per call of train_members)."""
    calls: list[Any] = []
    real = reference_models.train_members

    def recorded(problem: Any, data: Any, retain: Any, seeds: list[int], **kwargs: Any) -> Any:
        calls.append((retain, list(seeds)))
        return real(problem, data, retain, seeds, **kwargs)

    monkeypatch.setattr(reference_models, "train_members", recorded)
    return calls


def test_a_stream_bank_is_trained_once_without_every_request_and_costs_k_over_n(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = stream_file(tmp_path, tmp_path, [digit(3), digit(5), digit(7)])
    bank = {"seeds": 2, "scope": "stream"}
    raw["references"] = {"cache_dir": str(tmp_path / "bank-cache"), "retrain": bank}
    study = tmp_path / "stream.yaml"
    study.write_text(yaml.safe_dump(raw))
    assert main(["check", str(study)]) == 0
    assert "reference mode: bank (K = 2, shared by 3 requests), 0.667 retrain(s) per request" in (
        capsys.readouterr().out
    )

    calls = _recording_training(monkeypatch)
    rows = run_stream(parse_study(raw), progress=False)
    assert len(calls) == 1 and calls[0][1] == [0, 1]  # both members, once, for all three requests

    # Brute force: every train row of digit 3, 5 or 7 loses its digit label, and only those.
    probe = load_inputs(tiny_study(tmp_path))
    train = probe.train.tolist()
    digits = probe.data.labels["digit"].cpu()
    digit_column = probe.task_names.index("digit")
    expected = {}
    for row in train:
        mask = [True] * len(probe.task_names)
        if int(digits[row]) in (3, 5, 7):
            mask[digit_column] = False
        expected[row] = mask
    trained_on = calls[0][0]
    assert {int(i): m.tolist() for i, m in zip(trained_on.indices, trained_on.mask, strict=True)} == expected

    # `check` on the stream's file now finds the bank in the cache: nothing left to train.
    assert main(["check", str(study)]) == 0
    assert "model(s) to train" not in capsys.readouterr().out

    table = (tmp_path / "out" / "stream" / "stream.md").read_text()
    rows_of_table = [line for line in table.splitlines() if line.startswith("| ")][1:]  # less the header
    per_request_so_far = [line.split("|")[-3].strip() for line in rows_of_table]
    assert per_request_so_far == ["2.000", "1.000", "0.667"]  # K spent once, over 1, 2, 3 requests
    assert all(row.all_in_cost is not None and row.all_in_cost > 2 / 3 for row in rows)
    report = (tmp_path / "out" / "stream" / "request-1" / "report.md").read_text()
    assert "Reference mode: **bank (K = 2, shared by 3 requests)**" in report
    assert "| reference models (this request's share) | 0.667 |" in report


def _bank_study(tmp_path: Path, left_out: list[int], **retrain: Any) -> dict[str, Any]:
    index_file = tmp_path / "left_out.json"
    index_file.write_text(json.dumps(left_out))
    raw = tiny_study(tmp_path).model_dump(mode="json", exclude_none=True)
    raw["references"] = {
        "cache_dir": str(tmp_path / "cache"),
        "retrain": {"seeds": 1, "left_out": str(index_file), **retrain},
    }
    return raw


def test_a_bank_that_saw_part_of_the_request_is_refused_with_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    probe = load_inputs(tiny_study(tmp_path))
    forget = probe.request.indices.tolist()
    raw = _bank_study(tmp_path, forget[1:])  # the bank's members saw one forget instance
    with pytest.raises(UsageError, match="saw 1 of the"):
        load_inputs(parse_study(raw))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(raw))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["check", str(study)]) == 2
    assert "references.retrain.left_out: the bank's members saw 1 of the" in capsys.readouterr().err
    assert main([str(study)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_hand_given_bank_is_shared_by_requests_it_covers(tmp_path: Path) -> None:
    """Two requests covered by one bank train its members on one set under one cache key."""
    probe = load_inputs(tiny_study(tmp_path))
    digits = probe.data.labels["digit"].cpu()
    train = probe.train
    both = train[(digits[train] == 3) | (digits[train] == 5)].tolist()
    shared = parse_study(_bank_study(tmp_path, both, shared_by=2))
    first = load_inputs(shared)
    other = _bank_study(tmp_path, both, shared_by=2)
    other["forget"] = digit(5)
    second = load_inputs(parse_study(other))
    assert (
        first.reference_plan.retrain_request.fingerprint()
        == second.reference_plan.retrain_request.fingerprint()
    )
    assert torch.equal(first.reference_plan.retrain_set.indices, second.reference_plan.retrain_set.indices)
    assert len(first.reference_plan.retrain_set) == len(
        train
    )  # partial: the rows stay, their digit label goes
    column = probe.task_names.index("digit")
    assert int((~first.reference_plan.retrain_set.mask[:, column]).sum()) == len(both)
    assert first.sets.retain.mask[:, column].sum() > first.reference_plan.retrain_set.mask[:, column].sum()
    # A bank is keyed by the problem's recipe too: one trained for other epochs is never used.
    cache = ReferenceCache(tmp_path / "cache")
    other_recipe = _bank_study(tmp_path, both, shared_by=2)
    other_recipe["problem"]["params"]["epochs"] = 9
    third = load_inputs(parse_study(other_recipe))
    assert cache.key("retrain", first.problem, 0, first.reference_plan.retrain_request) == cache.key(
        "retrain", second.problem, 0, second.reference_plan.retrain_request
    )
    assert cache.key("retrain", first.problem, 0, first.reference_plan.retrain_request) != cache.key(
        "retrain", third.problem, 0, third.reference_plan.retrain_request
    )


@pytest.mark.parametrize(
    ("retrain", "path", "words"),
    [
        ({"scope": "stream"}, "references.retrain.scope", "give `requests:`"),
        ({"left_out": "/no/such/file.txt"}, "references.retrain.left_out", "no such index file"),
        ({"scope": "bank"}, "references.retrain.scope", "request"),
    ],
)
def test_bad_bank_settings_are_named_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], retrain: dict[str, Any], path: str, words: str
) -> None:
    raw = tiny_study(tmp_path).model_dump(mode="json", exclude_none=True)
    raw["references"] = {"retrain": {"seeds": 2, **retrain}}
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(raw))
    assert main(["check", str(study)]) == 2
    err = capsys.readouterr().err
    assert path in err and words in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


@pytest.mark.parametrize("mode", ["ensemble", "bank", "reference-free"])
def test_the_quickstart_class_request_recommends_a_model_that_forgot_in_every_mode(
    tmp_path: Path, mode: str
) -> None:
    """The quickstart's request (every 3, from the digit head): in each mode that can judge it,
    the recommended trial's forget-set score sits nearer an honest retrain's than the
    original's; reference-free cannot judge a whole group and refuses."""
    probe = load_inputs(tiny_study(tmp_path))
    digits = probe.data.labels["digit"].cpu()
    train = probe.train
    retrain: Any = {"seeds": 2}
    if mode == "bank":  # shared with a second request, every 5
        index_file = tmp_path / "left_out.json"
        index_file.write_text(json.dumps(train[(digits[train] == 3) | (digits[train] == 5)].tolist()))
        retrain = {"seeds": 2, "left_out": str(index_file), "shared_by": 2}
    if mode == "reference-free":
        retrain = False
    references = {"cache_dir": str(tmp_path / "cache"), "retrain": retrain}
    if mode == "reference-free":
        with pytest.raises(ConfigError, match="reference-free cannot judge this request"):
            tiny_study(tmp_path, references=references)
        return
    config = tiny_study(tmp_path, n_trials=6, constraints=["forget_efficacy >= 0.9"], references=references)
    trial = run_study(config, progress=False).summary.recommended
    assert trial is not None
    metrics = TrialRecord.of(trial).metrics
    original, unlearned = (metrics[f"score/{m}/forget/digit"] for m in ("original", "unlearned"))
    # Where honest deletion lands: this request's own retrains (the gold ensemble), in every mode.
    gold = tiny_study(tmp_path, references={"cache_dir": str(tmp_path / "cache"), "retrain": {"seeds": 2}})
    honest = load_study_values(gold).references.scores["score/retrain/forget/digit"]
    assert abs(original - honest) > 0.5  # there is something to forget
    assert abs(unlearned - honest) < abs(original - honest) / 2
