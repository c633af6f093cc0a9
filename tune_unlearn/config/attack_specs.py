"""What a study file or a suite file asks of the two recovery attacks (relearning, quantization):
the specs only, parsed with the rest of the file; the attacks themselves are
:mod:`tune_unlearn.references.attacks`."""

from __future__ import annotations

from pydantic import Field, field_validator

from tune_unlearn.config.schema import Strict


class RelearningSpec(Strict):
    """Fine-tune up to ``steps`` full-batch Adam steps (``lr``: the problem's fine-tuning rate,
    ``Problem.finetune_lr``, if unset) on ``sample_size`` forget (and, separately, retain)
    samples; compare the forget-set recovery with the first ``members`` retrains'. With
    ``calibrate`` (the default) the attack runs the largest number of steps up to ``steps`` that
    the retrains withstand: at that step and every earlier one, their mean recovery plus their
    seed band stays within ``margin``. An attack that honest deletion does not withstand cannot
    tell suppression from removal."""

    sample_size: int = Field(16, ge=1)
    steps: int = Field(10, ge=1, le=10_000)
    lr: float | None = Field(None, gt=0.0)
    margin: float = Field(0.1, ge=0.0, le=1.0)
    members: int = Field(5, ge=1)
    seed: int = 0
    calibrate: bool = True


class QuantizationSpec(Strict):
    """Round weights to each of ``bits``; compare the forget-set score's move toward the
    original with the first ``members`` retrains'."""

    bits: list[int] = Field(default_factory=lambda: [8, 4], min_length=1)
    margin: float = Field(0.1, ge=0.0, le=1.0)
    members: int = Field(5, ge=1)

    @field_validator("bits")
    @classmethod
    def _sensible_bits(cls, bits: list[int]) -> list[int]:
        for b in bits:
            if not 2 <= b <= 16:
                raise ValueError(f"bits must be between 2 and 16, got {b}")
        return bits
