"""Report sections that judge the study's own set-up."""

from __future__ import annotations

from tune_unlearn.markdown import efficacy_conditioning


def test_a_forget_set_the_retrain_still_scores_well_is_flagged_with_its_tolerance_band() -> None:
    narrow = {
        "score/original/forget/shape": 0.990,
        "score/retrain/forget/shape": 0.981,  # half the circles: the retrain still knows them
        "score/original/forget/size": 0.992,
        "score/retrain/forget/size": 0.40,  # plenty to forget: not flagged
    }
    lines = efficacy_conditioning(narrow)
    assert lines[0] == "## Forget efficacy: little to forget"
    flagged = [line for line in lines if line.startswith("- `")]
    assert len(flagged) == 1 and flagged[0].startswith("- `shape`")
    assert "gap 0.009" in flagged[0] and "±0.0010" in flagged[0]  # a tenth of the 0.01 floor


def test_nothing_is_said_with_a_real_gap_or_without_a_retrain() -> None:
    assert (
        efficacy_conditioning({"score/original/forget/shape": 0.99, "score/retrain/forget/shape": 0.02}) == []
    )
    assert efficacy_conditioning({"score/original/forget/shape": 0.99}) == []  # reference-free
    assert (
        efficacy_conditioning({"score/original/forget/shape": None, "score/retrain/forget/shape": 0.9}) == []
    )  # type: ignore[dict-item]
