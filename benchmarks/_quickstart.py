"""The quickstart's search as the benchmarks measure it: the study file's problem, request,
method, space and objectives, TPE (seed 0) as its sampler, with its first constraint only
(``forget_efficacy >= 0.9``) and no validation suite in the loop.

The shipped quickstart runs Optuna's GP sampler (TPE until 2026-12-05), constrains the
search to the release gate's thresholds and runs the gate on its front
(``benchmarks/one_verdict.py`` measures that); the benchmarks that
compare samplers, levers, overheads or methods add what each arm needs to this common base,
so that their recorded figures keep their meaning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

QUICKSTART = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"


def quickstart_search() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(QUICKSTART.read_text())
    raw["constraints"] = ["forget_efficacy >= 0.9"]
    raw["sampler"] = {"name": "tpe", "seed": 0}
    raw.pop("validation", None)
    return raw
