"""ADSP (RFC 5617): every branch of the §4.3 lookup, the §4.2.1 record syntax and the §5.4 results.

Mail::DKIM's t/adsp.t is the only external expectation: an unsigned message from a ``dkim=all``
domain is ``fail`` (Mail::DKIM's own API calls it "neutral"; the RFC result is used here), and from
a ``dkim=discardable`` domain ``discard``.
"""

from __future__ import annotations

import asyncio
import ipaddress

import authres
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.auth.adsp import (
    SEVERITY,
    AdspOutcome,
    AdspPolicy,
    AdspResult,
    adsp_result,
    check_adsp,
    parse_adsp_record,
)
from mailtoaster.auth.dkim.result import DkimResult, DkimVerdict
from mailtoaster.dns import MX, DnsStatus, Question, RecordingResolver, RRType, StaticResolver
from mailtoaster.message import Message

AUTHOR = "example.com"
ADSP_NAME = "_adsp._domainkey.example.com"


def _message(from_value: str = "Joe <joe@example.com>") -> Message:
    return Message.parse(f"From: {from_value}\r\nTo: a@example.net\r\nSubject: s\r\n\r\nbody\r\n".encode())


def _zone(*adsp_records: bytes | tuple[bytes, ...], domain: str = AUTHOR) -> StaticResolver:
    resolver = StaticResolver()
    resolver.add(domain, RRType.MX, MX(10, f"mx.{domain}"))
    for record in adsp_records:
        resolver.add(
            f"_adsp._domainkey.{domain}", RRType.TXT, record if isinstance(record, tuple) else (record,)
        )
    return resolver


def _verdict(domain: str, result: DkimResult = DkimResult.PASS) -> DkimVerdict:
    return DkimVerdict(result, "signature verified", domain=domain, selector="sel")


async def _check(resolver: StaticResolver, dkim: list[DkimVerdict] | None = None, **kw: str) -> AdspOutcome:
    return await check_adsp(_message(**kw), dkim or [], resolver)


# --- Mail::DKIM t/adsp.t ---------------------------------------------------------------------------


async def test_unsigned_message_from_dkim_all_domain_fails() -> None:
    """RFC 5617 §5.4: "fail: No valid Author Domain Signature was found on the message and the
    published ADSP was 'all'" (Mail::DKIM t/adsp.t: unsigned + dkim=all)."""
    outcome = await _check(_zone(b"dkim=all"))
    assert outcome.result is AdspResult.FAIL
    assert outcome.policy is AdspPolicy.ALL
    assert outcome.domain == AUTHOR
    assert outcome.record == "dkim=all"
    assert "dkim=all" in outcome.reason


async def test_unsigned_message_from_discardable_domain_is_discard() -> None:
    """RFC 5617 §5.4: "discard: No valid Author Domain Signature was found on the message and the
    published ADSP was 'discardable'" (Mail::DKIM t/adsp.t: unsigned + dkim=discardable)."""
    outcome = await _check(_zone(b"dkim=discardable"))
    assert outcome.result is AdspResult.DISCARD
    assert outcome.policy is AdspPolicy.DISCARDABLE


async def test_unsigned_message_from_unknown_domain_is_unknown() -> None:
    """RFC 5617 §5.4: "unknown: No valid Author Domain Signature was found on the message and the
    published ADSP was 'unknown'"."""
    outcome = await _check(_zone(b"dkim=unknown"))
    assert outcome.result is AdspResult.UNKNOWN
    assert outcome.policy is AdspPolicy.UNKNOWN


# --- pass ----------------------------------------------------------------------------------------


async def test_author_domain_signature_passes_without_any_lookup() -> None:
    """RFC 5617 §5.4: "pass: This message had an Author Domain Signature that was validated. (An ADSP
    check is not strictly required to be performed for this result ...)"; §2.7: domain name
    comparisons are case insensitive."""
    resolver = RecordingResolver(_zone(b"dkim=discardable"))
    signature = _verdict("EXAMPLE.com")
    outcome = await check_adsp(_message(), [_verdict("other.example"), signature], resolver)
    assert outcome.result is AdspResult.PASS
    assert outcome.signature is signature
    assert outcome.policy is None
    assert resolver.log.questions == []


