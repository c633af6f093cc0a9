"""Reading a study file: the bounded YAML reader, the schema (:mod:`tune_unlearn.config.study_config`), and
the validation suite the file names, all checked before anything runs, every problem with its
dotted path."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tune_unlearn.config.schema import ConfigError, ConfigIssue, read_yaml
from tune_unlearn.config.study_config import StudyConfig, parse_study


def load_study(path: Path) -> StudyConfig:
    """Read and validate a study file; :class:`ConfigError` lists every problem, the named
    suite's included. Relative paths in it are relative to the working folder."""
    raw = read_yaml(path)
    issues: list[ConfigIssue] = []
    config = None
    try:
        config = parse_study(raw, str(path))
    except ConfigError as error:
        issues.extend(error.issues)
    if isinstance(raw, Mapping):
        issues.extend(suite_issues(raw))
    if issues or config is None:
        raise ConfigError(str(path), issues)
    return config


def suite_issues(raw: Mapping[str, Any]) -> Iterator[ConfigIssue]:
    """Problems of the suite that ``validation.suite`` names, under that path."""
    validation = raw.get("validation")
    suite = validation.get("suite") if isinstance(validation, Mapping) else None
    if not isinstance(suite, str):
        return
    from tune_unlearn.validation import load_suite

    try:
        load_suite(Path(suite))
    except ConfigError as error:
        for issue in error.issues:
            where = f".{issue.path}" if issue.path else ""
            yield ConfigIssue(f"validation.suite ({suite}){where}", issue.message, issue.value)
