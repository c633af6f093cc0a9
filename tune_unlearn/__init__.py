"""tune_unlearn: find and prove safe hyperparameters for machine unlearning."""

from __future__ import annotations

__version__ = "0.2.0"