async def test_third_party_signature_is_not_an_author_domain_signature() -> None:
    """RFC 5617 §2.7: the d= tag must be "the same as the domain name in the Author Address" — a
    parent or a subdomain is not."""
    for domain in ("mail.example.com", "com", "example.net"):
        outcome = await _check(_zone(b"dkim=all"), [_verdict(domain)])
        assert outcome.result is AdspResult.FAIL, domain


@pytest.mark.parametrize(
    "result",
    [DkimResult.FAIL, DkimResult.POLICY, DkimResult.NEUTRAL, DkimResult.TEMPERROR, DkimResult.PERMERROR],
)
async def test_only_a_passing_signature_counts(result: DkimResult) -> None:
    """RFC 5617 §2.5/§2.7: only a Valid Signature ("correctly verifies") can be an Author Domain
    Signature; a signature that failed, or that local policy refuses, does not."""
    outcome = await _check(_zone(b"dkim=discardable"), [_verdict(AUTHOR, result)])
    assert outcome.result is AdspResult.DISCARD


# --- step 1: domain scope --------------------------------------------------------------------------


async def test_nonexistent_author_domain_is_nxdomain() -> None:
    """RFC 5617 §4.3 step 1: "If the result of this query is that the Author Domain does not exist in
    the DNS (often called an NXDOMAIN error ...), the algorithm MUST terminate with an error
    indicating that the domain is out of scope"; §5.4 names it nxdomain."""
    resolver = RecordingResolver(StaticResolver())
    outcome = await check_adsp(_message("joe@nowhere.example"), [], resolver)
    assert outcome.result is AdspResult.NXDOMAIN
    assert outcome.domain == "nowhere.example"
    assert resolver.log.questions == [Question("nowhere.example", RRType.MX)]


async def test_nodata_author_domain_is_in_scope() -> None:
    """RFC 5617 §4.3: "Note that a result with rcode=0 but no records (often called NODATA) is not the
    same as NXDOMAIN"."""
    resolver = StaticResolver()
    resolver.add(ADSP_NAME, RRType.TXT, (b"dkim=all",))
    resolver.add(AUTHOR, RRType.TXT, (b"v=spf1 -all",))
    assert (await resolver.lookup(AUTHOR, RRType.MX)).status is DnsStatus.NODATA
    outcome = await _check(resolver)
    assert outcome.result is AdspResult.FAIL


async def test_domain_existing_only_as_parent_of_the_adsp_name_is_in_scope() -> None:
    """An empty non-terminal answers NODATA, not NXDOMAIN (RFC 8020), so the record is read."""
    resolver = StaticResolver()
    resolver.add(ADSP_NAME, RRType.TXT, (b"dkim=discardable",))
    assert (await _check(resolver)).result is AdspResult.DISCARD


async def test_temporary_error_on_the_scope_query_is_temperror() -> None:
    """RFC 5617 §5.4: "temperror: An ADSP record could not be retrieved due to some error that is
    likely transient in nature, such as a temporary DNS error"."""
    resolver = _zone(b"dkim=all")
    resolver.add_timeout(AUTHOR)
    outcome = await _check(resolver)
    assert outcome.result is AdspResult.TEMPERROR
    assert "timeout" in outcome.reason


# --- step 2: the named ADSP record -----------------------------------------------------------------


async def test_no_adsp_record_is_none() -> None:
    """RFC 5617 §4.3: "If the result of the query is NXDOMAIN or NOERROR with zero records, there is
    no ADSP record"; §5.4: "none: No ADSP record was published"."""
    resolver = RecordingResolver(_zone())
    outcome = await check_adsp(_message(), [], resolver)
    assert outcome.result is AdspResult.NONE
    assert outcome.record is None
    assert resolver.log.questions == [Question(AUTHOR, RRType.MX), Question(ADSP_NAME, RRType.TXT)]


async def test_nodata_at_the_adsp_name_is_none() -> None:
    resolver = _zone()
    resolver.add(ADSP_NAME, RRType.A, ipaddress.ip_address("192.0.2.1"))
    assert (await _check(resolver)).result is AdspResult.NONE


async def test_temporary_error_on_the_record_query_is_temperror() -> None:
    """RFC 5617 §4.3: "If a query results in a SERVFAIL error response ..., the algorithm terminates
    without returning a result"."""
    resolver = _zone()
    resolver.add_timeout(ADSP_NAME)
    outcome = await _check(resolver)
    assert outcome.result is AdspResult.TEMPERROR
    assert ADSP_NAME in outcome.reason


