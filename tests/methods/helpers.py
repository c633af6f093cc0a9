from __future__ import annotations

import torch

from tune_unlearn.methods._gradients import ParameterLayout, StepGradients
from tune_unlearn.problems import MultiTaskModel
from tune_unlearn.trial.study_references import LoadedStudy


def original_model(experiment: LoadedStudy) -> MultiTaskModel:
    return experiment.references.original_model()


def step_gradients(
    experiment: LoadedStudy, model: MultiTaskModel, seed: int = 0, batch: int = 12
) -> StepGradients:
    """Gradients of one step on seeded forget and retain batches of the tiny experiment."""
    setup = experiment.inputs.setup
    generator = torch.Generator().manual_seed(seed)
    forget = setup.batch(setup.forget, torch.randint(len(setup.forget), (batch,), generator=generator))
    retain = setup.batch(setup.retain, torch.randint(len(setup.retain), (batch,), generator=generator))
    return StepGradients(ParameterLayout(model), setup.tasks, setup.target, forget, retain)
