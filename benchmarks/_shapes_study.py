"""The shapes study the performance benchmarks share, so that they share cached references.

Partial deletion: circles (shape 0; half of them by default) are forgotten from the shape head;
their colour, position and size stay. Interference-aware unlearning, batch 64.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def shapes_study(
    samples: int,
    *,
    trials: int,
    steps: int | None,
    out: Path,
    cache: Path,
    search: dict[str, Any],
    fraction: float = 0.5,
    **overrides: Any,
) -> dict[str, Any]:
    return {
        "name": "shapes_benchmark",
        "problem": {"name": "shapes", "params": {"num_samples": samples}, "seed": 0},
        "forget": {"mode": "partial", "target_tasks": ["shape"], "where": {"shape": 0}, "fraction": fraction},
        "method": {
            "name": "interference_aware",
            "fixed": {
                **({"steps": steps} if steps is not None else {}),  # None: the search holds it
                "batch_size": 64,
                "refresh_every": 10,
                "subspace_rank": 4,
            },
            "search": search,
        },
        "n_trials": trials,
        "output": str(out),
        "references": {"cache_dir": str(cache)},
        **overrides,
    }
