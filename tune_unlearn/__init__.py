"""tune_unlearn: find and prove safe hyperparameters for machine unlearning.

The public API, importable from here (``from tune_unlearn import run_study``). Names resolve on
first use, so ``import tune_unlearn`` stays light and no module of the package imports this one
for more than ``__version__``. Anything not listed in ``__all__`` is internal.
"""

from __future__ import annotations

import importlib
from typing import Any

from tune_unlearn._version import __version__

#: Public name → the module that defines it.
_EXPORTS = {
    # reading a study file
    "load_study": "tune_unlearn.study_file",
    "parse_study": "tune_unlearn.config.study_config",
    "StudyConfig": "tune_unlearn.config.study_config",
    "ConfigError": "tune_unlearn.config.schema",
    # running, reading back, gating
    "run_study": "tune_unlearn.study.runner",
    "run_worker": "tune_unlearn.study.runner",
    "StudyRun": "tune_unlearn.study.runner",
    "rebuild_report": "tune_unlearn.study.replay",
    "apply_configuration": "tune_unlearn.study.replay",
    "run_gate": "tune_unlearn.gate",
    "run_comparison": "tune_unlearn.study.compare",
    "run_stream": "tune_unlearn.study.stream",
    "load_suite": "tune_unlearn.validation",
    # plugin bases, their registries and the declarations they use
    "Problem": "tune_unlearn.problems",
    "DatasetInputs": "tune_unlearn.problems",
    "MultiTaskModel": "tune_unlearn.problems",
    "MultiTaskData": "tune_unlearn.problems",
    "Task": "tune_unlearn.problems",
    "SegmentationTask": "tune_unlearn.problems",
    "DepthTask": "tune_unlearn.problems",
    "NormalsTask": "tune_unlearn.problems",
    "TrainRecipe": "tune_unlearn.problems",
    "PROBLEMS": "tune_unlearn.problems",
    "UnlearningMethod": "tune_unlearn.methods",
    "ProjectedGradDiff": "tune_unlearn.methods",
    "LossMethod": "tune_unlearn.methods",
    "StepGradients": "tune_unlearn.methods",
    "METHODS": "tune_unlearn.methods",
    "hyperparameter": "tune_unlearn.hyperparameters",
    "Param": "tune_unlearn.hyperparameters",
    "Metric": "tune_unlearn.scoring.metrics",
    "MetricContext": "tune_unlearn.scoring.metrics",
    "METRICS": "tune_unlearn.scoring.metrics",
    "ProbeFamily": "tune_unlearn.validation",
    "Probe": "tune_unlearn.validation",
    "ValidationContext": "tune_unlearn.validation",
    "PROBES": "tune_unlearn.validation",
    # conformance checks for plugins
    "testing": "tune_unlearn.testing",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tune_unlearn' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if module.endswith(f".{name}") else getattr(loaded, name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
