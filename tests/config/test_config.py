from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tune_unlearn.config.schema import ConfigError
from tune_unlearn.config.study_config import parse_study
from tune_unlearn.study_file import load_study

from ..helpers import tiny_study

ROOT = Path(__file__).resolve().parents[2]

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
        "method.search.subspace_rank.type",
        "objectives.0",
        "constraints",
        "sampler.name",
        "n_trials",
        "extra_key",
    }
    text = str(info.value)
    assert "did you mean 'forget_efficacy'?" in text
    assert "(got 12)" in text and "(got 'colour')" in text
    assert "valid: steps, batch_size, max_step, optimizer, ascent_lr" in text


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


def test_the_shipped_studies_are_valid_and_read_back_the_same_once_resolved() -> None:
    """A resolved study (``study.resolved.yaml``, each study of a comparison) is the parsed file
    dumped; it must parse again to the same study: integer ranges stay integer ranges."""
    for path in sorted(Path(__file__).parents[2].joinpath("studies").glob("*.yaml")):
        config = load_study(path)
        again = parse_study(yaml.safe_load(yaml.safe_dump(config.model_dump(mode="json"))))
        assert again == config, path.name


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
    assert "expected one of parameters, representation" in issues["method.fixed.projection_space"]
    method["fixed"] = {"steps": 5}
    method["search"] = {"projection_space": {"type": "categorical", "choices": ["representation", 3]}}
    with pytest.raises(ConfigError) as info:
        tiny_study(tmp_path, method=method)
    assert {issue.path for issue in info.value.issues} == {"method.search.projection_space.choices.1"}
    method["search"] = {
        "projection_space": {"type": "categorical", "choices": ["parameters", "representation"]}
    }
    assert tiny_study(tmp_path, method=method).method.search  # both spaces are fine


def test_check_rejects_out_of_range_hyperparameters_and_bad_ranges_with_their_paths(tmp_path: Path) -> None:
    from tune_unlearn.cli import main

    raw = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    raw["method"]["fixed"] = {"steps": -3, "refresh_every": 0, "projection_strength": 5, "batch_size": 32}
    raw["method"]["search"] = {
        "subspace_rank": {"type": "int", "low": 0, "high": 16},
        "retain_lr": {"type": "float", "low": 0.005, "high": 0.5, "log": True, "step": 0.01},
        "ascent_lr": {"type": "int", "low": 1, "high": 3},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_study(path)
    issues = {issue.path: issue.message for issue in info.value.issues}
    assert issues["method.fixed.steps"] == "expected an integer ≥ 1"
    assert issues["method.fixed.refresh_every"] == "expected an integer ≥ 1"
    assert issues["method.fixed.projection_strength"] == "expected a number in [0, 1]"
    assert "expected an integer ≥ 1, got 0" in issues["method.search.subspace_rank.low"]
    assert "log-scaled range takes no step" in issues["method.search.retain_lr.step"]
    assert "use 'type: float'" in issues["method.search.ascent_lr.type"]
    assert main(["check", str(path)]) == 2
    raw["method"]["search"] = {"subspace_rank": {"type": "int", "low": 1.0, "high": 16}}
    raw["method"]["fixed"] = {}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"subspace_rank.low: an integer range needs integer bounds"):
        load_study(path)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"name: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 9)"),
        (
            b"a: &a [x, x, x, x, x, x, x, x, x]\n"
            + b"".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n".encode()
                for i in range(9)
            ),
            "expands to more than 100000 values",
        ),
        (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested deeper than 32 levels"),
        (b"a: " + b"[" * 40 + b"]" * 40 + b"\n", "nested deeper than 32 levels"),
        (b"#" * (2 << 20), "larger than 1024 KiB"),
    ],
    ids=["latin-1", "billion-laughs", "deep-recursion", "deep", "huge"],
)
def test_untrusted_text_is_refused_quickly_with_one_clear_problem(
    tmp_path: Path, content: bytes, words: str
) -> None:
    import time

    from tune_unlearn.cli import main

    path = tmp_path / "study.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_study(path)
    assert main(["check", str(path)]) == 2
    assert time.monotonic() - started < 5


def test_a_full_mode_request_naming_target_tasks_and_a_factory_of_the_wrong_type_are_refused() -> None:
    raw = tiny_study(Path("/tmp")).model_dump(mode="json")
    raw["forget"] = {"mode": "full", "target_tasks": ["digit"], "where": {"digit": 3}}
    with pytest.raises(ConfigError, match=r"forget.target_tasks: full mode forgets from every task"):
        parse_study(raw)
    raw = tiny_study(Path("/tmp")).model_dump(mode="json")
    raw["problem"] = {"factory": "tests.config.test_config:not_a_problem"}
    with pytest.raises(ConfigError, match=r"problem.factory: .*returned str, not a Problem"):
        parse_study(raw)


