"""DKIM Author Domain Signing Practices (RFC 5617): does the author's domain say it signs everything?

ADSP was moved to Historic in 2013 and DMARC replaced it, but domains still publish
``_adsp._domainkey`` records and postmasters still ask what they mean, so the check is kept: it costs
two DNS queries and only runs when no signature of the author's own domain verified.

The lookup is RFC 5617 §4.3, step by step:

1. *Check Domain Scope*: a query for the Author Domain itself (MX, as the RFC suggests, because only
   NXDOMAIN matters); NXDOMAIN ends the check with ``nxdomain``.
2. *Fetch Named ADSP Record*: TXT at ``_adsp._domainkey.<Author Domain>``. NXDOMAIN or no records:
   there is no ADSP record (``none``). More than one record: "the ADSP result is undefined", reported
   as ``permerror``. A record that is not valid ADSP syntax "MUST be ignored (considered equivalent to
   a NODATA result)" (§4.1), so ``none`` again, with the reason saying why it was ignored. SERVFAIL or
   a timeout on either query: ``temperror``.

A message with an Author Domain Signature (a passing DKIM signature whose ``d=`` is the Author Domain,
RFC 5617 §2.7) is ``pass`` without any lookup: it "satisfies all possible ADSP policies" (§5.4),
and §4.3 asks checkers to avoid unnecessary DNS lookups. Several author domains are checked one by
one, as §2.3 says; the result shown is the most severe of them (see :data:`SEVERITY`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

import authres.dkim_adsp

from mailtoaster.auth.author import find_authors
from mailtoaster.auth.dkim.result import DkimResult, DkimVerdict
from mailtoaster.auth.results import comment_text
from mailtoaster.auth.tags import TagListError, parse_tag_list
from mailtoaster.dns import DnsStatus, Resolver, RRType
from mailtoaster.message import Message

__all__ = [
    "SEVERITY",
    "AdspOutcome",
    "AdspPolicy",
    "AdspRecord",
    "AdspResult",
    "adsp_result",
    "check_adsp",
    "parse_adsp_record",
]

ADSP_PREFIX = "_adsp._domainkey."


class AdspResult(enum.StrEnum):
    """The ``dkim-adsp`` result names of RFC 5617 §5.4 (the RFC 8601 registry)."""

    NONE = "none"
    PASS = "pass"
    UNKNOWN = "unknown"
    FAIL = "fail"
    DISCARD = "discard"
    NXDOMAIN = "nxdomain"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class AdspPolicy(enum.StrEnum):
    """The outbound signing practices of RFC 5617 §4.2.1 (``dkim=``)."""

    UNKNOWN = "unknown"
    ALL = "all"
    DISCARDABLE = "discardable"


_POLICY_RESULT = {
    AdspPolicy.UNKNOWN: AdspResult.UNKNOWN,
    AdspPolicy.ALL: AdspResult.FAIL,
    AdspPolicy.DISCARDABLE: AdspResult.DISCARD,
}

SEVERITY = (
    AdspResult.DISCARD,
    AdspResult.FAIL,
    AdspResult.NXDOMAIN,
    AdspResult.TEMPERROR,
    AdspResult.PERMERROR,
    AdspResult.UNKNOWN,
    AdspResult.NONE,
    AdspResult.PASS,
)
"""Most severe first: when a message has several author domains, the first of these that any of them
got is the message's result. Definite assertions of forgery come before "could not tell"."""

_RECORD_START = re.compile(r"dkim[ \t]*=")
_HYPHENATED_WORD = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")


@dataclass(frozen=True)
class AdspRecord:
    """One TXT record read as ADSP; ``policy`` is None when it is not valid (``problem`` says why)."""

    text: str
    policy: AdspPolicy | None
    practice: str = ""
    """``dkim=`` as written: unknown extension values count as ``unknown`` (§4.2.1)."""
    problem: str = ""

    @property
    def valid(self) -> bool:
        return self.policy is not None


def parse_adsp_record(text: str) -> AdspRecord:
    """RFC 5617 §4.2.1, never raising: the DKIM tag=value syntax with WSP instead of FWS, starting
    with a lowercase ``dkim`` tag whose value is ``unknown``, ``all``, ``discardable`` or a
    hyphenated-word (an extension, treated as ``unknown``); unknown tags are ignored."""
    if not _RECORD_START.match(text):
        return AdspRecord(text, None, problem="does not start with the dkim= tag")
    if "\r" in text or "\n" in text:
        return AdspRecord(text, None, problem="contains a line break (ADSP allows only WSP)")
    try:
        tags = parse_tag_list(text)
    except TagListError as exc:
        return AdspRecord(text, None, problem=f"tag-list syntax: {exc}")
    practice = tags["dkim"]
    if not _HYPHENATED_WORD.match(practice):
        return AdspRecord(text, None, practice, problem=f"dkim={practice[:40]!r} is not a practice")
    try:
        policy = AdspPolicy(practice.lower())
    except ValueError:
        policy = AdspPolicy.UNKNOWN
    return AdspRecord(text, policy, practice)


