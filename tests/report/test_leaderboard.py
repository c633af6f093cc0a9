"""The leaderboard's statistics against hand-worked values."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import optuna
import pytest

from tune_unlearn.report.leaderboard import (
    Interval,
    Leaderboard,
    MethodResult,
    attainment_levels,
    attainment_plot,
)
from tune_unlearn.report.trial_record import METRICS


def test_the_interval_is_the_student_t_interval_clipped_to_the_quantitys_range() -> None:
    # mean 2, sd 1, n 3: half width t(0.975, 2) = 4.3027 × 1 / sqrt(3) = 2.4842
    interval = Interval.of([1.0, 2.0, 3.0])
    assert interval.mean == pytest.approx(2.0)
    assert interval.low == pytest.approx(2.0 - 2.4842, abs=1e-4)
    assert interval.high == pytest.approx(2.0 + 2.4842, abs=1e-4)
    # two seeds: t(0.975, 1) = 12.706; 0.3 ± 12.706 × 0.1414 / 1.414 = 0.3 ± 1.27, clipped to [0, 1]
    clipped = Interval.of([0.2, 0.4], (0.0, 1.0))
    assert (clipped.low, clipped.high) == (0.0, 1.0)
    one = Interval.of([0.5, None, math.nan])  # unknown values do not count as seeds
    assert (one.mean, one.low, one.n) == (0.5, None, 1)


def test_attainment_surfaces_of_two_fronts() -> None:
    """Front A = {(0, 1), (1, 0)}, front B = {(0.5, 0.5)} (minimisation). Attained by at least
    one front: the three points. By both: the corners (0.5, 1) and (1, 0.5)."""
    levels = attainment_levels([np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.5, 0.5]])])
    assert sorted(levels) == [0.5, 1.0]
    some = sorted(map(tuple, levels[0.5].tolist()))
    both = sorted(map(tuple, levels[1.0].tolist()))
    assert some == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    assert both == [(0.5, 1.0), (1.0, 0.5)]
    assert attainment_levels([np.empty((0, 2))]) == {}


def board_of(metrics: dict[str, float]) -> Leaderboard:
    """A one-method leaderboard whose one completed trial carries ``metrics``."""
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, values=[0.5], user_attrs={METRICS: metrics}
    )
    summary = SimpleNamespace(complete=[trial], feasible=[trial])
    result = MethodResult("npo", [cast(Any, summary)], [0.4], {"uis": [0.01]})
    return Leaderboard(("uis",), cast(Any, None), [result], budget=1)


def test_a_request_with_nothing_to_forget_is_named_above_the_ranking() -> None:
    empty = board_of({"nothing_to_forget/shape": 1.0, "nothing_to_forget/colour": 0.0, "uis": 0.01})
    assert empty.nothing_to_forget == ["shape"]
    text = empty.markdown()
    assert "Nothing detectable to forget on shape" in text
    assert text.index("Nothing detectable") < text.index("| rank |")
    something = board_of({"nothing_to_forget/shape": 0.0, "uis": 0.01})
    assert something.nothing_to_forget == [] and "Nothing detectable" not in something.markdown()


def test_a_plot_with_no_feasible_trial_says_so_instead_of_an_empty_legend(tmp_path: Path) -> None:
    board = board_of({"uis": 0.01})
    board.results[0].summaries[0].feasible = []  # type: ignore[misc]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns on a legend with nothing in it
        attainment_plot(board, ("uis", "uis"), tmp_path / "board.png")
    assert (tmp_path / "board.png").stat().st_size > 0
