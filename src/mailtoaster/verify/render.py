"""The verify report as text (summary lines, then details per check) and as JSON.

Each check has a rows function (for the text details) and a JSON function; both read the outcome
objects only, so the reflector can render the same report.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mailtoaster.auth.adsp import AdspOutcome
from mailtoaster.auth.arc import ArcOutcome
from mailtoaster.auth.dkim import DkimVerdict
from mailtoaster.auth.dmarc import DmarcOutcome
from mailtoaster.auth.domainkeys import DomainKeysOutcome
from mailtoaster.auth.results import key_description
from mailtoaster.auth.senderid import SenderIdOutcome
from mailtoaster.auth.spf import SpfOutcome
from mailtoaster.verify.report import VerifyReport

if TYPE_CHECKING:  # the spam package imports mailtoaster.verify: a run-time import would be a cycle
    from mailtoaster.spam.scoring import SpamScore

SUMMARY_LABELS = {
    "spf": "SPF check",
    "senderid": "Sender-ID check",
    "domainkeys": "DomainKeys check",
    "dkim": "DKIM check",
    "adsp": "ADSP check",
    "dmarc": "DMARC check",
    "arc": "ARC check",
}
"""JSON key -> summary label, in report order."""

SPAM_LABEL = "SpamAssassin check"
"""The summary line of the spam filter's verdict (``ham`` or ``spam``), when the report has one."""
SUMMARY_WIDTH = len(SPAM_LABEL + ": ")
"""Results start in this column, as in the classic reflector reports (whose longest label is that)."""


# --- rendering -----------------------------------------------------------------------------------


def render_summary(report: VerifyReport, spam: SpamScore | None = None) -> list[str]:
    width = max(SUMMARY_WIDTH, *(len(label) + 2 for label in SUMMARY_LABELS.values()))
    results = report.results()
    lines = [f"{(label + ':').ljust(width)}{results[key]}" for key, label in SUMMARY_LABELS.items()]
    if spam is not None:
        lines.append(f"{(SPAM_LABEL + ':').ljust(width)}{spam.verdict}")
    return lines


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


def _domainkeys_rows(outcome: DomainKeysOutcome) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [("result", f"{outcome.result.value} ({outcome.status.name})")]
    for verdict in outcome.verdicts:
        rows.append(("signature", f"d={verdict.domain} s={verdict.selector} c={verdict.canonicalization}: "
                     f"{verdict.status.name}, {verdict.reason}"))  # fmt: skip
    if not outcome.verdicts:
        rows.append(("reason", outcome.reason))
    if outcome.sending_address:
        rows.append(("sender", f"{outcome.sending_address} (from the {outcome.sending_header} header)"))
    if outcome.key_testing:
        rows.append(("key", "testing (t=y)"))
    policy = outcome.policy
    if policy is not None and (policy.found or policy.error):
        rows.append(("policy", f"{policy.domain}: {policy.record or policy.error}"))
    if outcome.suspicious:
        rows.append(("note", "the domain says it signs all mail, and no signature verified"))
    return rows


def _dkim_rows(verdicts: tuple[DkimVerdict, ...]) -> list[tuple[str, object]]:
    if not verdicts:
        return [("result", "none"), ("reason", "the message has no DKIM-Signature")]
    rows: list[tuple[str, object]] = []
    for number, verdict in enumerate(verdicts, start=1):
        key = f" {key_description(verdict)}" if verdict.key_bits else ""
        names = f"d={verdict.domain} s={verdict.selector} a={verdict.algorithm}{key}"
        rows.append((f"signature {number}", f"{verdict.result.value}: {names}, {verdict.reason}"))
        if verdict.testing:
            rows.append(("", "the key is in testing mode (t=y)"))
        if verdict.body_length is not None:
            rows.append(("", _body_length_note(verdict)))
    return rows


def _body_length_note(verdict: DkimVerdict) -> str:
    if verdict.unsigned_body_octets is None:
        return f"l={verdict.body_length}: the body was not checked"
    return f"l={verdict.body_length}: {verdict.unsigned_body_octets} body octets are not signed"


def _adsp_rows(outcome: AdspOutcome) -> list[tuple[str, object]]:
    return [
        ("result", outcome.result.value),
        ("author domain", outcome.domain),
        ("record", outcome.record),
        ("reason", outcome.reason),
    ]