def not_a_problem() -> str:
    return "a string, not a Problem"


@pytest.mark.parametrize(
    ("suite_text", "expected"),
    [(None, "validation.suite"), ("probes: [unclosed", "validation.suite (")],
)
def test_a_study_naming_a_missing_or_broken_suite_exits_2_with_nothing_written(
    tmp_path: Path, suite_text: str | None, expected: str
) -> None:
    from tune_unlearn.cli import main

    suite = tmp_path / "suite.yaml"
    if suite_text is not None:
        suite.write_text(suite_text)
    raw = tiny_study(tmp_path).model_dump(mode="json")
    raw["validation"] = {"suite": str(suite)}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_study(path)
    assert any(issue.path.startswith(expected) for issue in info.value.issues), info.value.issues
    assert main(["check", str(path)]) == 2
    assert main([str(path)]) == 2
    assert not (tmp_path / "out").exists()


def test_stopping_at_a_releasable_trial_needs_a_suite() -> None:
    raw = {
        "name": "s",
        "problem": {"name": "digits"},
        "forget": {"mode": "full", "where": {"digit": 3}},
        "method": {"name": "graddiff"},
        "validation": {"stop_at_releasable": True},
    }
    with pytest.raises(ConfigError) as info:
        parse_study(raw)
    by_path = {i.path: i.message for i in info.value.issues}
    assert "validation" in by_path and "name a suite file" in by_path["validation"]


def test_adam_makes_the_default_rates_absolute_and_refuses_a_gradient_relative_rate() -> None:
    """``optimizer: adam`` fixed: the default space's rates become Adam's absolute range, its
    other dimensions unchanged; an explicit rate relative to a gradient scale is refused at its
    path, since a per-weight step size times a gradient scale means nothing."""
    raw = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    raw["method"] = {"name": "graddiff", "fixed": {"steps": 20, "optimizer": "sgd"}}
    sgd = parse_study(raw).method.search
    raw["method"]["fixed"]["optimizer"] = "adam"
    adam = parse_study(raw).method.search
    assert sgd["retain_lr"].scale == "retain_gradient" and sgd["ascent_lr"].scale == "ascent_probe"
    for name in ("ascent_lr", "retain_lr"):
        assert (adam[name].low, adam[name].high, adam[name].log, adam[name].scale) == (1e-5, 1e-2, True, None)
    raw["method"] = {"name": "npo", "fixed": {"optimizer": "adam"}}
    npo = parse_study(raw).method.search
    assert npo["lr"].scale is None and npo["beta"].low == 0.01  # beta is no rate: unchanged
    raw["method"]["search"] = {
        "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True, "scale": "retain_gradient"}
    }
    with pytest.raises(ConfigError) as info:
        parse_study(raw)
    issues = {issue.path: issue.message for issue in info.value.issues}
    assert "per-weight step size" in issues["method.search.lr.scale"]
    raw["method"]["fixed"] = {}  # a written space keeps plain steps: the dimension is their kind
    assert parse_study(raw).method.search["lr"].scale == "retain_gradient"


def test_the_default_space_steps_with_adam_unless_the_file_names_an_optimizer_or_a_rate() -> None:
    """A file that leaves the space to the method searches it with Adam steps, fixed so the
    resolved file says so; naming ``optimizer: sgd``, fixing a rate (a number written for plain
    steps) or writing the space out keeps plain steps and their relative rates, as before."""
    raw = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    raw["method"] = {"name": "interference_aware", "fixed": {"steps": 20}}
    method = parse_study(raw).method
    assert method.fixed == {"steps": 20, "optimizer": "adam"} and method.is_default_search()
    assert {(d.low, d.high, d.scale) for n, d in method.search.items() if n.endswith("_lr")} == {
        (1e-5, 1e-2, None)
    }
    assert method.search["projection_strength"].high == 1.0  # no rate: unchanged
    raw["method"]["fixed"] = {"steps": 20, "optimizer": "sgd"}
    plain = parse_study(raw).method
    assert plain.fixed["optimizer"] == "sgd" and plain.search["retain_lr"].scale == "retain_gradient"
    raw["method"]["fixed"] = {"steps": 20, "ascent_lr": 0.01}
    fixed_rate = parse_study(raw).method
    assert "optimizer" not in fixed_rate.fixed and fixed_rate.search["retain_lr"].scale == "retain_gradient"
    raw["method"] = {"name": "shrink_perturb"}  # its own steps are Adam's already: nothing added
    assert "optimizer" not in parse_study(raw).method.fixed
