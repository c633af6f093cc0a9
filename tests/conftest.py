from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tune_unlearn.trial.study_references import LoadedStudy, load_study_values

from .helpers import tiny_study

#: Files whose tests are independent subprocess runs of a minute or less each: xdist may spread
#: them over every worker. Every other file keeps its tests on one worker, in order (the Redis
#: tests share one database, and module fixtures train models once per file).
SPREAD_FILES = {"test_benchmarks.py"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``--dist loadgroup`` (pyproject's addopts) sends a group to one worker and spreads tests
    without one: a group per file, as ``--dist loadfile`` would, but for :data:`SPREAD_FILES`,
    whose twenty-odd benchmark runs on one worker were the suite's longest tail."""
    for item in items:
        if item.path.name not in SPREAD_FILES:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def tiny_values(session_tmp: Path) -> LoadedStudy:
    return load_study_values(tiny_study(session_tmp))