def _aligned(value: bool | None) -> str | None:
    return None if value is None else ("aligned" if value else "not aligned")


def _dmarc_rows(outcome: DmarcOutcome) -> list[tuple[str, object]]:
    signature, policy = outcome.dkim_signature, outcome.requested_policy
    dkim_identifier = f"d={signature.domain} s={signature.selector}" if signature is not None else None
    rows: list[tuple[str, object]] = [
        ("result", outcome.result.value),
        ("author domain", outcome.author_domain),
        ("policy domain", outcome.policy_domain),
        ("org domain", outcome.organizational_domain),
        ("record", outcome.record_text),
        ("policy", f"{outcome.policy_tag}={policy.value}" if policy else None),
        ("SPF", f"{outcome.spf_domain}: {_aligned(outcome.spf_aligned)}" if outcome.spf_domain else None),
        ("DKIM", f"{dkim_identifier}: {_aligned(outcome.dkim_aligned)}" if dkim_identifier else None),
        ("disposition", outcome.disposition.value),
        ("reason", outcome.reason),
    ]
    return rows + [("note", note) for note in outcome.notes]


def _arc_rows(outcome: ArcOutcome) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [("result", outcome.result.value), ("sets", outcome.sets or None)]
    if outcome.oldest_pass:
        rows.append(("oldest pass", outcome.oldest_pass))
    for details in outcome.details:
        seal = f"sealed by {details.seal_domain} (s={details.seal_selector}, cv={details.chain_validation})"
        rows.append((f"i={details.instance}", f"{seal}; {details.authserv_id}: {details.results}"))
    return [*rows, ("reason", outcome.reason)]


def _spam_rows(score: SpamScore) -> list[tuple[str, object]]:
    bayes = "not enough learned" if score.bayes is None else f"{score.bayes:.4f}"
    rows: list[tuple[str, object]] = [
        ("result", f"{score.verdict}, {score.points:.1f} points (required {score.required:.1f})"),
        ("bayes", bayes),
    ]
    rows += [(hit.name, f"{hit.points:+g}  {hit.description}") for hit in score.hits]
    return rows


def render_text(report: VerifyReport, spam: SpamScore | None = None) -> str:
    """The summary, the details of each check and the fields the server would add; with ``spam``
    (the spam filter's score) its summary line, its details and its X-Spam-* fields too."""
    lines = render_summary(report, spam)
    for title, rows in (
        ("SPF details", _spf_rows(report.spf)),
        ("Sender-ID details", _senderid_rows(report.senderid)),
        ("DomainKeys details", _domainkeys_rows(report.domainkeys)),
        ("DKIM details", _dkim_rows(report.dkim)),
        ("ADSP details", _adsp_rows(report.adsp)),
        ("DMARC details", _dmarc_rows(report.dmarc)),
        ("ARC details", _arc_rows(report.arc)),
    ):
        lines += ["", *_detail_block(title, rows)]
    if spam is not None:
        lines += ["", *_detail_block("SpamAssassin details", _spam_rows(spam))]
    if report.defects:
        lines += ["", "Message defects", "---------------", *(f"  {d}" for d in report.defects)]
    lines += ["", report.received_spf, report.authentication_results]
    if spam is not None:
        lines += [f"{name}: {value}" for name, value in _spam_fields(spam)]
    return "\n".join(lines) + "\n"


def _spam_fields(score: SpamScore) -> list[tuple[str, str]]:
    from mailtoaster.spam.scoring import spam_fields  # the spam package imports this one's package

    return spam_fields(score)


def _spam_json(score: SpamScore) -> dict[str, Any]:
    return {
        "result": score.verdict,
        "score": round(score.points, 3),
        "required": score.required,
        "tests": score.tests,
        "hits": [{"name": hit.name, "points": hit.points} for hit in score.hits],
        "bayes": None if score.bayes is None else round(score.bayes, 6),
        "fields": dict(_spam_fields(score)),
    }


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


