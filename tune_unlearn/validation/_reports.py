"""A validation report as JSON, JUnit XML (one test case per check) and Markdown."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tune_unlearn.validation._run import ValidationReport


def report_document(report: ValidationReport) -> dict[str, Any]:
    return {
        "suite": report.suite,
        "candidate": report.candidate,
        "verdict": report.verdict,
        "passed": report.passed,
        "masked_collapse": report.masked_collapse,
        "reference_mode": report.reference_mode,
        "cost_retrains": {"references": report.reference_cost, "candidate": report.candidate_cost},
        "checks": [asdict(r) for r in report.results],
    }


def write_json(report: ValidationReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report_document(report), indent=2, default=float) + "\n")


def write_junit(report: ValidationReport, path: Path) -> None:
    failures = sum(r.status == "fail" for r in report.results)
    errors = sum(r.status == "error" for r in report.results)
    skipped = sum(r.status == "skipped" for r in report.results)
    suite = ET.Element(
        "testsuite",
        name=f"tune_unlearn.{report.suite}",
        tests=str(len(report.results)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
    )
    for result in report.results:
        case = ET.SubElement(
            suite, "testcase", classname=f"tune_unlearn.{report.suite}", name=result.name, time="0"
        )
        if result.status == "fail":
            ET.SubElement(case, "failure", message=result.message).text = json.dumps(
                result.details, default=float
            )
        elif result.status == "error":
            ET.SubElement(case, "error", message=result.message)
        elif result.status == "skipped":
            ET.SubElement(case, "skipped", message=result.message)
        ET.SubElement(case, "system-out").text = result.message
    if report.masked_collapse:
        ET.SubElement(
            suite, "system-err"
        ).text = "masked collapse: static retain passes, a dependent probe proves damage"
    root = ET.Element("testsuites")
    root.append(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def render_markdown(report: ValidationReport) -> str:
    icon = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skipped": "N/A"}
    lines = [
        f"# Validation: {report.verdict.upper()}",
        "",
        f"Suite `{report.suite}` on `{report.candidate}`.",
        "",
        f"Judged in reference mode **{report.reference_mode}**. Cost of this verdict in retrain "
        f"units: reference models {report.reference_cost:.3f}, the candidate's unlearning "
        + (f"{report.candidate_cost:.3f}" if report.candidate_cost is not None else "unknown (a bare model)")
        + "; the study's search is in its `report.md`; validation's own passes are not counted.",
        "",
    ]
    if report.unjudged:
        lines += [
            "**Not judged in this reference mode**, though the suite demands them, so the gate "
            f"fails closed: {', '.join(r.name for r in report.unjudged)} (see each one's detail).",
            "",
        ]
    if report.masked_collapse:
        lines += [
            "**Masked collapse**: the static retain set (the samples the unlearning itself "
            "descends on) looks healthy, while held-out knowledge next to the forgotten data "
            "is damaged beyond the retrain ensemble: the lower confidence bound of a dependent "
            "probe's excess damage is above its threshold.",
            "",
        ]
    lines += ["| check | result | detail | judged on |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {icon[r.status]} | {r.message} | {r.judged} |" for r in report.results]
    probes = [r for r in report.results if "per_task" in r.details and r.name.startswith("probe/")]
    if probes:
        lines += [
            "",
            "## Probes per task",
            "",
            "Excess damage beyond the retrain ensemble, per judged task, with its bootstrap "
            "interval. Rule applied (`probe_rule: "
            + report.probe_rule
            + "`): a task fails when its "
            + ("interval's upper bound" if report.probe_rule == "upper_bound" else "estimated excess")
            + ", less the retrains' seed band, is above the threshold; damage is proven when the "
            "lower bound, less that band, is.",
            "",
            "| probe | task | samples | excess | interval | threshold |",
            "|---|---|---|---|---|---|",
        ]
        for r in probes:
            for task, d in r.details["per_task"].items():
                low, high = d["interval"]
                lines.append(
                    f"| {r.name} | {task} | {d['size']} | {d['excess']:+.4f} | "
                    f"[{low:+.4f}, {high:+.4f}] | {r.threshold:g} |"
                )
    return "\n".join(lines) + "\n"


def write_markdown(report: ValidationReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(report))


def write_reports(report: ValidationReport, json_path: Path, junit_path: Path, markdown_path: Path) -> None:
    """The report trio every judged candidate leaves: JSON, JUnit XML, Markdown."""
    write_json(report, json_path)
    write_junit(report, junit_path)
    write_markdown(report, markdown_path)
