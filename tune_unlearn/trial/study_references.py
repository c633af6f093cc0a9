"""A study's reference models as one value: the original, the retrain members, and their
scores on the study's sets, loaded by :func:`load_study_references` from the plan in
:class:`~tune_unlearn.trial.inputs.StudyInputs` (trained or read from the cache)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from tune_unlearn.config.study_config import StudyConfig
from tune_unlearn.problems import MultiTaskModel, Problem
from tune_unlearn.references.reference_models import load_references
from tune_unlearn.references.training import Reference, model_from_state
from tune_unlearn.scoring.evaluation import PerSample
from tune_unlearn.scoring.metrics import trainable_vector
from tune_unlearn.trial.inputs import StudyInputs, evaluate_scored, load_inputs, score

__all__ = ["LoadedStudy", "StudyReferences", "load_study_references", "load_study_values"]


@dataclass(frozen=True)
class StudyReferences:
    """The loaded reference models of one study and what they score."""

    problem: Problem
    device: torch.device
    original: Reference
    #: The retrain ensemble (or a bank's members, or one given retrain); empty reference-free.
    retrain_members: tuple[Reference, ...]
    #: What was trained now, for the console (the rest came from the cache or the user's files).
    trained: tuple[str, ...]
    #: ``score/original/…``, and ``score/retrain/…`` as the members' mean with
    #: ``spread/retrain/…`` their sample standard deviation.
    scores: Mapping[str, float]
    #: Each member's per-sample results on the scored rows.
    retrain_results: tuple[PerSample, ...]
    #: The original's trainable parameters, flat: UIS is measured from it.
    original_vector: Tensor

    @property
    def has_retrain(self) -> bool:
        return bool(self.retrain_members)

    def by_kind(self) -> dict[str, Reference]:
        """``original`` and, with a retrain, ``retrain`` (the first member): the models a study
        writes to ``models/``."""
        kinds = {"original": self.original}
        if self.retrain_members:
            kinds["retrain"] = self.retrain_members[0]
        return kinds

    def model_from(self, state_dict: Mapping[str, Tensor]) -> MultiTaskModel:
        """A model of the study's problem with ``state_dict``, on its device."""
        return model_from_state(self.problem, state_dict, self.device)

    def original_model(self) -> MultiTaskModel:
        """A fresh copy of the original (unlearning edits it)."""
        return self.model_from(self.original.state_dict)

    def retrain_models(self) -> list[MultiTaskModel]:
        return [self.model_from(r.state_dict) for r in self.retrain_members]

    @property
    def compute_budget(self) -> float | None:
        """Training seconds of one retrain (the ensemble's mean; else the original): what
        unlearning must undercut. ``None`` when both came from checkpoints (cost unknown)."""
        seconds = [r.train_seconds for r in self.retrain_members if math.isfinite(r.train_seconds)]
        if seconds:
            return float(sum(seconds) / len(seconds))
        original = self.original.train_seconds
        return original if math.isfinite(original) else None


def load_study_references(inputs: StudyInputs, *, progress: bool = True) -> StudyReferences:
    """The plan's models (trained, cached or the user's) and their scores on the study's sets.
    Estimated training over ``references.budget_hours`` is refused before anything trains."""
    models = load_references(inputs.reference_plan, load_state=inputs.user_model_state, progress=progress)
    original = model_from_state(inputs.problem, models.original.state_dict, inputs.device)
    scores = score(inputs, "original", evaluate_scored(inputs, original))
    retrain_results = tuple(
        evaluate_scored(inputs, model_from_state(inputs.problem, r.state_dict, inputs.device))
        for r in models.retrain_members
    )
    if retrain_results:
        scores.update(ensemble_scores([score(inputs, "retrain", r) for r in retrain_results]))
    return StudyReferences(
        problem=inputs.problem,
        device=inputs.device,
        original=models.original,
        retrain_members=tuple(models.retrain_members),
        trained=tuple(models.trained),
        scores=scores,
        retrain_results=retrain_results,
        original_vector=trainable_vector(original),
    )


def ensemble_scores(per_member: list[dict[str, float]]) -> dict[str, float]:
    """The members' mean of every entry, and ``spread/…`` as the sample standard deviation of
    each ``score/…`` (0 for a single member): a band only for what is judged."""
    out: dict[str, float] = {}
    for key in per_member[0]:
        values = torch.tensor([m[key] for m in per_member], dtype=torch.float64)
        out[key] = float(values.mean())
        if key.startswith("score/"):
            out["spread/" + key.removeprefix("score/")] = float(values.std()) if len(values) > 1 else 0.0
    return out


class LoadedStudy(NamedTuple):
    """A study's two fixed values, loaded together: ``configuration_run.run(*loaded, params, ...)``."""

    inputs: StudyInputs
    references: StudyReferences


def load_study_values(config: StudyConfig, *, progress: bool = False, **options: Any) -> LoadedStudy:
    """:func:`~tune_unlearn.trial.inputs.load_inputs` (with its ``options``), then
    :func:`load_study_references` on them."""
    inputs = load_inputs(config, **options)
    return LoadedStudy(inputs, load_study_references(inputs, progress=progress))
