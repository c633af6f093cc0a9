"""The gate's rules on hand-made inputs: per-task gaps, masked collapse, probe families,
quantization."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tune_unlearn.references.attacks import comeback_step, quantized, withstood_steps
from tune_unlearn.trial.study_references import LoadedStudy, load_study_values
from tune_unlearn.validation import PROBES, CheckResult, ValidationContext, ValidationReport
from tune_unlearn.validation._attacks import comeback_line
from tune_unlearn.validation._checks import _gap_check, auc_standard_error
from tune_unlearn.validation._suite import ForgetQualitySpec

from ..helpers import tiny_study


def test_the_forget_gap_is_judged_per_task_not_averaged() -> None:
    """+0.5 on one target task and −0.5 on another averaged to 0 and passed before."""
    ctx = SimpleNamespace(
        retrains=[object()], inputs=SimpleNamespace(request=SimpleNamespace(target_tasks=("a", "b")))
    )
    metrics = {
        "score/unlearned/forget/a": 0.9,
        "score/retrain/forget/a": 0.4,
        "band/a": 0.05,
        "score/unlearned/forget/b": 0.1,
        "score/retrain/forget/b": 0.6,
        "band/b": 0.1,
    }
    result = _gap_check(ctx, metrics, ForgetQualitySpec(max_gap=0.05))  # type: ignore[arg-type]
    assert result.status == "fail"
    assert result.details["worst_task"] == "a" and result.value == pytest.approx(0.45)
    assert result.details["per_task"]["b"]["beyond_band"] == pytest.approx(0.4)
    inside = {**metrics, "score/unlearned/forget/a": 0.44, "score/unlearned/forget/b": 0.55}
    assert _gap_check(ctx, inside, ForgetQualitySpec(max_gap=0.0)).status == "pass"  # type: ignore[arg-type]


def report(static: str, dependent: str, proven: bool) -> ValidationReport:
    return ValidationReport(
        "s",
        "c",
        [
            CheckResult("probe/static_retain", static, ""),  # type: ignore[arg-type]
            CheckResult("probe/shared_label", dependent, "", details={"damage_proven": proven}),  # type: ignore[arg-type]
            CheckResult("probe/cross_task", "skipped", "not applicable: full mode"),
        ],
    )


def test_masked_collapse_needs_proven_damage_and_a_passing_static_retain() -> None:
    assert report("pass", "fail", proven=True).verdict == "masked collapse"
    assert report("pass", "fail", proven=False).verdict == "fail"  # a wide interval is no evidence
    assert report("fail", "fail", proven=True).verdict == "fail"  # not masked: the retain set shows it
    passing = report("pass", "pass", proven=False)
    assert passing.passed and passing.verdict == "pass"  # the skipped family is no failure
    only_skipped = ValidationReport("s", "c", [CheckResult("probe/cross_task", "skipped", "")])
    assert not only_skipped.passed  # nothing judged is never a pass


@pytest.fixture(scope="module")
def full_context(tmp_path_factory: pytest.TempPathFactory) -> ValidationContext:
    tmp = tmp_path_factory.mktemp("rules")
    config = tiny_study(tmp, forget={"mode": "full", "where": {"digit": 3}})
    return ValidationContext(*load_study_values(config))


def test_shared_label_in_full_mode_is_the_held_out_class_not_the_whole_holdout(
    full_context: ValidationContext,
) -> None:
    probe = PROBES.get("shared_label")().build(full_context)
    digits = full_context.inputs.data.labels["digit"][probe.samples.indices]
    assert set(digits.tolist()) == {3}
    assert torch.isin(probe.samples.indices, full_context.holdout).all()


def test_shared_attribute_follows_the_forget_sets_attribute_distribution(
    full_context: ValidationContext,
) -> None:
    inputs = full_context.inputs
    probe = PROBES.get("shared_attribute")().build(full_context)
    ink = inputs.data.attributes["ink"]
    forget_share = torch.bincount(ink[inputs.request.indices], minlength=3).double()
    probe_share = torch.bincount(ink[probe.samples.indices], minlength=3).double()
    assert torch.isin(probe.samples.indices, full_context.holdout).all()
    assert (probe_share / probe_share.sum() - forget_share / forget_share.sum()).abs().max() < 0.02
    assert len(probe) < len(full_context.holdout)


def test_cross_task_is_holdout_only_and_not_applicable_in_full_mode(
    full_context: ValidationContext, tiny_values: LoadedStudy
) -> None:
    family = PROBES.get("cross_task")()
    assert "full-mode" in (family.not_applicable(full_context) or "")
    partial = ValidationContext(*tiny_values)
    assert family.not_applicable(partial) is None
    probe = family.build(partial)
    assert torch.isin(probe.samples.indices, partial.holdout).all()
    assert probe.samples.mask[:, 0].sum() == 0 and probe.samples.mask[:, 1:].all()  # kept tasks only


def test_a_probe_parameter_typo_is_an_error() -> None:
    with pytest.raises(ValueError, match="kk: no such parameter; valid: k"):
        PROBES.get("dependent_neighbors")(kk=5)
    with pytest.raises(ValueError, match="expected an integer"):
        PROBES.get("unrelated")(size=2.5)


def test_quantization_rounds_to_a_symmetric_grid() -> None:
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.7, -0.26]]))
    rounded = quantized(layer, bits=2)  # type: ignore[arg-type]
    # 2 bits: one level each side of 0 with scale max|w| = 0.7: -0.26/0.7 rounds to 0
    assert rounded.weight.tolist() == [[pytest.approx(0.7), 0.0]]
    assert quantized(layer, bits=8).weight.tolist()[0][1] == pytest.approx(-0.26, abs=0.7 / 127 / 2)


def test_the_auc_standard_error_by_hand() -> None:
    # Hanley & McNeil with A = 0.5, 10 and 10: (0.25 + 9·(1/3 − 1/4) + 9·(1/3 − 1/4)) / 100
    assert auc_standard_error(0.5, 10, 10) == pytest.approx(((0.25 + 18 / 12) / 100) ** 0.5)


def _label_context(kinds: dict[str, str]) -> SimpleNamespace:
    """A hand-made context: 8 forget rows (0–7) and 8 holdout rows (8–15)."""
    from tune_unlearn.problems import Task
    from tune_unlearn.problems.forget import LabeledSet

    tasks = tuple(
        Task(n, k, num_classes=2) if k == "classification" else Task(n, k) for n, k in kinds.items()
    )
    labels = {
        "group": torch.tensor([1] * 8 + [1, 1, 1, 0, 0, 0, 0, 0]),
        "size": torch.rand(16),  # continuous: no two samples share a value
    }
    holdout = torch.arange(8, 16)
    inputs = SimpleNamespace(
        data=SimpleNamespace(labels={n: labels[n] for n in kinds}),
        request=SimpleNamespace(target_tasks=tuple(kinds), indices=torch.arange(8)),
        problem=SimpleNamespace(tasks=tasks),
    )
    return SimpleNamespace(
        inputs=inputs,
        holdout=holdout,
        all_tasks=lambda rows: LabeledSet(rows, torch.ones(len(rows), len(kinds), dtype=torch.bool)),
    )


def test_shared_label_groups_by_classification_labels_only() -> None:
    family = PROBES.get("shared_label")()
    ctx = _label_context({"group": "classification", "size": "regression"})
    assert family.not_applicable(ctx) is None  # type: ignore[arg-type]
    probe = family.build(ctx)  # type: ignore[arg-type]
    assert probe.samples.indices.tolist() == [8, 9, 10]  # the held-out members of group 1
    regression_only = _label_context({"size": "regression"})
    assert "no per-sample classification target task" in (family.not_applicable(regression_only) or "")  # type: ignore[arg-type]


def test_the_bootstrap_interval_by_hand() -> None:
    from tune_unlearn.validation._checks import bootstrap_interval
    from tune_unlearn.validation._suite import SuiteConfig

    suite = SuiteConfig(name="s", bootstrap=2000, confidence=0.95, seed=0)
    constant = bootstrap_interval(torch.full((50,), 0.25), suite)
    assert constant == pytest.approx((0.25, 0.25, 0.25))
    coin = torch.tensor([0.0, 1.0] * 200)  # mean 0.5, n = 400: normal half-width 1.96·0.5/20
    estimate, low, high = bootstrap_interval(coin, suite)
    assert estimate == 0.5 and low < 0.5 < high
    assert (high - low) / 2 == pytest.approx(1.96 * 0.5 / 20, rel=0.15)
    assert bootstrap_interval(coin, suite) == (estimate, low, high)  # seeded: same interval


def test_excess_damage_is_the_ensembles_score_minus_the_candidates_per_task(
    full_context: ValidationContext,
) -> None:
    """``excess = mean(r − u)`` over the probe's samples of each task; a model that outputs
    nothing useful is proven damaged, one of the honest retrains is not."""
    from tune_unlearn.validation._checks import probe_check, task_scores
    from tune_unlearn.validation._suite import ProbeSpec, SuiteConfig

    suite = SuiteConfig(name="s", bootstrap=200, seed=0)
    spec = ProbeSpec(max_excess=0.05)
    broken = full_context.references.original_model()
    with torch.no_grad():
        for parameter in broken.parameters():
            parameter.zero_()  # every head outputs a constant: chance level at best
    unlearned = full_context.per_sample(broken)
    result = probe_check(full_context, "unrelated", spec, suite, broken, unlearned)
    probe = PROBES.get("unrelated")().build(full_context)
    for column, task in enumerate(full_context.task_names):
        reference = task_scores(full_context.retrain_results, probe.samples, column)
        candidate = task_scores(unlearned, probe.samples, column)
        expected = float((reference - candidate).double().mean())
        assert result.details["per_task"][task]["excess"] == pytest.approx(expected)
    assert result.status == "fail" and result.details["damage_proven"]
    honest = full_context.retrains[1]
    fair = probe_check(full_context, "unrelated", spec, suite, honest, full_context.per_sample(honest))
    assert fair.status == "pass" and not fair.details["damage_proven"]


def test_the_relearning_attack_runs_the_most_steps_the_retrains_withstand() -> None:
    """Hand-worked: five retrains' forget-set scores before the attack and after steps 1-3.
    At step 3 one relearns to 0.3: mean recovery 0.06, spread sqrt(0.072/4) = 0.1342, seed band
    t(0.975; 4) × 0.1342 × sqrt(1.2) = 2.7764 × 0.1470 = 0.408, so 0.468 > margin 0.1 and the
    attack stops at step 2."""
    curves = [[0.0, 0.0, 0.0, 0.3]] + [[0.0, 0.0, 0.0, 0.0]] * 4
    assert withstood_steps(curves, margin=0.1) == 2
    assert withstood_steps(curves, margin=0.46) == 2  # 0.468 is beyond it
    assert withstood_steps(curves, margin=0.47) == 3  # and within this
    # the first step already beyond the margin: the weakest attack, one step
    assert withstood_steps([[0.0, 0.5, 0.9]] * 5, margin=0.1) == 1
    # recovery is measured from each retrain's own score before the attack
    assert withstood_steps([[0.4, 0.45, 0.48]] * 5, margin=0.1) == 2


def test_a_model_comes_back_at_the_first_step_its_score_rises_past_the_margin() -> None:
    """From its own score before the attack: 0.2 → 0.35 is 0.15 up, past 0.1 at step 2."""
    assert comeback_step([0.2, 0.25, 0.35, 0.9], margin=0.1) == 2
    assert comeback_step([0.0, 0.1, 0.1], margin=0.1) is None  # exactly the margin is not past it
    assert comeback_step([0.0], margin=0.1) is None


def test_a_failed_relearning_check_says_how_many_steps_apart_the_candidate_and_the_retrains_come_back() -> (
    None
):
    """The shapes control of benchmarks/RESULTS.md ("Closed-form erasure"): the fine-tuned
    original back at step 3, the retrains at 7, 7, 10, 10 and one not within 10."""
    candidate = [0.0, 0.0, 0.0, 0.932, 0.945, 0.945, 0.945, 0.966, 0.991, 1.0, 1.0]
    retrains = [
        [0.0] * 10 + [0.164],
        [0.0] * 11,
        [0.0] * 7 + [0.229, 0.925, 0.952, 1.0],
        [0.0] * 9 + [0.005, 0.913],
        [0.0] * 7 + [0.226, 0.442, 0.729, 0.866],
    ]
    assert comeback_line(candidate, retrains, 0.1) == (
        "it comes back (score up more than 0.1) at step 3; the retrains at 7, 7, 10, 10, not within 10"
    )
    # a candidate that never rises past the margin is said so, not "at not within 10"
    assert comeback_line([0.0] * 11, retrains, 0.1) == (
        "it does not come back (score up more than 0.1) within 10 steps; "
        "the retrains at 7, 7, 10, 10, not within 10"
    )
