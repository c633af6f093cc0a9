"""Methods and problems from another package, through entry points; broken plugins reported."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tune_unlearn.catalog import render_catalog
from tune_unlearn.methods import METHODS
from tune_unlearn.problems import PROBLEMS
from tune_unlearn.study.runner import run_study
from tune_unlearn.testing import check_method

from .helpers import tiny_study

PLUGIN_PATH = Path(__file__).parent / "plugin_example"


@pytest.fixture
def plugin_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The example package on the path, and the registries reloading their entry points."""
    monkeypatch.syspath_prepend(str(PLUGIN_PATH))
    importlib.invalidate_caches()
    for registry in (METHODS, PROBLEMS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "broken", {})
        monkeypatch.setattr(registry, "_plugins_loaded", False)
    yield
    sys.modules.pop("example_plugin", None)


def test_a_plugin_method_and_problem_run_a_study(plugin_installed: None, tmp_path: Path) -> None:
    assert "damped_graddiff" in METHODS.names() and "small_digits" in PROBLEMS.names()
    config = tiny_study(
        tmp_path,
        problem={"name": "small_digits"},
        method={
            "name": "damped_graddiff",
            "fixed": {"steps": 4, "batch_size": 8},
            "search": {"damping": {"low": 0.1, "high": 0.9}},
        },
        n_trials=2,
    )
    run = run_study(config, progress=False)
    assert [t.state.name for t in run.study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(0.1 <= t.params["damping"] <= 0.9 for t in run.study.trials)
    check_method(METHODS.get("damped_graddiff"))


def test_a_broken_plugin_is_named_and_the_rest_still_load(plugin_installed: None) -> None:
    catalog = render_catalog()
    assert "damped_graddiff:" in catalog and "small_digits:" in catalog
    assert "broken_method" not in METHODS.names()
    assert "method broken_method: example_plugin_does_not_exist:Method: ModuleNotFoundError" in catalog
