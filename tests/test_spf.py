"""SPF pieces the suites do not isolate: RFC 7208 §7.4's macro examples, identity selection, the
Received-SPF header, limits and DNS trouble."""

from __future__ import annotations

import ipaddress

import pytest

from mailtoaster.auth.spf import (
    SpfOptions,
    SpfResult,
    SpfSyntaxError,
    check_host,
    check_spf,
    identity_of,
    parse_record,
    received_spf,
)
from mailtoaster.auth.spf.macro import MacroContext, MacroSyntaxError, expand, parse_domain_spec
from mailtoaster.dns import RecordingResolver, RRType, StaticResolver

RFC_CONTEXT = MacroContext(
    sender="strong-bad@email.example.com",
    domain="email.example.com",
    ip=ipaddress.ip_address("192.0.2.3"),
    helo="mx.example.org",
)


async def _no_p() -> str:
    return "unknown"


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ],
)
async def test_rfc7208_macro_examples(macro: str, expanded: str) -> None:
    """RFC 7208 §7.4, the examples for strong-bad@email.example.com from 192.0.2.3."""
    assert await expand(parse_domain_spec(macro), RFC_CONTEXT, _no_p) == expanded


async def test_rfc7208_ipv6_macro_example() -> None:
    context = MacroContext(
        "strong-bad@email.example.com", "email.example.com", ipaddress.ip_address("2001:db8::cb01"), "h"
    )
    want = "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    assert await expand(parse_domain_spec("%{ir}.%{v}._spf.%{d2}"), context, _no_p) == want


async def test_upper_case_macro_is_url_escaped() -> None:
    context = MacroContext("jack&jill=up@example.com", "example.com", ipaddress.ip_address("192.0.2.3"), "h")
    assert (
        await expand(parse_domain_spec("%{L}.example.com"), context, _no_p) == "jack%26jill%3Dup.example.com"
    )


@pytest.mark.parametrize(
    "spec", ["%{c}.example.com", "%{x}.example.com", "%{d0}.example.com", "%", "museum", "a.-b"]
)
def test_bad_domain_specs(spec: str) -> None:
    with pytest.raises(MacroSyntaxError):
        parse_domain_spec(spec)


@pytest.mark.parametrize(
    "record",
    [
        "v=spf1 ip4:1.2.3.4/33",
        "v=spf1 ip4:01.2.3.4",
        "v=spf1 ip6:1.2.3.4",
        "v=spf1 a:foo.com//129",
        "v=spf1 redirect=a.com redirect=b.com",
        "v=spf1 exp=a.com exp=b.com",
        "v=spf1 include",
        "v=spf1 -all:x",
        "v=spf1 moo",
        "v=spf1 ip4:1.2.3.4 \u00e9",
    ],
)
def test_syntax_errors(record: str) -> None:
    with pytest.raises(SpfSyntaxError):
        parse_record(record)


def test_parse_keeps_terms() -> None:
    record = parse_record("v=spf1 mx/24//64 -ip4:192.0.2.0/24 ~all exp=explain.%{d} x-custom=1")
    assert [d.text for d in record.directives] == ["mx/24//64", "-ip4:192.0.2.0/24", "~all"]
    assert (record.directives[0].cidr4, record.directives[0].cidr6) == (24, 64)
    assert record.explanation == "explain.%{d}"
    assert record.unknown_modifiers == (("x-custom", "1"),)


@pytest.mark.parametrize(
    ("mail_from", "helo", "expected"),
    [
        ("", "mail.example.org", ("helo", "postmaster@mail.example.org", "mail.example.org")),
        ("@example.net", "h", ("mailfrom", "postmaster@example.net", "example.net")),
        ("a@b.example", "h", ("mailfrom", "a@b.example", "b.example")),
        ("odd@local@example.com", "h", ("mailfrom", "odd@local@example.com", "example.com")),
    ],
)
def test_identity_selection(mail_from: str, helo: str, expected: tuple[str, str, str]) -> None:
    """RFC 7208 §2.4: the null reverse-path checks HELO as postmaster@<helo>; §4.3: no local part
    means postmaster."""
    assert identity_of(mail_from, helo) == expected


def _resolver(records: dict[str, str], **timeouts: tuple[RRType, ...]) -> StaticResolver:
    resolver = StaticResolver({(name, RRType.TXT): [(text.encode(),)] for name, text in records.items()})
    for name, answering in timeouts.items():
        resolver.add_timeout(name.replace("_", "."), answering)
    return resolver


async def test_null_sender_checks_helo() -> None:
    resolver = _resolver({"mail.example.org": "v=spf1 ip4:192.0.2.1 -all", "example.com": "v=spf1 -all"})
    outcome = await check_spf(resolver, ipaddress.ip_address("192.0.2.1"), "", "mail.example.org")
    assert outcome.result is SpfResult.PASS
    assert outcome.identity == "helo" and outcome.domain == "mail.example.org"


