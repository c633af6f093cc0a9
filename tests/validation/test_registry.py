"""The gate and the MLflow model registry: register passing candidates, refuse failing ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tune_unlearn.cli import main

from .test_gate import RELEASE, local_copy, reference


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return local_copy(tmp_path_factory.mktemp("registry"), "quickstart")


def test_a_passing_candidate_is_registered_with_its_alias_and_a_failing_one_never(study: Path) -> None:
    uri = f"sqlite:///{study.parent / 'mlflow.db'}"
    base = ["gate", str(study), "--suite", str(RELEASE), "--tracking-uri", uri]
    retrain = reference(study, "retrain")
    assert (
        main(
            [
                *base,
                "--candidate",
                retrain,
                "--output",
                str(study.parent / "g1"),
                "--register",
                "digits-forget3",
                "--alias",
                "champion",
            ]
        )
        == 0
    )
    client = MlflowClient(tracking_uri=uri)
    version = client.get_model_version_by_alias("digits-forget3", "champion")
    assert str(version.version) == "1" and version.tags["gate_verdict"] == "pass"

    original = reference(study, "original")
    assert (
        main(
            [
                *base,
                "--candidate",
                original,
                "--output",
                str(study.parent / "g2"),
                "--register",
                "digits-forget3",
                "--alias",
                "champion",
            ]
        )
        == 1
    )
    assert [str(v.version) for v in client.search_model_versions("name = 'digits-forget3'")] == ["1"]
    assert str(client.get_model_version_by_alias("digits-forget3", "champion").version) == "1"

    # a registered candidate, by alias: validated again from the registry, tagged with its verdict
    assert (
        main([*base, "--candidate", "models:/digits-forget3@champion", "--output", str(study.parent / "g3")])
        == 0
    )
    assert client.get_model_version("digits-forget3", "1").tags["gate_verdict"] == "pass"
