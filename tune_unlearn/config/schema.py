"""The shared footing of every file a user writes (study files, suites): the strict pydantic
base model, the problem records with dotted paths, and a bounded YAML reader.

A study file is untrusted text: it may not be UTF-8, may be huge, may nest without end, or may
use YAML aliases to expand a few lines into billions of values. Each is refused with one clear
problem (exit 2) within a second or two, before pydantic or anything else walks the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

#: Bounds on a study or suite file: bytes read, nesting depth, values after alias expansion.
MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 100_000

#: Union member tags that pydantic puts in an error's location; dropped from dotted paths.
UNION_TAGS = frozenset({"ensemble", "flag", "path"})


class Strict(BaseModel):
    """Every section of a user's file: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a user's file, at a dotted path."""

    path: str
    message: str
    value: Any = None

    def __str__(self) -> str:
        shown = "" if self.value is None else f" (got {self.value!r})"
        return f"{self.path or '<file>'}: {self.message}{shown}"


class ConfigError(Exception):
    """A file with one or more problems; ``issues`` lists them all."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source, self.issues = source, issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{source}: {len(issues)} problem(s)\n{lines}")


def pydantic_issues(error: ValidationError) -> list[ConfigIssue]:
    issues = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"] if part not in UNION_TAGS)
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input") if item["type"] not in ("missing", "value_error") else None
        if isinstance(value, Mapping):
            value = None  # the message names the problem; echoing a whole section adds noise
        issues.append(ConfigIssue(path, message, value))
    return issues


def read_yaml(path: Path) -> Any:
    """A YAML file's content, bounded (see the module's docstring); :class:`ConfigError` when
    it cannot be read, is not UTF-8 text, does not parse, or exceeds a bound."""

    def refuse(message: str) -> ConfigError:
        return ConfigError(str(path), [ConfigIssue("", message)])

    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise refuse(f"cannot read: {error.strerror or error}") from None
    if len(data) > MAX_BYTES:
        raise refuse(f"larger than {MAX_BYTES // 1024} KiB: not a study file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise refuse(f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node)
        value = None if node is None else loader.construct_document(node)
    except RecursionError:
        raise refuse(f"nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as error:
        if "nesting depth" in str(error):  # libyaml's own limit, reached before ours
            raise refuse(f"nested deeper than {MAX_DEPTH} levels") from None
        raise refuse(f"not valid YAML: {error}") from None
    finally:
        loader.dispose()
    if duplicates:  # YAML keeps the last silently: `n_trials: 30` then `n_trials: 5` runs 5
        raise ConfigError(str(path), duplicates)
    problem = _size_problem(value)
    if problem is not None:
        raise refuse(problem)
    return value


def _duplicate_keys(root: yaml.Node | None) -> list[ConfigIssue]:
    """Every key given twice in one mapping, at its dotted path, with both lines."""
    issues: list[ConfigIssue] = []
    stack: list[tuple[yaml.Node, str]] = [] if root is None else [(root, "")]
    visited: set[int] = set()  # an alias reaches its anchor's node again: walk it once
    while stack:
        node, path = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], yaml.Node] = {}
            for key, child in node.value:
                if key.tag == "tag:yaml.org,2002:merge" or not isinstance(key, yaml.ScalarNode):
                    stack.append((child, path))
                    continue
                dotted = f"{path}.{key.value}" if path else str(key.value)
                earlier = first.setdefault((key.tag, key.value), key)
                if earlier is not key:
                    lines = f"lines {earlier.start_mark.line + 1} and {key.start_mark.line + 1}"
                    issues.append(ConfigIssue(dotted, f"given twice ({lines}); give it once"))
                stack.append((child, dotted))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{path}.{i}" if path else str(i)) for i, child in enumerate(node.value))
    return sorted(issues, key=lambda issue: issue.path)


def _size_problem(value: Any) -> str | None:
    """Walk the loaded data as a consumer would, counting every value each time it is reached
    (an alias reaches its anchor's values again): too deep or too many values is a problem."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            return f"expands to more than {MAX_VALUES} values (YAML aliases repeating an anchor?)"
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(node, Mapping):
            stack.extend((child, depth + 1) for pair in node.items() for child in pair)
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return None
