"""Declared, constrained parameters of plugins: a method's hyperparameters, a probe family's
parameters.

Each parameter states its default, its type (from the default: ``int``, ``float``, or one of
``choices``) and its range. The same declaration checks a value at construction (a method or
probe built with ``refresh_every=0`` raises), and ``check`` checks a study file's ``fixed``
values and ``search`` ranges against it before anything runs, each problem with its dotted path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One declared parameter: its default, and what values it takes."""

    default: Any
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    doc: str = ""
    #: A learning rate: the gate's robustness check perturbs every searched rate.
    rate: bool = False
    #: The default search range (``low``, ``high``, and ``log`` or ``step``; or ``choices``):
    #: a method's default space is its hyperparameters that declare one.
    search: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False)

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "choice"
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "float"
        if isinstance(self.default, str):
            return "str"
        return "any"

    def describe(self) -> str:
        """What the parameter takes, in words: ``an integer ≥ 1``, ``a number in [0, 1]``."""
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.choices or ()))
        if self.kind == "bool":
            return "true or false"
        if self.kind in ("str", "any"):
            return "a string" if self.kind == "str" else "any value"
        noun = "an integer" if self.kind == "int" else "a number"
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if low and high:
            return f"{noun} in {low}, {high}"
        parts = [
            f"≥ {self.ge:g}" if self.ge is not None else "",
            f"> {self.gt:g}" if self.gt is not None else "",
        ]
        parts += [
            f"≤ {self.le:g}" if self.le is not None else "",
            f"< {self.lt:g}" if self.lt is not None else "",
        ]
        bound = " ".join(p for p in parts if p)
        return f"{noun} {bound}".strip()

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not a valid value of this parameter, or ``None``."""
        kind = self.kind
        if kind == "choice":
            return None if value in (self.choices or ()) else f"expected {self.describe()}"
        if kind == "bool":
            return None if isinstance(value, bool) else "expected true or false"
        if kind == "any":
            return None
        if kind == "str":
            return None if isinstance(value, str) else "expected a string"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected {self.describe()}"
        if kind == "int" and not isinstance(value, int):
            return f"expected {self.describe()} (an integer, not {value!r})"
        if not math.isfinite(value) or not self.in_range(float(value)):
            return f"expected {self.describe()}"
        return None

    def in_range(self, value: float) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )


def hyperparameter(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    doc: str = "",
    rate: bool = False,
    search: Mapping[str, Any] | None = None,
) -> Any:
    """A method's dataclass field with a declared range (``steps: int = hyperparameter(50, ge=1)``);
    ``rate=True`` marks a learning rate; ``search={"low": …, "high": …, "log": True}`` puts it in
    the method's default search space with that range (its type from the default's)."""
    declared = Param(
        default, ge, gt, le, lt, tuple(choices) if choices is not None else None, doc, rate, search
    )
    return dataclasses.field(default=default, metadata={"param": declared})


class DerivedSearch:
    """``default_search`` of a method class: one entry per hyperparameter that declares a
    ``search`` range, ``{"type": "float" | "int" | "categorical", **range}``. Derived, so a
    hyperparameter is declared once (its type, range, default and default search together)."""

    def __get__(self, instance: object, owner: type) -> dict[str, dict[str, object]]:
        space: dict[str, dict[str, object]] = {}
        if not dataclasses.is_dataclass(owner):  # read while @dataclass builds the class
            return space
        for name, param in declared_fields(owner).items():
            if param.search is None:
                continue
            kind = "categorical" if "choices" in param.search else param.kind
            space[name] = {"type": kind, **param.search}
        return space


def declared_fields(cls: type) -> dict[str, Param]:
    """Every field of a dataclass with its declaration (an undeclared field: its default's type,
    any value of it)."""
    return {f.name: f.metadata.get("param") or Param(f.default) for f in dataclasses.fields(cls) if f.init}


def problems(declared: Mapping[str, Param], values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(name, message)`` for every unknown name and every invalid value."""
    found = []
    for name, value in values.items():
        if name not in declared:
            found.append((name, f"no such parameter; valid: {', '.join(declared) or 'none'}"))
            continue
        message = declared[name].problem(value)
        if message is not None:
            found.append((name, f"{message}, got {value!r}"))
    return found


def search_range_problems(param: Param, dimension: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, message)`` for a search dimension that does not fit its parameter: a float range
    for an integer, bounds written as floats for an integer, bounds outside the declared range,
    a ``step`` on a log scale, categorical choices that are not valid values."""
    found: list[tuple[str, str]] = []
    kind = dimension.get("type", "float")
    if kind == "categorical":
        choices = dimension.get("choices")
        for i, choice in enumerate(choices if isinstance(choices, list) else []):
            message = param.problem(choice)
            if message is not None:
                found.append((f"choices.{i}", f"{message}, got {choice!r}"))
        return found
    if param.kind in ("choice", "bool", "str", "any"):
        return [("type", f"takes {param.describe()}: use 'type: categorical' with 'choices'")]
    if param.kind == "int" and kind != "int":
        return [("type", "is an integer hyperparameter; use 'type: int'")]
    if param.kind == "float" and kind == "int":
        return [("type", "is a real-valued hyperparameter; use 'type: float'")]
    if dimension.get("log") and dimension.get("step") is not None:
        found.append(("step", "a log-scaled range takes no step (Optuna samples it continuously)"))
    for key in ("low", "high", "step"):
        value = dimension.get(key)
        if kind == "int" and value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            found.append((key, f"an integer range needs integer bounds, got {value!r}"))
    for key in ("low", "high"):
        value = dimension.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not param.in_range(value):
            found.append(
                (key, f"outside the hyperparameter's range: expected {param.describe()}, got {value!r}")
            )
    return found
