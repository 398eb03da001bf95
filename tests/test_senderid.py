"""Sender ID (RFC 4406): the external suites, each in the mode its author meant, and the RFC's rules
for record selection and the PRA check on whole messages."""

from __future__ import annotations

import ipaddress

import pytest

from mailtoaster.auth.senderid import (
    Scope,
    check_mfrom,
    check_pra,
    record_scopes,
    scoped_selector,
    select_spf1_then_mfrom,
)
from mailtoaster.auth.spf import SpfOptions, SpfResult, check_spf
from mailtoaster.dns import parse_zone_text
from mailtoaster.message import Message
from tests.spfsuite import TESTDATA, SuiteCase, load_openspf

SENDERID_DIR = TESTDATA / "senderid"
OPTIONS = SpfOptions(receiver="receiver.example", default_explanation="DEFAULT", timestamp=lambda: 0)

RFC4406 = load_openspf(SENDERID_DIR / "rfc4406-tests.yml")
ITERATOR_MISC = load_openspf(SENDERID_DIR / "mail-spf-iterator-misc.yml")


@pytest.mark.parametrize("case", RFC4406, ids=[c.id for c in RFC4406])
async def test_rfc4406_suite(case: SuiteCase) -> None:
    """An RFC 4406 checker, scope mfrom: spf2.0 records win over v=spf1; two spf2.0 are a permerror."""
    outcome = await check_mfrom(
        case.resolver, ipaddress.ip_address(case.ip), case.mail_from, case.helo, OPTIONS
    )
    assert outcome.result.value in case.results


@pytest.mark.parametrize("case", ITERATOR_MISC, ids=[c.id for c in ITERATOR_MISC])
async def test_mail_spf_iterator_misc(case: SuiteCase) -> None:
    """Mail::SPF::Iterator's mode: an SPF checker that falls back to spf2.0/mfrom records."""
    options = SpfOptions(
        receiver="receiver.example",
        default_explanation="DEFAULT",
        timestamp=lambda: 0,
        record_selector=select_spf1_then_mfrom,
    )
    outcome = await check_spf(
        case.resolver, ipaddress.ip_address(case.ip), case.mail_from, case.helo, options
    )
    assert outcome.result.value in case.results
    if case.explanation is not None:
        assert outcome.explanation == case.explanation


async def test_plain_spf_ignores_sender_id_records() -> None:
    """RFC 7208 checks v=spf1 only: the same domain that passes in the lenient mode has no SPF."""
    case = next(c for c in ITERATOR_MISC if c.id == "sender-id")
    outcome = await check_spf(
        case.resolver, ipaddress.ip_address(case.ip), case.mail_from, case.helo, OPTIONS
    )
    assert outcome.result is SpfResult.NONE


def test_record_scopes() -> None:
    """RFC 4406 §3: the version is spf2.0 followed by a comma-separated scope list."""
    assert record_scopes("spf2.0/mfrom,pra -all") == (frozenset({"mfrom", "pra"}), len("spf2.0/mfrom,pra"))
    assert record_scopes("SPF2.0/PRA") == (frozenset({"pra"}), len("spf2.0/pra"))
    assert record_scopes("v=spf1 -all") is None
    assert record_scopes("spf2.0/pra,mfrom/x -all") is not None
    assert record_scopes("spf2.1/pra -all") is None


@pytest.mark.parametrize(
    ("records", "scope", "chosen"),
    [
        ([b"v=spf1 -all"], Scope.PRA, "v=spf1 -all"),
        ([b"spf2.0/pra +all", b"v=spf1 -all"], Scope.PRA, "spf2.0/pra +all"),
        ([b"spf2.0/pra +all", b"v=spf1 -all"], Scope.MFROM, "v=spf1 -all"),
        ([b"spf2.0/mfrom +all", b"spf2.0/pra -all"], Scope.PRA, "spf2.0/pra -all"),
        ([b"spf2.0/mfrom,pra ?all"], Scope.MFROM, "spf2.0/mfrom,pra ?all"),
        ([b"spf2.0/mfrom ?all"], Scope.PRA, None),
        ([b"something else"], Scope.PRA, None),
    ],
)
def test_scoped_selection(records: list[bytes], scope: Scope, chosen: str | None) -> None:
    """RFC 4406 §4.4: records for other scopes are discarded, scoped spf2.0 records are preferred
    over v=spf1 (which applies to both scopes), and nothing left means no record."""
    assert scoped_selector(scope)(records).text == chosen


