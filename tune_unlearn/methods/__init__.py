"""Unlearning methods by name. A new method is one module and one line here."""

from __future__ import annotations

from tune_unlearn.methods._base import (
    ADAM_RATES,
    DivergenceError,
    ForgetRetainLoss,
    LossMethod,
    StepLog,
    StepMonitor,
    UnlearningMethod,
    UnlearningSetup,
)
from tune_unlearn.methods._gradients import ParameterLayout, StepGradients
from tune_unlearn.methods._instance_orthogonalization import InstanceOrthogonalization
from tune_unlearn.methods._interference_aware import InterferenceAware
from tune_unlearn.methods._l1_sparse import L1Sparse
from tune_unlearn.methods._npo import NegativePreference
from tune_unlearn.methods._projected import ProjectedGradDiff
from tune_unlearn.methods._random_label import RandomLabel
from tune_unlearn.methods._rate_scale import (
    AscentProbeBudget,
    Scale,
    ScaleMeasurement,
    measure_rate_scales,
    measure_scales,
)
from tune_unlearn.methods._salun import SalUn
from tune_unlearn.methods._scrub import Scrub
from tune_unlearn.methods._shrink_perturb import ShrinkPerturb
from tune_unlearn.methods._simple import Finetune, GradDiff, GradientAscent
from tune_unlearn.methods._subspace_projection import SubspaceProjection
from tune_unlearn.methods._task_projection import TaskProjection
from tune_unlearn.problems import Batch
from tune_unlearn.registry import Registry, subclass_of

METHODS: Registry[type[UnlearningMethod]] = Registry(
    "method", "tune_unlearn.methods", accepts=subclass_of(UnlearningMethod)
)
for _method in (
    Finetune,
    GradientAscent,
    GradDiff,
    TaskProjection,
    SubspaceProjection,
    InstanceOrthogonalization,
    InterferenceAware,
    RandomLabel,
    L1Sparse,
    NegativePreference,
    SalUn,
    Scrub,
    ShrinkPerturb,
):
    METHODS.add(_method)

__all__ = [
    "ADAM_RATES",
    "METHODS",
    "AscentProbeBudget",
    "Batch",
    "DivergenceError",
    "Finetune",
    "ForgetRetainLoss",
    "GradDiff",
    "GradientAscent",
    "InstanceOrthogonalization",
    "InterferenceAware",
    "L1Sparse",
    "LossMethod",
    "NegativePreference",
    "ParameterLayout",
    "ProjectedGradDiff",
    "RandomLabel",
    "SalUn",
    "Scale",
    "ScaleMeasurement",
    "Scrub",
    "ShrinkPerturb",
    "StepGradients",
    "StepLog",
    "StepMonitor",
    "SubspaceProjection",
    "TaskProjection",
    "UnlearningMethod",
    "UnlearningSetup",
    "measure_rate_scales",
    "measure_scales",
]
