"""The validator suite: held-out probes, checks, masked collapse, reports.

This is the only package that reads the ``holdout`` split.
"""

from __future__ import annotations

from tune_unlearn.validation._checks import Candidate, CheckResult
from tune_unlearn.validation._context import Probe, ValidationContext
from tune_unlearn.validation._gate_checks import CHECKS, CheckInput, GateCheck, run_check
from tune_unlearn.validation._probes import PROBES, ProbeFamily
from tune_unlearn.validation._reports import (
    render_markdown,
    report_document,
    write_json,
    write_junit,
    write_markdown,
    write_reports,
)
from tune_unlearn.validation._run import ValidationReport, validate
from tune_unlearn.validation._suite import SuiteConfig
from tune_unlearn.validation._suite_file import load_suite

__all__ = [
    "CHECKS",
    "PROBES",
    "Candidate",
    "CheckInput",
    "CheckResult",
    "GateCheck",
    "Probe",
    "ProbeFamily",
    "SuiteConfig",
    "ValidationContext",
    "ValidationReport",
    "load_suite",
    "render_markdown",
    "report_document",
    "run_check",
    "validate",
    "write_json",
    "write_junit",
    "write_markdown",
    "write_reports",
]
