from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tune_unlearn.config import ConfigError, load_study, parse_study

from .helpers import tiny_study

BAD = {
    "name": "bad name",
    "problem": {"name": "digits"},
    "forget": {"mode": "partial", "target_tasks": ["digit", "colour"], "where": {"digit": 12}},
    "method": {
        "name": "subspace_projection",
        "fixed": {"steps": "many", "learning_rate": 0.1},
        "search": {
            "ascent_lr": {"type": "float", "low": 0.1, "high": 0.01},
            "subspace_rank": {"type": "float", "low": 1, "high": 8},
        },
    },
    "objectives": ["forget_eficacy", "uis"],
    "constraints": ["retained_utility >> 0.9", "gpu_secs <= 3"],
    "sampler": {"name": "cmaes"},
    "n_trials": 0,
    "extra_key": True,
}


def test_every_problem_is_reported_at_once_with_its_dotted_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_study(BAD)
    paths = {issue.path for issue in info.value.issues}
    assert paths >= {
        "name",
        "forget.target_tasks.1",
        "forget.where.digit",
        "method.fixed.steps",
        "method.fixed.learning_rate",
        "method.search.ascent_lr",
        "method.search.subspace_rank",
        "objectives.0",
        "constraints",
        "sampler.name",
        "n_trials",
        "extra_key",
    }
    text = str(info.value)
    assert "did you mean 'forget_efficacy'?" in text
    assert "(got 12)" in text and "(got 'colour')" in text
    assert "valid: steps, batch_size, ascent_lr" in text


def test_unknown_names_list_the_valid_ones() -> None:
    raw = {**BAD, "method": {"name": "gradiff"}, "problem": {"name": "digts"}}
    with pytest.raises(ConfigError) as info:
        parse_study(raw)
    by_path = {i.path: i.message for i in info.value.issues}
    assert "did you mean 'graddiff'?" in by_path["method.name"]
    assert "valid: digits" in by_path["problem.name"]


def test_a_good_file_parses_with_defaults(tmp_path: Path) -> None:
    config = tiny_study(tmp_path)
    assert config.objectives == ["forget_efficacy", "retained_utility", "uis", "compute_cost"]
    assert config.method.search["ascent_lr"].log is True


def test_constraints_parse_and_measure_violation(tmp_path: Path) -> None:
    config = tiny_study(tmp_path, constraints=["retained_utility >= 0.95", "gpu_seconds <= 2"])
    utility, seconds = config.constraints
    assert (utility.metric, utility.op, utility.bound) == ("retained_utility", ">=", 0.95)
    assert utility.violation(0.97) < 0 < utility.violation(0.9)
    assert seconds.violation(1.5) < 0 < seconds.violation(2.5)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_study(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_study(listed)


def test_the_shipped_studies_are_valid() -> None:
    for path in sorted(Path(__file__).parents[1].joinpath("studies").glob("*.yaml")):
        load_study(path)


def test_a_value_the_method_refuses_is_reported_at_its_path(tmp_path: Path) -> None:
    method = {
        "name": "task_projection",
        "fixed": {"projection_space": "features", "steps": 5},
        "search": {"projection_strength": {"type": "categorical", "choices": [0.5, 1.0]}},
    }
    with pytest.raises(ConfigError) as info:
        tiny_study(tmp_path, method=method)
    issues = {issue.path: issue.message for issue in info.value.issues}
    assert set(issues) == {"method.fixed.projection_space"}
    assert "must be one of parameters, representation" in issues["method.fixed.projection_space"]
    method["fixed"] = {"steps": 5}
    method["search"] = {"projection_space": {"type": "categorical", "choices": ["representation", 3]}}
    with pytest.raises(ConfigError) as info:
        tiny_study(tmp_path, method=method)
    assert {issue.path for issue in info.value.issues} == {"method.search.projection_space.choices.1"}
    method["search"] = {
        "projection_space": {"type": "categorical", "choices": ["parameters", "representation"]}
    }
    assert tiny_study(tmp_path, method=method).method.search  # both spaces are fine