@dataclass(frozen=True)
class AdspOutcome:
    """The ADSP verdict for a message, with what explains it."""

    result: AdspResult
    reason: str
    domain: str = ""
    """The Author Domain the result is about (empty when the From field gave none)."""
    policy: AdspPolicy | None = None
    """The practice published, when a valid record was read."""
    record: str | None = None
    """The TXT record read at ``_adsp._domainkey.<domain>``, valid or not."""
    signature: DkimVerdict | None = None
    """For ``pass``: the Author Domain Signature."""
    per_domain: tuple[AdspOutcome, ...] = ()
    """With several author domains: each one's own outcome (the fields above repeat the most severe)."""


async def check_adsp(message: Message, dkim: Sequence[DkimVerdict], resolver: Resolver) -> AdspOutcome:
    """RFC 5617 for every author domain of ``message``, given the DKIM verdicts already reached."""
    authors = find_authors(message)
    domains = authors.domains
    if not domains:
        return AdspOutcome(AdspResult.PERMERROR, f"no Author Address to check: {authors.reason}")
    outcomes = [await _check_domain(domain, dkim, resolver) for domain in domains]
    if len(outcomes) == 1 and authors.ok:
        return outcomes[0]
    worst = min(outcomes, key=lambda o: SEVERITY.index(o.result))
    note = authors.reason or f"{len(domains)} author domains"
    per_domain = tuple(outcomes) if len(outcomes) > 1 else ()
    return AdspOutcome(
        worst.result,
        f"{worst.reason} ({note}; each checked on its own, RFC 5617 §2.3)",
        worst.domain,
        worst.policy,
        worst.record,
        worst.signature,
        per_domain,
    )


async def _check_domain(domain: str, dkim: Sequence[DkimVerdict], resolver: Resolver) -> AdspOutcome:
    signature = _author_domain_signature(domain, dkim)
    if signature is not None:
        reason = f"valid Author Domain Signature (d={signature.domain}, s={signature.selector})"
        return AdspOutcome(AdspResult.PASS, reason, domain, signature=signature)
    scope = await resolver.lookup(domain, RRType.MX)
    if scope.status.is_temporary_error:
        return AdspOutcome(
            AdspResult.TEMPERROR, f"DNS {scope.status.value} checking that {domain} exists", domain
        )
    if scope.status is DnsStatus.NXDOMAIN:
        return AdspOutcome(AdspResult.NXDOMAIN, f"the author domain {domain} does not exist", domain)
    return await _fetch_record(domain, resolver)


def _author_domain_signature(domain: str, dkim: Sequence[DkimVerdict]) -> DkimVerdict | None:
    """RFC 5617 §2.7: a valid signature whose d= is the Author Domain (compared without case)."""
    for verdict in dkim:
        if verdict.result is DkimResult.PASS and verdict.domain.lower().rstrip(".") == domain:
            return verdict
    return None


async def _fetch_record(domain: str, resolver: Resolver) -> AdspOutcome:
    name = ADSP_PREFIX + domain
    answer = await resolver.lookup(name, RRType.TXT)
    if answer.status.is_temporary_error:
        return AdspOutcome(AdspResult.TEMPERROR, f"DNS {answer.status.value} looking up {name} TXT", domain)
    texts = [t.decode("latin-1") for t in answer.texts()]
    if not texts:
        return AdspOutcome(AdspResult.NONE, f"no ADSP record at {name}", domain)
    if len(texts) > 1:
        reason = f"{len(texts)} TXT records at {name}: the ADSP result is undefined (RFC 5617 §4.3)"
        return AdspOutcome(AdspResult.PERMERROR, reason, domain)
    record = parse_adsp_record(texts[0])
    if record.policy is None:
        reason = f"ADSP record at {name} ignored as if absent (RFC 5617 §4.1): {record.problem}"
        return AdspOutcome(AdspResult.NONE, reason, domain, record=record.text)
    reason = f"no valid Author Domain Signature and {domain} publishes dkim={record.policy.value}"
    return AdspOutcome(_POLICY_RESULT[record.policy], reason, domain, record.policy, record.text)


def adsp_result(outcome: AdspOutcome) -> authres.dkim_adsp.DKIMADSPAuthenticationResult:
    """``dkim-adsp=<result> (<why>) header.from=<author domain>`` (RFC 5617 §5.4, RFC 8601)."""
    return authres.dkim_adsp.DKIMADSPAuthenticationResult(
        result=outcome.result.value,
        result_comment=comment_text(outcome.reason),
        header_from=outcome.domain or None,
    )
