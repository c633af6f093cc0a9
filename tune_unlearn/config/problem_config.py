"""Which problem a study runs on: a built-in one by name, or a user's factory."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from tune_unlearn.config.schema import Strict
from tune_unlearn.problems import Problem, build_problem


class ProblemConfig(Strict):
    """A built-in problem by ``name``, or a user's by ``factory: "package.module:function"``."""

    name: str | None = None
    factory: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> ProblemConfig:
        if (self.name is None) == (self.factory is None):
            raise ValueError("give exactly one of 'name' (a built-in problem) or 'factory'")
        return self

    def build(self) -> Problem:
        return build_problem(self.name, self.factory, self.params)