async def test_timeout_is_temperror_not_a_hang() -> None:
    resolver = _resolver({"example.com": "v=spf1 include:slow.example.net -all"}, slow_example_net=())
    outcome = await check_spf(resolver, ipaddress.ip_address("192.0.2.1"), "a@example.com", "h")
    assert outcome.result is SpfResult.TEMPERROR
    assert "timeout" in outcome.reason


async def test_lookup_limit_stops_at_the_eleventh_term() -> None:
    records = {"example.com": "v=spf1 " + " ".join(f"include:i{n}.example.com" for n in range(12)) + " -all"}
    records.update({f"i{n}.example.com": "v=spf1 -all" for n in range(12)})
    outcome = await check_spf(_resolver(records), ipaddress.ip_address("192.0.2.1"), "a@example.com", "h")
    assert outcome.result is SpfResult.PERMERROR
    assert outcome.dns_lookups == 11
    assert "more than 10" in outcome.reason


async def test_fail_carries_explanation_and_record() -> None:
    resolver = _resolver(
        {
            "example.com": "v=spf1 -all exp=why.example.com",
            "why.example.com": "%{i} is not one of %{d}'s servers",
        }
    )
    outcome = await check_spf(resolver, ipaddress.ip_address("192.0.2.9"), "a@example.com", "h")
    assert outcome.result is SpfResult.FAIL
    assert outcome.explanation == "192.0.2.9 is not one of example.com's servers"
    assert outcome.record == "v=spf1 -all exp=why.example.com"
    assert outcome.mechanism == "-all"


async def test_received_spf_header() -> None:
    """RFC 7208 §9.1: result, comment, then key-value pairs with quoted values where needed."""
    resolver = _resolver({"example.com": "v=spf1 ip4:192.0.2.0/24 -all"})
    outcome = await check_host(
        resolver, ipaddress.ip_address("192.0.2.1"), "example.com", "me@example.com", "h.example.com"
    )
    header = received_spf(outcome, "mx.example.org")
    assert header == (
        "pass (mx.example.org: domain of me@example.com designates 192.0.2.1 as permitted sender) "
        'client-ip=192.0.2.1; envelope-from="me@example.com"; helo=h.example.com; '
        'receiver=mx.example.org; mechanism="ip4:192.0.2.0/24"; identity=mailfrom;'
    )


async def test_permerror_header_names_the_problem() -> None:
    resolver = _resolver({"example.com": "v=spf1 ip4:300.1.1.1 -all"})
    outcome = await check_spf(resolver, ipaddress.ip_address("192.0.2.1"), "me@example.com", "h")
    header = received_spf(outcome, "mx")
    assert header.startswith("permerror (mx: permanent error in processing domain of me@example.com: ")
    assert 'problem="example.com: invalid ip4 network' in header


async def test_default_explanation_is_expanded() -> None:
    resolver = _resolver({"example.com": "v=spf1 -all"})
    options = SpfOptions(receiver="mx.example.org")
    outcome = await check_spf(resolver, ipaddress.ip_address("192.0.2.1"), "me@example.com", "h", options)
    assert (
        outcome.explanation
        == "See https://www.open-spf.org/Why?s=me@example.com;i=192.0.2.1;r=mx.example.org"
    )


async def test_records_used_follow_include_and_redirect() -> None:
    resolver = _resolver(
        {
            "example.com": "v=spf1 include:a.example.net redirect=b.example.net",
            "a.example.net": "v=spf1 ip4:198.51.100.0/24 -all",
            "b.example.net": "v=spf1 ip4:192.0.2.0/24 -all",
        }
    )
    outcome = await check_spf(resolver, ipaddress.ip_address("192.0.2.1"), "me@example.com", "h")
    assert outcome.result is SpfResult.PASS
    assert outcome.record == "v=spf1 include:a.example.net redirect=b.example.net"
    assert outcome.records_used == (
        ("example.com", "v=spf1 include:a.example.net redirect=b.example.net"),
        ("a.example.net", "v=spf1 ip4:198.51.100.0/24 -all"),
        ("b.example.net", "v=spf1 ip4:192.0.2.0/24 -all"),
    )
    assert outcome.dns_lookups == 2


async def test_address_literal_is_not_a_domain() -> None:
    """RFC 7208 §4.3: a HELO address literal is not a domain name: result none, no query made."""
    resolver = RecordingResolver(_resolver({}))
    outcome = await check_spf(resolver, ipaddress.ip_address("192.0.2.1"), "", "[192.0.2.1]")
    assert outcome.result is SpfResult.NONE
    assert resolver.log.questions == []
