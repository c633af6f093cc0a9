"""Reading a validator suite file: the schema (:mod:`._suite`), the probe families' and the
gate checks' declared parameters, every problem with its dotted path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from tune_unlearn.config.schema import ConfigError, ConfigIssue, pydantic_issues, read_yaml
from tune_unlearn.hyperparameters import problems
from tune_unlearn.registry import UnknownNameError
from tune_unlearn.validation._gate_checks import CHECKS
from tune_unlearn.validation._probes import PROBES
from tune_unlearn.validation._suite import SuiteConfig

_RENAMED_KEYS = {
    ("uis_budget", "max_excess_uis"): "uis_budget.max_excess_uis is now max_uis: UIS is the parameter "
    "shift ‖θ_u − θ_o‖/‖θ_o‖ (tune_unlearn ≥ 0.2), judged on its own, not against a retrain",
}


def _check_issues(suite: SuiteConfig) -> Iterator[ConfigIssue]:
    """``checks.<name>``: a registered plugin check, with parameters it declares."""
    for name, params in suite.checks.items():
        try:
            check = CHECKS.get(name)
        except UnknownNameError as error:
            yield ConfigIssue(f"checks.{name}", str(error))
            continue
        if check.suite_key is not None:
            yield ConfigIssue(f"checks.{name}", f"a built-in check: its settings go under {check.suite_key}")
            continue
        for key, message in problems(check.parameters, params):
            yield ConfigIssue(f"checks.{name}.{key}", message)


def load_suite(path: Path) -> SuiteConfig:
    """Read and validate a suite file; :class:`ConfigError` lists every problem."""
    raw = read_yaml(path)
    renamed = [
        ConfigIssue(".".join(keys), message)
        for keys, message in _RENAMED_KEYS.items()
        if isinstance(raw, dict) and isinstance(raw.get(keys[0]), dict) and keys[1] in raw[keys[0]]
    ]
    if renamed:
        raise ConfigError(str(path), renamed)
    try:
        suite = SuiteConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(str(path), pydantic_issues(error)) from None
    issues = [
        ConfigIssue(f"probes.{name}.params.{key}", message)
        for name, spec in suite.probes.items()
        for key, message in problems(PROBES.get(name).parameters, spec.params)
    ]
    issues += list(_check_issues(suite))
    if issues:
        raise ConfigError(str(path), issues)
    return suite
