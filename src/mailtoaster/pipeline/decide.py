"""What the server does with an inbound message, decided from its authentication results and the
client's rules: pure functions of data, so every verdict can be explained and tested without a socket.

Order of the checks, first refusal wins: SPF (SPFBEHAVIOR), DomainKeys (DKVERIFY), DKIM mapped onto
the DomainKeys statuses (DKVERIFY), DMARC ``reject`` (when enforcement is on), forbidden attachments.
A temporary failure is returned only when nothing refuses outright.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailtoaster.auth.dmarc import Policy
from mailtoaster.policy import ACCEPT, ClientPolicy, Decision, dkim_status, dkverify_decision, spf_decision
from mailtoaster.verify import VerifyReport


@dataclass(frozen=True)
class InboundVerdict:
    decision: Decision
    quarantine: bool
    """DMARC asked for quarantine (and the configuration honours it): deliver to Junk."""
    checks: tuple[tuple[str, Decision], ...]
    """Every check's own decision, for the log line."""


def decide_inbound(
    report: VerifyReport,
    policy: ClientPolicy,
    *,
    dmarc_reject: bool,
    dmarc_quarantine: bool,
    forbidden_attachment: str | None,
) -> InboundVerdict:
    checks = [
        ("spf", _spf_decision(report, policy)),
        ("domainkeys", dkverify_decision(policy.dkverify, report.domainkeys.status)),
        ("dkim", dkverify_decision(policy.dkverify, dkim_status(report.dkim))),
        ("dmarc", _dmarc_decision(report, dmarc_reject)),
        ("content", _content_decision(forbidden_attachment)),
    ]
    decision = _first(checks, "reject") or _first(checks, "tempfail") or ACCEPT
    disposition = report.dmarc.disposition
    return InboundVerdict(
        decision=decision,
        quarantine=dmarc_quarantine and disposition is Policy.QUARANTINE,
        checks=tuple(checks),
    )


def _spf_decision(report: VerifyReport, policy: ClientPolicy) -> Decision:
    if not policy.checks_spf:  # level 0, or a relay client (qmail-spf skips those)
        return ACCEPT
    return spf_decision(policy.spf_behavior, report.spf.result.value, report.spf.explanation or "")


def _first(checks: list[tuple[str, Decision]], action: str) -> Decision | None:
    return next((decision for _, decision in checks if decision.action == action), None)


def _dmarc_decision(report: VerifyReport, enforce: bool) -> Decision:
    if not enforce or report.dmarc.disposition is not Policy.REJECT:
        return ACCEPT
    domain = report.dmarc.author_domain or "the author domain"
    return Decision("reject", 550, "5.7.1", f"rejected by DMARC policy for {domain}")


def _content_decision(forbidden_attachment: str | None) -> Decision:
    if forbidden_attachment is None:
        return ACCEPT
    return Decision("reject", 552, "5.3.4", f"message refused: {forbidden_attachment}")