def test_two_records_for_one_scope_is_a_problem() -> None:
    choice = scoped_selector(Scope.PRA)([b"spf2.0/pra -all", b"spf2.0/mfrom,pra +all"])
    assert choice.text is None and choice.problem


ZONE = parse_zone_text(
    """
$TTL 3600
example.com.        IN TXT "spf2.0/pra ip4:192.0.2.1 -all"
example.com.        IN TXT "v=spf1 ip4:192.0.2.99 -all"
list.example.org.   IN TXT "spf2.0/mfrom,pra ip4:198.51.100.7 -all"
v1only.example.net. IN TXT "v=spf1 ip4:192.0.2.1 ~all"
""",
    "senderid-test.zone",
)


def message(headers: str) -> Message:
    return Message.parse(headers.replace("\n", "\r\n").encode() + b"\r\nbody\r\n")


async def test_pra_from_header_passes() -> None:
    """RFC 4406 §4: the PRA's domain is checked against its spf2.0/pra record."""
    outcome = await check_pra(
        ZONE,
        ipaddress.ip_address("192.0.2.1"),
        message("From: Alice <alice@example.com>\n"),
        "mx.example.com",
    )
    assert outcome.result is SpfResult.PASS
    assert outcome.identity == "alice@example.com"
    assert outcome.spf is not None and outcome.spf.record == "spf2.0/pra ip4:192.0.2.1 -all"


async def test_pra_uses_sender_over_from() -> None:
    """RFC 4407 §2 step 3: a Sender field is the PRA even when From names another domain: a mailing
    list re-sending an author's message is judged by the list's record."""
    outcome = await check_pra(
        ZONE,
        ipaddress.ip_address("198.51.100.7"),
        message("From: alice@example.com\nSender: owner-list@list.example.org\n"),
        "list.example.org",
    )
    assert outcome.result is SpfResult.PASS
    assert outcome.pra is not None and outcome.pra.header == "Sender"


async def test_pra_scope_ignores_the_spf1_record_when_spf2_exists() -> None:
    """The v=spf1 record authorises 192.0.2.99, but the pra-scoped record says -all for it."""
    outcome = await check_pra(
        ZONE, ipaddress.ip_address("192.0.2.99"), message("From: alice@example.com\n"), "mx.example.com"
    )
    assert outcome.result is SpfResult.FAIL


async def test_pra_falls_back_to_spf1() -> None:
    outcome = await check_pra(
        ZONE, ipaddress.ip_address("203.0.113.5"), message("From: bob@v1only.example.net\n"), "mx"
    )
    assert outcome.result is SpfResult.SOFTFAIL


async def test_no_pra_is_permerror() -> None:
    """RFC 4407 §2 step 6: without a PRA the message is ill-formed; RFC 4406 reports permerror."""
    outcome = await check_pra(
        ZONE,
        ipaddress.ip_address("192.0.2.1"),
        message("From: a@example.com\nFrom: b@example.com\n"),
        "mx.example.com",
    )
    assert outcome.result is SpfResult.PERMERROR
    assert outcome.spf is None
    assert "From" in outcome.reason


async def test_mfrom_scope_checks_the_envelope() -> None:
    outcome = await check_mfrom(ZONE, ipaddress.ip_address("192.0.2.99"), "bounce@example.com", "mx", OPTIONS)
    assert outcome.result is SpfResult.PASS  # example.com has no mfrom-scoped record: v=spf1 applies
    assert outcome.identity == "bounce@example.com"
