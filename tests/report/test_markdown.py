"""Report sections that judge the study's own set-up."""

from __future__ import annotations

from tune_unlearn.report.markdown import efficacy_conditioning, honest_utility_lines


def test_a_forget_set_the_original_already_scores_inside_the_band_is_flagged() -> None:
    metrics = {
        "score/original/forget/shape": 0.990,
        "score/retrain/forget/shape": 0.981,  # half the circles: the retrains still know them
        "band/shape": 0.030,
        "nothing_to_forget/shape": 1.0,
        "score/original/forget/size": 0.992,
        "score/retrain/forget/size": 0.40,  # plenty to forget: not flagged
        "band/size": 0.05,
        "nothing_to_forget/size": 0.0,
    }
    lines = efficacy_conditioning(metrics)
    assert lines[0] == "## Forget efficacy: nothing detectable to forget"
    flagged = [line for line in lines if line.startswith("- `")]
    assert len(flagged) == 1 and flagged[0].startswith("- `shape`")
    assert "0.990" in flagged[0] and "0.981" in flagged[0] and "±0.030" in flagged[0]


def test_nothing_is_said_with_a_real_gap_or_without_a_retrain() -> None:
    assert (
        efficacy_conditioning(
            {
                "score/original/forget/shape": 0.99,
                "score/retrain/forget/shape": 0.02,
                "band/shape": 0.03,
                "nothing_to_forget/shape": 0.0,
            }
        )
        == []
    )
    assert efficacy_conditioning({"score/original/forget/shape": 0.99}) == []  # reference-free
    assert (
        efficacy_conditioning({"score/original/forget/shape": None, "score/retrain/forget/shape": 0.9}) == []
    )  # type: ignore[dict-item]


def test_the_report_says_what_honest_deletion_keeps_only_when_a_retrain_measured_it() -> None:
    lines = honest_utility_lines(0.93514)
    assert lines[0].startswith("What honest deletion keeps") and "**0.9351**" in lines[0]
    assert honest_utility_lines(None) == []  # reference-free: nothing to say
