"""The validator suite: held-out probes, checks, masked collapse, reports.

This is the only package that reads the ``holdout`` split.
"""

from __future__ import annotations

from tune_unlearn.validation._checks import Candidate, CheckResult
from tune_unlearn.validation._context import Probe, ValidationContext
from tune_unlearn.validation._probes import PROBES, ProbeFamily
from tune_unlearn.validation._reports import (
    render_markdown,
    report_document,
    write_json,
    write_junit,
    write_markdown,
)
from tune_unlearn.validation._run import ValidationReport, validate
from tune_unlearn.validation._suite import SuiteConfig, load_suite

__all__ = [
    "PROBES",
    "Candidate",
    "CheckResult",
    "Probe",
    "ProbeFamily",
    "SuiteConfig",
    "ValidationContext",
    "ValidationReport",
    "load_suite",
    "render_markdown",
    "report_document",
    "validate",
    "write_json",
    "write_junit",
    "write_markdown",
]
