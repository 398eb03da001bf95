"""The doctor's report for people (one line per finding, the fix under it) and for programs (JSON)."""

from __future__ import annotations

import json
from typing import Any

from mailtoaster.doctor.findings import DoctorReport, Finding, Severity, Suggestion, without_controls

_SEVERITY_WIDTH = max(len(severity.label) for severity in Severity) + 1
_INDENT = " " * (_SEVERITY_WIDTH + 2)


def render_text(report: DoctorReport) -> str:
    """``<severity> <check>: <message>`` per finding; under a problem, the record to publish in BIND
    and tinydns form and what else to do; a summary line last."""
    lines = [f"DNS check of {report.domain}"]
    for finding in report.findings:
        lines.extend(_finding_lines(finding))
    lines.append(_summary(report))
    return "\n".join(lines) + "\n"


def _finding_lines(finding: Finding) -> list[str]:
    message = without_controls(finding.message)
    lines = [f"{finding.severity.label.ljust(_SEVERITY_WIDTH)}  {finding.check}: {message}"]
    for suggestion in finding.suggestions:
        purpose = f" ({suggestion.purpose})" if suggestion.purpose else ""
        lines.append(f"{_INDENT}publish{purpose}:")
        lines.append(f"{_INDENT}  BIND:    {suggestion.bind}")
        lines.append(f"{_INDENT}  tinydns: {suggestion.tinydns}")
    if finding.hint:
        lead = "then" if finding.suggestions else "fix"
        lines.append(f"{_INDENT}{lead}: {without_controls(finding.hint)}")
    return lines


def _summary(report: DoctorReport) -> str:
    counts = ", ".join(_counted(report.count(severity), severity) for severity in Severity)
    return f"summary: {counts} (exit status {report.exit_code})"


def _counted(count: int, severity: Severity) -> str:
    plural = "s" if count != 1 and severity is not Severity.OK else ""
    return f"{count} {severity.label}{plural}"


def report_document(report: DoctorReport) -> dict[str, Any]:
    return {
        "domain": report.domain,
        "status": report.worst.label,
        "exit_code": report.exit_code,
        "counts": {severity.label: report.count(severity) for severity in Severity},
        "findings": [_finding_document(finding) for finding in report.findings],
    }


def _finding_document(finding: Finding) -> dict[str, Any]:
    return {
        "check": finding.check,
        "severity": finding.severity.label,
        "message": finding.message,
        "suggested_records": [_suggestion_document(s) for s in finding.suggestions],
        "hint": finding.hint,
    }


def _suggestion_document(suggestion: Suggestion) -> dict[str, Any]:
    return {
        "name": suggestion.name,
        "type": suggestion.rrtype,
        "ttl": suggestion.ttl,
        "data": suggestion.data,
        "purpose": suggestion.purpose,
        "bind": suggestion.bind,
        "tinydns": suggestion.tinydns,
    }


def render_json(report: DoctorReport) -> str:
    return json.dumps(report_document(report), indent=2) + "\n"
