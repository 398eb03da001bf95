"""The DNS doctor: check what a mail domain publishes — MX and reverse DNS, SPF, DomainKeys and DKIM
keys against the key store, the DomainKeys, ADSP and DMARC policies — and say, record by record, what
is wrong and the record to publish instead (``mailtoaster check``).

The checks are functions over the injected :class:`~mailtoaster.dns.Resolver` and the key store; they
return :class:`Finding` values as plain data, which :mod:`.render` writes as text or JSON.
"""

from mailtoaster.doctor.findings import DoctorReport, Finding, Severity, Suggestion
from mailtoaster.doctor.render import render_json, render_text, report_document
from mailtoaster.doctor.run import check_domain

__all__ = [
    "DoctorReport",
    "Finding",
    "Severity",
    "Suggestion",
    "check_domain",
    "render_json",
    "render_text",
    "report_document",
]