def _domainkeys_json(outcome: DomainKeysOutcome) -> dict[str, Any]:
    policy = outcome.policy
    return {
        "result": outcome.result.value,
        "status": outcome.status.name,
        "letter": outcome.status.letter,
        "reason": outcome.reason,
        "sending_header": outcome.sending_header or None,
        "sending_address": outcome.sending_address or None,
        "key_testing": outcome.key_testing,
        "suspicious": outcome.suspicious,
        "policy": None if policy is None else {"domain": policy.domain, "record": policy.record or None,
                                                "signs_all": policy.signs_all, "testing": policy.testing},
        "signatures": [
            {"status": v.status.name, "letter": v.status.letter, "result": v.result.value, "domain": v.domain,
             "selector": v.selector, "canonicalization": v.canonicalization, "reason": v.reason}
            for v in outcome.verdicts
        ],
    }  # fmt: skip


def _dkim_json(verdict: DkimVerdict) -> dict[str, Any]:
    return {
        "result": verdict.result.value,
        "domain": verdict.domain,
        "selector": verdict.selector,
        "algorithm": verdict.algorithm,
        "reason": verdict.reason,
        "identity": verdict.identity or None,
        "canonicalization": verdict.canonicalization or None,
        "key_bits": verdict.key_bits,
        "testing": verdict.testing,
        "body_length": verdict.body_length,
        "unsigned_body_octets": verdict.unsigned_body_octets,
        "signed_headers": list(verdict.signed_headers),
        "timestamp": verdict.timestamp,
        "expiration": verdict.expiration,
    }


def _adsp_json(outcome: AdspOutcome) -> dict[str, Any]:
    return {
        "result": outcome.result.value,
        "domain": outcome.domain or None,
        "policy": outcome.policy.value if outcome.policy else None,
        "record": outcome.record,
        "reason": outcome.reason,
    }


def _dmarc_json(outcome: DmarcOutcome) -> dict[str, Any]:
    signature = outcome.dkim_signature
    return {
        "result": outcome.result.value,
        "mode": outcome.mode,
        "author_domain": outcome.author_domain or None,
        "policy_domain": outcome.policy_domain,
        "organizational_domain": outcome.organizational_domain,
        "record": outcome.record_text,
        "policy": outcome.requested_policy.value if outcome.requested_policy else None,
        "policy_tag": outcome.policy_tag or None,
        "disposition": outcome.disposition.value,
        "spf_domain": outcome.spf_domain,
        "spf_aligned": outcome.spf_aligned,
        "dkim_domains": list(outcome.dkim_domains),
        "dkim_aligned": outcome.dkim_aligned,
        "dkim_aligned_signature": None if signature is None else {"domain": signature.domain,
                                                                  "selector": signature.selector},
        "sampled": outcome.sampled,
        "testing": outcome.testing,
        "reason": outcome.reason,
        "notes": list(outcome.notes),
    }  # fmt: skip


def _arc_json(outcome: ArcOutcome) -> dict[str, Any]:
    return {
        "result": outcome.result.value,
        "reason": outcome.reason,
        "sets": outcome.sets,
        "oldest_pass": outcome.oldest_pass,
        "failed_instance": outcome.failed_instance,
        "temporary": outcome.temporary,
        "terminated": outcome.terminated,
        "chain": [
            {"instance": d.instance, "seal_domain": d.seal_domain, "seal_selector": d.seal_selector,
             "cv": d.chain_validation, "signature_domain": d.signature_domain, "authserv_id": d.authserv_id,
             "results": d.results, "signature_valid": d.signature_valid, "seal_valid": d.seal_valid}
            for d in outcome.details
        ],
    }  # fmt: skip


def render_json(report: VerifyReport, spam: SpamScore | None = None) -> str:
    """One object keyed by check name; ``spam`` (the spam filter's score) adds the ``spam`` key."""
    document: dict[str, Any] = {
        "spf": {**_spf_json(report.spf), "received_spf": report.received_spf},
        "senderid": _senderid_json(report.senderid),
        "domainkeys": _domainkeys_json(report.domainkeys),
        "dkim": [_dkim_json(verdict) for verdict in report.dkim],
        "adsp": _adsp_json(report.adsp),
        "dmarc": _dmarc_json(report.dmarc),
        "arc": _arc_json(report.arc),
        "authentication_results": report.authentication_results,
        "defects": list(report.defects),
    }
    if spam is not None:
        document["spam"] = _spam_json(spam)
    return json.dumps(document, indent=2) + "\n"
