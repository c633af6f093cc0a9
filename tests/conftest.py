from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tune_unlearn.trial.study_references import LoadedStudy, load_study_values

from .helpers import tiny_study


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def tiny_values(session_tmp: Path) -> LoadedStudy:
    return load_study_values(tiny_study(session_tmp))
