"""Run every authentication check on one message and its envelope, and render the result.

This is what ``mailtoaster verify`` prints and what the reflector address will send back: a summary
line per check (the mail-reflector layout postmasters know), the details behind each verdict, and
the ``Authentication-Results`` header the server would add. Later checks (DKIM, DMARC, spam) add
their field to :class:`VerifyReport` and a line to :data:`SUMMARY_LABELS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mailtoaster.auth.results import authentication_results, senderid_result, spf_result
from mailtoaster.auth.senderid import SenderIdOutcome, check_pra
from mailtoaster.auth.spf import SpfOptions, SpfOutcome, check_spf, received_spf
from mailtoaster.dns import IPAddress, Resolver
from mailtoaster.message import Message

SUMMARY_LABELS = {"spf": "SPF check", "senderid": "Sender-ID check"}
"""JSON key -> summary label, in report order."""

SUMMARY_WIDTH = len("SpamAssassin check: ")
"""Results start in this column, as in the classic reflector reports (whose longest label is that)."""


@dataclass(frozen=True)
class Envelope:
    ip: IPAddress
    helo: str
    mail_from: str
    """The reverse-path without angle brackets; ``""`` is the null sender."""


@dataclass(frozen=True)
class VerifyReport:
    envelope: Envelope
    authserv_id: str
    spf: SpfOutcome
    senderid: SenderIdOutcome
    authentication_results: str
    received_spf: str
    defects: tuple[str, ...] = field(default=())

    def results(self) -> dict[str, str]:
        """Check name -> RFC result keyword, in report order."""
        return {"spf": self.spf.result.value, "senderid": self.senderid.result.value}


async def verify_message(
    message: Message, envelope: Envelope, resolver: Resolver, authserv_id: str
) -> VerifyReport:
    options = SpfOptions(receiver=authserv_id)
    spf = await check_spf(resolver, envelope.ip, envelope.mail_from, envelope.helo, options)
    senderid = await check_pra(resolver, envelope.ip, message, envelope.helo, options)
    header = authentication_results(authserv_id, [spf_result(spf), senderid_result(senderid)])
    return VerifyReport(
        envelope=envelope,
        authserv_id=authserv_id,
        spf=spf,
        senderid=senderid,
        authentication_results=header,
        received_spf="Received-SPF: " + received_spf(spf, authserv_id),
        defects=message.defects,
    )


# --- rendering -----------------------------------------------------------------------------------


def render_summary(report: VerifyReport) -> list[str]:
    width = max(SUMMARY_WIDTH, *(len(label) + 2 for label in SUMMARY_LABELS.values()))
    results = report.results()
    return [f"{(label + ':').ljust(width)}{results[key]}" for key, label in SUMMARY_LABELS.items()]


def _detail_block(title: str, rows: list[tuple[str, object]]) -> list[str]:
    shown = [(name, value) for name, value in rows if value not in (None, "")]
    width = max(len(name) for name, _ in shown) + 2
    return [title, "-" * len(title)] + [f"  {(name + ':').ljust(width)}{value}" for name, value in shown]


def _spf_rows(outcome: SpfOutcome) -> list[tuple[str, object]]:
    return [
        ("result", outcome.result.value),
        ("identity", f"{outcome.identity} {outcome.sender}"),
        ("domain", outcome.domain),
        ("client", outcome.ip),
        ("record", outcome.record),
        *[("via", f"{domain}: {record}") for domain, record in outcome.records_used[1:]],
        ("matched", outcome.mechanism),
        ("explanation", outcome.explanation),
        ("reason", outcome.reason),
        ("DNS lookups", f"{outcome.dns_lookups} (void: {outcome.void_lookups})"),
    ]


def _senderid_rows(outcome: SenderIdOutcome) -> list[tuple[str, object]]:
    pra = outcome.pra
    source = f" (from the {pra.header} header)" if pra is not None and pra.ok else ""
    rows: list[tuple[str, object]] = [
        ("result", outcome.result.value),
        ("scope", outcome.scope.value),
        ("PRA", (outcome.identity + source) if outcome.identity else None),
    ]
    if outcome.spf is not None:
        rows += [
            ("record", outcome.spf.record),
            ("matched", outcome.spf.mechanism),
            ("explanation", outcome.spf.explanation),
        ]
    return [*rows, ("reason", outcome.reason)]


def render_text(report: VerifyReport) -> str:
    lines = render_summary(report)
    lines += ["", *_detail_block("SPF details", _spf_rows(report.spf))]
    lines += ["", *_detail_block("Sender-ID details", _senderid_rows(report.senderid))]
    if report.defects:
        lines += ["", "Message defects", "---------------", *(f"  {d}" for d in report.defects)]
    lines += ["", report.received_spf, report.authentication_results]
    return "\n".join(lines) + "\n"


def _spf_json(outcome: SpfOutcome) -> dict[str, Any]:
    return {
        "result": outcome.result.value,
        "identity": outcome.identity,
        "sender": outcome.sender,
        "domain": outcome.domain,
        "client_ip": str(outcome.ip),
        "helo": outcome.helo,
        "record": outcome.record,
        "mechanism": outcome.mechanism,
        "explanation": outcome.explanation,
        "reason": outcome.reason,
        "dns_lookups": outcome.dns_lookups,
        "void_lookups": outcome.void_lookups,
        "records_used": [{"domain": domain, "record": record} for domain, record in outcome.records_used],
    }


def _senderid_json(outcome: SenderIdOutcome) -> dict[str, Any]:
    pra = outcome.pra
    return {
        "result": outcome.result.value,
        "scope": outcome.scope.value,
        "pra": outcome.identity or None,
        "pra_header": pra.header if pra is not None else None,
        "record": outcome.spf.record if outcome.spf else None,
        "mechanism": outcome.spf.mechanism if outcome.spf else None,
        "explanation": outcome.spf.explanation if outcome.spf else None,
        "reason": outcome.reason,
    }


def render_json(report: VerifyReport) -> str:
    document = {
        "spf": {**_spf_json(report.spf), "received_spf": report.received_spf},
        "senderid": _senderid_json(report.senderid),
        "authentication_results": report.authentication_results,
        "defects": list(report.defects),
    }
    return json.dumps(document, indent=2) + "\n"