async def test_servfail_is_temperror() -> None:
    resolver = _zone()
    resolver.add(ADSP_NAME, RRType.CNAME, ADSP_NAME)  # a CNAME loop: the resolver answers SERVFAIL
    assert (await resolver.lookup(ADSP_NAME, RRType.TXT)).status is DnsStatus.SERVFAIL
    assert (await _check(resolver)).result is AdspResult.TEMPERROR


@pytest.mark.parametrize(
    "records",
    [
        (b"dkim=all", b"dkim=discardable"),
        (b"dkim=all", b"dkim=all"),
        (b"dkim=all", b"v=spf1 -all"),
    ],
)
async def test_more_than_one_record_is_permerror(records: tuple[bytes, ...]) -> None:
    """RFC 5617 §4.3: "If the result of the query contains more than one record ..., the ADSP result
    is undefined"; §5.4: "permerror: An ADSP record could not be retrieved due to some error that is
    likely not transient in nature"."""
    outcome = await _check(_zone(*records))
    assert outcome.result is AdspResult.PERMERROR
    assert "2 TXT records" in outcome.reason


async def test_record_split_into_several_strings_is_joined() -> None:
    """RFC 5617 §4.1: "If the RR contains multiple character-strings, they are concatenated"."""
    outcome = await _check(_zone((b"dkim=dis", b"cardable")))
    assert outcome.result is AdspResult.DISCARD


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (b"DKIM=all", "does not start with the dkim= tag"),
        (b" dkim=all", "does not start with the dkim= tag"),
        (b"t=y; dkim=all", "does not start with the dkim= tag"),
        (b"v=spf1 -all", "does not start with the dkim= tag"),
        (b"", "does not start with the dkim= tag"),
        (b"dkim", "does not start with the dkim= tag"),
        (b"dkim=", "is not a practice"),
        (b"dkim=all discardable", "is not a practice"),
        (b"dkim=-all", "is not a practice"),
        (b"dkim=all-", "is not a practice"),
        (b"dkim=all; dkim=unknown", "appears twice"),
        (b"dkim=all; t", "has no '='"),
        (b"dkim=all;; x=1", "has no '='"),
        (b"dkim=all;\r\n x=1", "line break"),
        (b"dkim=all; 1x=y", "invalid name"),
    ],
)
async def test_invalid_record_is_ignored_as_if_absent(record: bytes, problem: str) -> None:
    """RFC 5617 §4.1: "Records not in compliance with that syntax or the syntax of individual tags
    described in Section 4.3 MUST be ignored (considered equivalent to a NODATA result)"; §4.2.1:
    "Every ADSP record MUST start with an outbound signing-practices tag, so the first four
    characters of the record are lowercase 'dkim', followed by optional whitespace and '='"."""
    parsed = parse_adsp_record(record.decode())
    assert not parsed.valid
    assert problem in parsed.problem
    outcome = await _check(_zone(record))
    assert outcome.result is AdspResult.NONE
    assert outcome.record == record.decode()
    assert "ignored as if absent" in outcome.reason
    assert problem in outcome.reason


@pytest.mark.parametrize(
    ("record", "policy"),
    [
        ("dkim=all", AdspPolicy.ALL),
        ("dkim = all", AdspPolicy.ALL),
        ("dkim=all;", AdspPolicy.ALL),
        ("dkim=all ; ", AdspPolicy.ALL),
        ("dkim=ALL", AdspPolicy.ALL),
        ("dkim=Discardable", AdspPolicy.DISCARDABLE),
        ("dkim=unknown", AdspPolicy.UNKNOWN),
        ("dkim=all; r=postmaster; x_y=anything at all", AdspPolicy.ALL),
        ("dkim=x-future-practice", AdspPolicy.UNKNOWN),
        ("dkim=strict", AdspPolicy.UNKNOWN),
        ("dkim\t=\tdiscardable", AdspPolicy.DISCARDABLE),
    ],
)
def test_valid_records(record: str, policy: AdspPolicy) -> None:
    """RFC 5617 §4.2.1: ``dkim=`` is "unknown" / "all" / "discardable" / x-adsp-dkim-tag, and "Any
    other values are treated as 'unknown'"; "Unrecognized tags MUST be ignored"."""
    parsed = parse_adsp_record(record)
    assert parsed.policy is policy
    assert parsed.problem == ""
    assert parsed.text == record


