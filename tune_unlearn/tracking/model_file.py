"""An unlearned model on disk: its state dict (``MODEL.pt``) and, beside it, its sidecar
(``MODEL.json``): the study trial it came from (if any), its configuration, seed and metrics.
Written by ``run`` (``models/candidate.pt``) and ``apply``, read by ``gate``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_unlearn.references.training import save_state_dict
from tune_unlearn.report.outputs import write_json
from tune_unlearn.report.pareto import finite


@dataclass(frozen=True)
class Sidecar:
    """What is known about a saved model besides its weights."""

    params: dict[str, Any] | None = None
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    trial: int | None = None

    @classmethod
    def beside(cls, model_path: Path) -> Sidecar:
        """The sidecar of ``model_path``, or an empty one (a model from elsewhere)."""
        path = model_path.with_suffix(".json")
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} is not a readable sidecar: {error}") from None
        metrics = {k: float(v) for k, v in raw.get("metrics", {}).items() if isinstance(v, (int, float))}
        seed = raw.get("seed")
        return cls(raw.get("params"), int(seed) if seed is not None else None, metrics, raw.get("trial"))


def save_model(
    model: Any,
    path: Path,
    params: dict[str, Any],
    seed: int,
    metrics: dict[str, float],
    trial: int | None = None,
) -> None:
    """The state dict at ``path`` and its sidecar beside it."""
    save_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    sidecar: dict[str, Any] = {} if trial is None else {"trial": trial}
    sidecar.update({"params": params, "seed": seed, "metrics": {k: finite(v) for k, v in metrics.items()}})
    write_json(path.with_suffix(".json"), sidecar)
