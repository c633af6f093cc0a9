"""``list``: every registered problem, method, metric and probe family, plugins included."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from tune_unlearn.methods import METHODS
from tune_unlearn.problems import PROBLEMS
from tune_unlearn.registry import Registry
from tune_unlearn.scoring.metrics import METRICS
from tune_unlearn.validation import PROBES


def _summary(entry: Any) -> str:
    doc = inspect.getdoc(entry) or ""
    return " ".join(doc.split("\n\n")[0].split())


#: What each ``scale:`` of a search range is, in ``check``'s words (methods/_rate_scale.py).
SCALE_WORDS = {
    "forget_gradient": "the original's forget_gradient scale ‖θ‖/‖g‖",
    "retain_gradient": "the original's retain_gradient scale ‖θ‖/‖g‖",
    "retain_probe": "the retain_probe scale (the largest probed retain rate every task survives)",
    "ascent_probe": "the ascent_probe scale (the largest probed ascent rate the collapse guard lets finish)",
    "retain_curvature": "the retain_curvature scale (2/λ_max, the retain loss's stability limit)",
}


def describe_search(space: Mapping[str, Any], indent: str = "") -> str:
    """A search space, one dimension a line: ``lr: float in [0.001, 0.5], log``."""
    lines = []
    for name, dimension in space.items():
        d = dimension if isinstance(dimension, Mapping) else dimension.model_dump()
        if d.get("type") == "categorical":
            lines.append(f"{indent}{name}: one of {', '.join(map(str, d.get('choices') or []))}")
            continue
        spacing = ", log" if d.get("log") else f", step {d['step']:g}" if d.get("step") else ""
        relative = f" × {SCALE_WORDS.get(d['scale'], d['scale'])}" if d.get("scale") else ""
        lines.append(
            f"{indent}{name}: {d.get('type', 'float')} in [{d['low']:g}, {d['high']:g}]{relative}{spacing}"
        )
    return "\n".join(lines)


def render_catalog() -> str:
    lines: list[str] = []
    lines.append("methods (hyperparameter=default: what it takes):")
    for name in METHODS:
        method = METHODS.get(name)
        lines += [f"  {name}: {_summary(method)}"]
        lines += [
            f"      {key}={param.default}: {param.describe()}" for key, param in method.constraints().items()
        ]
        study_fixed = method.study_fixed({})
        if method.default_search:
            steps = f" (optimizer: {study_fixed['optimizer']})" if "optimizer" in study_fixed else ""
            space = method.default_space(study_fixed)
            lines += [f"    default search{steps}:", describe_search(space, indent="      ")]
            plain = {k: v for k, v in method.default_search.items() if v != space.get(k)}
            if plain:
                lines += [
                    "    with optimizer: sgd (or a rate the file fixes), instead:",
                    describe_search(plain, indent="      "),
                ]
    lines.append("problems:")
    lines += [f"  {name}: {_summary(PROBLEMS.get(name))}" for name in PROBLEMS]
    lines.append("metrics:")
    for name in METRICS:
        metric = METRICS.get(name)
        lines.append(f"  {name} ({metric.direction}): {_summary(metric)}")
    lines.append("probe families (parameter=default: what it takes):")
    for name in PROBES:
        family = PROBES.get(name)
        lines += [f"  {name}: {_summary(family)}"]
        lines += [
            f"      {key}={param.default!r}: {param.describe()}" for key, param in family.parameters.items()
        ]
    broken = _broken()
    if broken:
        lines.append("plugins that failed to load:")
        lines += [f"  {line}" for line in broken]
    return "\n".join(lines)


def _broken() -> list[str]:
    registries: list[Registry[Any]] = [METHODS, PROBLEMS, METRICS, PROBES]
    return [f"{r.kind} {name}: {why}" for r in registries for name, why in sorted(r.broken.items())]