async def test_extension_practice_gives_unknown_result() -> None:
    outcome = await _check(_zone(b"dkim=x-later"))
    assert outcome.result is AdspResult.UNKNOWN
    assert outcome.policy is AdspPolicy.UNKNOWN


# --- the author ----------------------------------------------------------------------------------


async def test_no_author_address_is_permerror() -> None:
    resolver = RecordingResolver(_zone(b"dkim=all"))
    outcome = await check_adsp(Message.parse(b"To: x@example.net\r\n\r\nbody\r\n"), [], resolver)
    assert outcome.result is AdspResult.PERMERROR
    assert "no From field" in outcome.reason
    assert outcome.domain == ""
    assert resolver.log.questions == []


async def test_each_author_domain_is_checked_and_the_most_severe_shown() -> None:
    """RFC 5617 §2.3: "If a message has multiple Author Addresses, the ADSP lookups SHOULD be
    performed independently on each address"."""
    resolver = _zone(b"dkim=unknown")
    resolver.add("example.org", RRType.MX, MX(10, "mx.example.org"))
    resolver.add("_adsp._domainkey.example.org", RRType.TXT, (b"dkim=discardable",))
    outcome = await check_adsp(_message("a@example.com, b@example.org"), [], resolver)
    assert outcome.result is AdspResult.DISCARD
    assert outcome.domain == "example.org"
    assert [(o.domain, o.result) for o in outcome.per_domain] == [
        ("example.com", AdspResult.UNKNOWN),
        ("example.org", AdspResult.DISCARD),
    ]
    assert "2 author domains" in outcome.reason


async def test_multiple_authors_all_signed_pass() -> None:
    resolver = _zone(b"dkim=all")
    outcome = await check_adsp(
        _message("a@example.com, b@example.org"), [_verdict("example.org"), _verdict("example.com")], resolver
    )
    assert outcome.result is AdspResult.PASS
    assert {o.result for o in outcome.per_domain} == {AdspResult.PASS}


async def test_same_domain_twice_is_one_check() -> None:
    outcome = await _check(_zone(b"dkim=all"), from_value="a@example.com, b@EXAMPLE.COM")
    assert outcome.result is AdspResult.FAIL
    assert outcome.per_domain == ()


async def test_flawed_from_field_checks_the_addresses_it_has_and_says_so() -> None:
    outcome = await _check(_zone(b"dkim=all"), from_value="joe, ann@example.com")
    assert outcome.result is AdspResult.FAIL
    assert "no domain" in outcome.reason


def test_severity_lists_every_result_once() -> None:
    assert sorted(SEVERITY) == sorted(AdspResult)


# --- Authentication-Results ------------------------------------------------------------------------


async def test_authentication_results_clause() -> None:
    """RFC 5617 §5.4 registers ``dkim-adsp`` with the ``header.from`` property."""
    outcome = await _check(_zone(b"dkim=discardable"))
    header = str(
        authres.AuthenticationResultsHeader(authserv_id="mx.example.net", results=[adsp_result(outcome)])
    )
    assert header.startswith("Authentication-Results: mx.example.net; dkim-adsp=discard (")
    assert header.endswith(" header.from=example.com")
    parsed = authres.AuthenticationResultsHeader.parse(header)
    assert parsed.results[0].result == "discard"


def test_comment_is_escaped() -> None:
    outcome = AdspOutcome(AdspResult.PERMERROR, "odd (reason) with \\ and\r\nbreak")
    result = adsp_result(outcome)
    assert result.result_comment == "odd \\(reason\\) with \\\\ and  break"
    assert result.header_from is None


# --- fuzzing -------------------------------------------------------------------------------------


@settings(max_examples=500)
@given(st.text(max_size=120) | st.builds(lambda t: "dkim=" + t, st.text(max_size=60)))
def test_record_parser_never_raises(text: str) -> None:
    parsed = parse_adsp_record(text)
    assert parsed.valid == (parsed.problem == "")
    if parsed.valid:
        assert text.startswith("dkim")


@settings(max_examples=150)
@given(st.lists(st.binary(max_size=60), max_size=3), st.booleans())
def test_check_never_raises(records: list[bytes], signed: bool) -> None:
    resolver = _zone(*records)
    dkim = [_verdict(AUTHOR)] if signed else []
    outcome = asyncio.run(check_adsp(_message(), dkim, resolver))
    assert outcome.result in AdspResult
    assert outcome.reason
    if signed:
        assert outcome.result is AdspResult.PASS
