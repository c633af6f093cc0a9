"""A default start: the method's own defaults run as a study's first trial."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tune_unlearn.cli import main
from tune_unlearn.config.study_config import SearchParam
from tune_unlearn.methods import METHODS
from tune_unlearn.study.default_start import DEFAULT_START_ATTR, default_start
from tune_unlearn.study.runner import run_study

from ..helpers import tiny_study, write_study


def test_the_defaults_inside_their_ranges_and_the_centre_of_a_range_that_excludes_one() -> None:
    space = {
        "shrink": SearchParam(type="float", low=0.1, high=0.9),  # holds the default 0.3
        "retain_lr": SearchParam(type="float", low=1e-2, high=1.0, log=True),  # not 3e-3
        "noise": SearchParam(type="float", low=0.4, high=0.6, step=0.05),  # not 0.3
        "schedule": SearchParam(type="categorical", choices=["constant"]),  # not cosine
    }
    start = default_start(METHODS.get("shrink_perturb"), space)
    assert start.params["shrink"] == 0.3
    assert math.isclose(start.params["retain_lr"], 0.1)  # √(0.01 · 1)
    assert math.isclose(start.params["noise"], 0.5)
    assert start.params["schedule"] == "constant"
    assert start.replaced == ("retain_lr", "noise", "schedule")
    assert "retain_lr, noise, schedule: the range's centre" in start.describe()


def test_a_rate_default_for_plain_steps_is_not_the_first_trial_of_a_study_stepping_with_adam() -> None:
    """graddiff's default rates are plain-step rates: under ``optimizer: adam`` (the default
    space's) the same numbers are per-weight step sizes (0.01 is Adam's most aggressive), so
    each rate starts at the range's centre, and says why; under its own steps they stand."""
    space = {
        "ascent_lr": SearchParam(type="float", low=1e-5, high=1e-2, log=True),  # holds 0.01
        "retain_lr": SearchParam(type="float", low=1e-5, high=1e-2, log=True),
    }
    graddiff = METHODS.get("graddiff")
    under_adam = default_start(graddiff, space, {"optimizer": "adam"})
    assert all(math.isclose(v, math.sqrt(1e-7)) for v in under_adam.params.values())
    assert under_adam.other_steps == ("ascent_lr", "retain_lr") == under_adam.replaced
    assert "not this study's optimizer" in under_adam.describe()
    plain = default_start(graddiff, space, {"optimizer": "sgd"})
    assert plain.params["ascent_lr"] == 0.01 and plain.replaced == ("retain_lr",) and not plain.other_steps
    assert "the default lies outside it" in plain.describe()


def test_a_range_contains_only_what_it_can_suggest() -> None:
    grid = SearchParam(type="float", low=0.0, high=1.0, step=0.25)
    assert grid.contains(0.75) and not grid.contains(0.7) and not grid.contains(1.25)
    assert SearchParam(type="int", low=1, high=16, log=True).centre() == 4
    assert SearchParam(type="int", low=1, high=4).centre() == 2  # 2.5 rounds to even


def test_a_study_runs_the_defaults_first_once(tmp_path: Path, session_tmp: Path) -> None:
    config = tiny_study(
        tmp_path,
        n_trials=2,
        sampler={"name": "random", "seed": 0, "start_at_defaults": True},
        references={"cache_dir": str(session_tmp / "cache")},
    )
    run = run_study(config, progress=False)
    first, second = sorted(run.study.trials, key=lambda t: t.number)
    # graddiff's defaults, both inside the tiny study's ranges (0.01 its ascent range's top)
    assert first.params == {"ascent_lr": 0.01, "retain_lr": 0.05}
    assert first.user_attrs[DEFAULT_START_ATTR] is True
    assert DEFAULT_START_ATTR not in second.user_attrs and second.params != first.params
    assert run.study.user_attrs[DEFAULT_START_ATTR] == {
        "params": {"ascent_lr": 0.01, "retain_lr": 0.05},
        "replaced": [],
    }
    again = run_study(config, n_trials=3, progress=False)  # a rerun enqueues nothing again
    assert sum(DEFAULT_START_ATTR in t.user_attrs for t in again.study.trials) == 1


def test_check_names_the_first_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    search = {"ascent_lr": {"type": "float", "low": 0.02, "high": 0.08, "log": True}}
    config = tiny_study(
        tmp_path,
        method={"name": "graddiff", "fixed": {"steps": 6, "batch_size": 16}, "search": search},
        sampler={"name": "gp", "start_at_defaults": True},
    )
    assert main(["check", str(write_study(tmp_path, config))]) == 0
    assert (
        "first trial: the method's defaults, ascent_lr=0.04 (ascent_lr: the range's centre, "
        "the default lies outside it)" in capsys.readouterr().out
    )
