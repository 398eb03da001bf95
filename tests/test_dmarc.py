"""DMARC (RFC 9989, RFC 7489): record syntax, policy discovery, alignment, policy and disposition.

No standalone DMARC suite exists (shared/testdata/dmarc/SOURCES.md), so every case here is composed
from the RFCs' own examples and sentences, quoted in each test's docstring. ``RFC 9989`` is
DMARCbis (draft-ietf-dmarc-dmarcbis-41 text); section numbers are those of that text.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator, Mapping

import authres
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtoaster.auth.dkim.result import DkimResult, DkimVerdict
from mailtoaster.auth.dmarc import (
    AlignmentMode,
    DmarcMode,
    DmarcOptions,
    DmarcOutcome,
    DmarcResult,
    Policy,
    PolicyFinder,
    PsdFlag,
    check_dmarc,
    dmarc_result,
    is_dmarc_record,
    parse_dmarc_record,
    psl_organizational_domain,
    tree_walk,
    tree_walk_targets,
    usable_policies,
)
from mailtoaster.auth.spf import SpfOutcome, SpfResult
from mailtoaster.dns import MX, Question, RecordingResolver, RRType, StaticResolver
from mailtoaster.message import Message

IP = ipaddress.ip_address("192.0.2.25")
RFC7489 = DmarcOptions(mode="rfc7489")

# --- helpers -------------------------------------------------------------------------------------


def _message(*from_values: str) -> Message:
    fields = "".join(f"From: {v}\r\n" for v in from_values or ("sender@example.com",))
    raw = f"{fields}Date: Fri, 15 Feb 2002 16:54:30 -0800\r\nTo: receiver@example.org\r\n"
    return Message.parse((raw + "Subject: here's a sample\r\n\r\nbody\r\n").encode())


def _spf(domain: str, result: SpfResult = SpfResult.PASS, identity: str = "mailfrom") -> SpfOutcome:
    sender = f"sender@{domain}" if identity == "mailfrom" else f"postmaster@{domain}"
    return SpfOutcome(result, domain, sender, IP, "mta.example.net", identity=identity)


def _dkim(domain: str, result: DkimResult = DkimResult.PASS, selector: str = "s1") -> DkimVerdict:
    return DkimVerdict(result, "signature verified", domain=domain, selector=selector)


def _zone(records: Mapping[str, str | tuple[str, ...] | list[str]], **existing: str) -> StaticResolver:
    """``_dmarc`` TXT records by domain: a str is one record, a tuple one record of several strings,
    a list several records. ``existing`` adds MX records so names exist."""
    resolver = StaticResolver()
    for domain, value in records.items():
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            strings = text if isinstance(text, tuple) else (text,)
            resolver.add(f"_dmarc.{domain}", RRType.TXT, tuple(s.encode() for s in strings))
    for name in existing.values():
        resolver.add(name, RRType.MX, MX(10, f"mx.{name}"))
    return resolver


async def _check(
    resolver: StaticResolver | RecordingResolver,
    *from_values: str,
    spf: SpfOutcome | None = None,
    dkim: list[DkimVerdict] | None = None,
    options: DmarcOptions | None = None,
) -> DmarcOutcome:
    return await check_dmarc(_message(*from_values), spf, dkim or [], resolver, options)


def _queried(resolver: RecordingResolver) -> list[str]:
    return [q.name for q in resolver.log.questions]


class _Draws:
    """An injected random source that records how often it was asked."""

    def __init__(self, *values: float) -> None:
        self.values: Iterator[float] = iter(values)
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return next(self.values)


# =================================================================================================
# Record syntax (RFC 9989 §4.7, §4.8; RFC 7489 §6.3, §6.4)
# =================================================================================================


def test_every_tag_is_parsed() -> None:
    """RFC 9989 §4.7 lists adkim, aspf, fo, np, p, psd, rua, ruf, sp, t, v; RFC 7489 §6.3 adds pct,
    rf and ri. "Unknown tags MUST be ignored" — but they are kept as data."""
    record = parse_dmarc_record(
        "v=DMARC1; p=quarantine; sp=reject; np=reject; adkim=s; aspf=s; pct=50; t=y; psd=n; "
        "rua=mailto:a@example.com, mailto:b@example.net!10m; ruf=mailto:f@example.com; fo=1:d:s; "
        "rf=afrf; ri=3600; x-future=1; zz=top"
    )
    assert record is not None
    assert (record.p, record.sp, record.np) == (Policy.QUARANTINE, Policy.REJECT, Policy.REJECT)
    assert (record.adkim, record.aspf) == (AlignmentMode.STRICT, AlignmentMode.STRICT)
    assert record.pct == 50
    assert record.testing is True
    assert record.psd is PsdFlag.NO
    assert record.rua == ("mailto:a@example.com", "mailto:b@example.net!10m")
    assert record.ruf == ("mailto:f@example.com",)
    assert record.fo == ("1", "d", "s")
    assert record.rf == ("afrf",)
    assert record.ri == 3600
    assert record.tag("zz") == "top"
    assert record.problems == ("tag 15 has an invalid name 'x-future'; ignored",)
    assert record.invalid == frozenset()


def test_defaults() -> None:
    """RFC 9989 §4.7: adkim and aspf default "r", fo "0", psd "u", t "n"; RFC 7489 §6.3: pct 100,
    rf "afrf", ri 86400."""
    record = parse_dmarc_record("v=DMARC1")
    assert record is not None
    assert record.p is None and record.sp is None and record.np is None
    assert record.adkim is AlignmentMode.RELAXED and record.aspf is AlignmentMode.RELAXED
    assert (record.pct, record.testing, record.psd) == (100, False, PsdFlag.UNKNOWN)
    assert (record.fo, record.rf, record.ri) == (("0",), ("afrf",), 86400)
    assert record.rua == () and record.ruf == ()
    assert record.problems == ()


@pytest.mark.parametrize(
    "text",
    [
        "v=DMARC2; p=none",
        "v=dmarc1; p=none",
        "p=none; v=DMARC1",
        " v=DMARC1; p=none",
        "v=DMARC1p=none",
        "v=DMARC10; p=none",
        "v=spf1 -all",
        "",
        "v=",
        "DMARC1",
    ],
)
def test_not_a_dmarc_record(text: str) -> None:
    """RFC 9989 §4.7 (v): "This tag MUST be the first tag in the list. The tag value is case
    sensitive, and the only possible value is "DMARC1". If the tag is not the first in the list, or
    the tag is absent, or the value is not "DMARC1", then the entire record MUST be ignored"."""
    assert parse_dmarc_record(text) is None
    assert not is_dmarc_record(text)


@pytest.mark.parametrize("text", ["v=DMARC1", "v=DMARC1;", "v = DMARC1 ; p=none", "V=DMARC1;P=REJECT"])
def test_version_tag_forms(text: str) -> None:
    """RFC 9989 §4.8: ``equals = *WSP "=" *WSP``; ``dmarc-version = "v" equals %s"DMARC1"`` — only the
    value is case-sensitive; tag names and keywords are ABNF literals (case-insensitive)."""
    record = parse_dmarc_record(text)
    assert record is not None
    assert record.problems == ()
    if "REJECT" in text:
        assert record.p is Policy.REJECT


@pytest.mark.parametrize(
    ("tag", "value", "attribute", "default"),
    [
        ("p", "bogus", "p", None),
        ("sp", "", "sp", None),
        ("np", "rejected", "np", None),
        ("adkim", "x", "adkim", AlignmentMode.RELAXED),
        ("aspf", "relaxed", "aspf", AlignmentMode.RELAXED),
        ("pct", "101", "pct", 100),
        ("pct", "-1", "pct", 100),
        ("pct", "5.5", "pct", 100),
        ("pct", "1000", "pct", 100),
        ("t", "yes", "testing", False),
        ("psd", "maybe", "psd", PsdFlag.UNKNOWN),
        ("fo", "0:1", "fo", ("0",)),
        ("fo", "2", "fo", ("0",)),
        ("fo", "d:d", "fo", ("0",)),
        ("ri", "-5", "ri", 86400),
        ("ri", "99999999999", "ri", 86400),
        ("rf", "afrf:", "rf", ("afrf",)),
        ("rua", "not a uri", "rua", ()),
        ("ruf", "mailto", "ruf", ()),
    ],
)
def test_invalid_values_fall_back_to_defaults(tag: str, value: str, attribute: str, default: object) -> None:
    """RFC 9989 §4.8: "Syntax errors in the remainder of the record MUST be discarded in favor of
    default values (if any) or ignored outright"."""
    record = parse_dmarc_record(f"v=DMARC1; {tag}={value}; adkim=s")
    assert record is not None
    assert getattr(record, attribute) == default
    assert tag in record.invalid
    assert any(tag in problem for problem in record.problems)
    assert record.adkim is AlignmentMode.STRICT or tag == "adkim"


@pytest.mark.parametrize(
    "text",
    [
        "v=DMARC1; p=reject; garbage; sp=none",
        "v=DMARC1; p=reject;; sp=none",
        "v=DMARC1; p=reject; 9x=1; sp=none",
        "v=DMARC1; p=reject; bad=\u00e9; sp=none",
        "v=DMARC1; p=reject; p=none; sp=none",
        "v=DMARC1; p=reject; P=none; sp=none",
    ],
)
def test_syntax_errors_do_not_spoil_the_other_tags(text: str) -> None:
    """RFC 9989 §4.8, as above; a repeated tag is a syntax error too, so only its first occurrence
    counts."""
    record = parse_dmarc_record(text)
    assert record is not None
    assert record.p is Policy.REJECT
    assert record.sp is Policy.NONE
    assert len(record.problems) == 1


def test_uri_list_keeps_the_valid_uris() -> None:
    """RFC 9989 §4.10.1 speaks of a rua tag that "contains at least one syntactically valid reporting
    URI": the good ones are kept, the bad ones reported."""
    record = parse_dmarc_record("v=DMARC1; rua=mailto:good@example.com,not a uri , https://r.example/x")
    assert record is not None
    assert record.rua == ("mailto:good@example.com", "https://r.example/x")
    assert "rua" not in record.invalid
    assert record.problems == ("rua: 'not a uri' is not a valid URI; ignored",)


def test_rfc9989_b25_record_with_multiple_uris_and_testing() -> None:
    """RFC 9989 Appendix B.2.5 record, published as three strings and joined (§4.5: "the module
    performing DMARC evaluation MUST concatenate these strings")."""
    text = "".join(
        (
            "v=DMARC1; p=quarantine; ",
            "rua=mailto:dmarc-feedback@example.com,",
            "mailto:tld-test@thirdparty.example.net; ",
            "t=y",
        )
    )
    record = parse_dmarc_record(text)
    assert record is not None
    assert record.p is Policy.QUARANTINE
    assert record.rua == ("mailto:dmarc-feedback@example.com", "mailto:tld-test@thirdparty.example.net")
    assert record.testing


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        # RFC 9989 §4.7: "If this tag is not present in an otherwise syntactically valid DMARC Policy
        # Record, then the record is treated as if it included "p=none""
        ("v=DMARC1", "dmarcbis", ("none", None, None)),
        ("v=DMARC1; sp=reject", "dmarcbis", ("none", "reject", None)),
        # §4.10.1: invalid p/sp/np with a valid rua: "act as if a record containing "p=none" was retrieved"
        ("v=DMARC1; p=bogus; sp=reject; rua=mailto:r@example.com", "dmarcbis", ("none", None, None)),
        ("v=DMARC1; p=reject; np=bogus; rua=mailto:r@example.com", "dmarcbis", ("none", None, None)),
        ("v=DMARC1; p=reject; sp=reject; np=quarantine", "dmarcbis", ("reject", "reject", "quarantine")),
        # ... "Otherwise, the Mail Receiver applies no DMARC processing to this message"
        ("v=DMARC1; p=bogus", "dmarcbis", None),
        ("v=DMARC1; p=reject; np=bogus", "dmarcbis", None),
        ("v=DMARC1; p=reject; sp=bogus; rua=bogus", "dmarcbis", None),
        # RFC 7489 §6.3: p is "REQUIRED for policy records"; §6.6.3 step 6 as above
        ("v=DMARC1", "rfc7489", None),
        ("v=DMARC1; rua=mailto:r@example.com", "rfc7489", ("none", None, None)),
        ("v=DMARC1; p=reject; sp=bogus", "rfc7489", None),
        # np is not RFC 7489's (RFC 9091 added it): an invalid one is only ignored
        ("v=DMARC1; p=reject; np=bogus", "rfc7489", ("reject", None, None)),
    ],
)
def test_usable_policies(
    text: str, mode: DmarcMode, expected: tuple[str, str | None, str | None] | None
) -> None:
    record = parse_dmarc_record(text)
    assert record is not None
    policies = usable_policies(record, mode)
    if expected is None:
        assert policies is None
    else:
        assert policies is not None
        assert (policies.p, policies.sp, policies.np) == expected


def test_policy_levels() -> None:
    """RFC 9989 §4.7 (t=y): "if the policy is "quarantine" ..., a policy of "none" will be applied ...;
    if the policy is "reject" ..., a policy of "quarantine" will be applied"."""
    assert Policy.REJECT.lowered() is Policy.QUARANTINE
    assert Policy.QUARANTINE.lowered() is Policy.NONE
    assert Policy.NONE.lowered() is Policy.NONE


# =================================================================================================
# The DNS Tree Walk (RFC 9989 §4.10)
# =================================================================================================


def test_tree_walk_targets_for_a_short_name() -> None:
    """RFC 9989 §4.10.2: "given the starting domain "a.mail.example.com", a search for the
    Organizational Domain would require a series of DNS queries ... starting with
    "_dmarc.a.mail.example.com" and finishing with "_dmarc.com"."""
    assert tree_walk_targets("a.mail.example.com") == [
        "a.mail.example.com",
        "mail.example.com",
        "example.com",
        "com",
    ]


def test_tree_walk_targets_are_capped_at_eight() -> None:
    """RFC 9989 §4.10: "for a message with the arbitrary Author Domain of
    "a.b.c.d.e.f.g.h.i.j.mail.example.com", a full DNS Tree Walk would require the following eight
    queries"."""
    assert tree_walk_targets("a.b.c.d.e.f.g.h.i.j.mail.example.com") == [
        "a.b.c.d.e.f.g.h.i.j.mail.example.com",
        "g.h.i.j.mail.example.com",
        "h.i.j.mail.example.com",
        "i.j.mail.example.com",
        "j.mail.example.com",
        "mail.example.com",
        "example.com",
        "com",
    ]


@pytest.mark.parametrize("labels", range(1, 20))
def test_never_more_than_eight_queries(labels: int) -> None:
    """RFC 9989 §4.10 step 4: "If x < 8, remove the left-most (highest-numbered) label from the
    subject domain. If x >= 8, remove the left-most (highest-numbered) labels from the subject domain
    until 7 labels remain"."""
    name = ".".join(f"l{i}" for i in range(labels))
    targets = tree_walk_targets(name)
    assert len(targets) == min(labels, 8)
    assert targets[0] == name and targets[-1] == f"l{labels - 1}"
    if labels >= 8:
        assert targets[1].count(".") == 6


async def _walk(resolver: StaticResolver, start: str) -> tuple[str, list[str]]:
    recording = RecordingResolver(resolver)
    walk = await tree_walk(PolicyFinder(recording), start)
    return walk.organizational_domain, [name.removeprefix("_dmarc.") for name in _queried(recording)]


async def test_org_domain_is_the_record_with_fewest_labels() -> None:
    """RFC 9989 §4.10.2: "If there are DMARC Policy Records published at "_dmarc.mail.example.com"
    and "_dmarc.example.com", but not at "_dmarc.a.mail.example.com" or "_dmarc.com", then the
    Organizational Domain for this domain would be "example.com"."""
    zone = _zone({"mail.example.com": "v=DMARC1; p=none", "example.com": "v=DMARC1; p=reject"})
    org, queried = await _walk(zone, "a.mail.example.com")
    assert org == "example.com"
    assert queried == ["a.mail.example.com", "mail.example.com", "example.com", "com"]


async def test_psd_n_is_the_org_domain_and_stops_the_walk() -> None:
    """RFC 9989 §4.10.2: "if a search for the Organizational Domain yields a DMARC Policy Record at
    "_dmarc.mail.example.com" with the "psd" tag set to "n", then the Organizational Domain for this
    domain would be "mail.example.com"" (§4.10 step 6: "If a single record remains and it contains a
    "psd=n" or "psd=y" tag, stop")."""
    zone = _zone({"mail.example.com": "v=DMARC1; p=none; psd=n", "example.com": "v=DMARC1; p=reject"})
    org, queried = await _walk(zone, "a.mail.example.com")
    assert org == "mail.example.com"
    assert queried == ["a.mail.example.com", "mail.example.com"]


async def test_psd_y_makes_the_org_domain_one_label_below() -> None:
    """RFC 9989 §4.10.2: "given the starting domain "a.mail.example.com", if a search for the
    Organizational Domain only yields a DMARC Policy Record at "_dmarc.com" and that record contains
    the tag "psd=y", then the Organizational Domain for this domain would be "example.com"."""
    org, _ = await _walk(_zone({"com": "v=DMARC1; p=reject; psd=y"}), "a.mail.example.com")
    assert org == "example.com"


async def test_psd_y_at_the_start_is_its_own_org_domain() -> None:
    """RFC 9989 §4.10.2 rule 2 excludes "the one for the domain where the tree walk started"; then
    the record with the fewest labels — the start — is the Organizational Domain."""
    org, queried = await _walk(_zone({"bank.example": "v=DMARC1; p=reject; psd=y"}), "bank.example")
    assert org == "bank.example"
    assert queried == ["bank.example"]


async def test_psd_u_does_not_stop_the_walk() -> None:
    """RFC 9989 §4.7 (psd): "u: ... Use the mechanism described in Section 4.10"."""
    zone = _zone({"mail.example.com": "v=DMARC1; p=none; psd=u", "example.com": "v=DMARC1; p=none"})
    org, queried = await _walk(zone, "mail.example.com")
    assert org == "example.com"
    assert queried == ["mail.example.com", "example.com", "com"]


async def test_no_record_anywhere_makes_the_start_the_org_domain() -> None:
    """RFC 9989 §4.10.2: "If this process does not determine the Organizational Domain, then the
    initial target domain is the Organizational Domain"."""
    org, _ = await _walk(_zone({}), "mail.example.com")
    assert org == "mail.example.com"


async def test_several_records_at_a_name_are_discarded_and_the_walk_goes_on() -> None:
    """RFC 9989 §4.10 step 6: "If multiple DMARC Policy Records are returned for a single target,
    they are all discarded" — so even their psd=n does not stop the walk."""
    zone = _zone(
        {
            "mail.example.com": ["v=DMARC1; p=none; psd=n", "v=DMARC1; p=reject; psd=n"],
            "example.com": "v=DMARC1; p=reject",
        }
    )
    org, queried = await _walk(zone, "mail.example.com")
    assert org == "example.com"
    assert queried == ["mail.example.com", "example.com", "com"]


async def test_other_txt_records_at_dmarc_names_are_ignored() -> None:
    """RFC 9989 §4.10 step 2: "Records that do not start with a "v" tag that identifies the current
    version of DMARC are discarded" — they do not make a set of several records."""
    zone = _zone({"example.com": ["v=spf1 -all", "v=DMARC1; p=reject", "hello"]})
    outcome = await _check(zone)
    assert outcome.result is DmarcResult.FAIL
    assert outcome.record_text == "v=DMARC1; p=reject"


# =================================================================================================
# Policy discovery (RFC 9989 §4.10.1; RFC 7489 §6.6.3)
# =================================================================================================


async def test_record_at_the_author_domain_applies_its_p() -> None:
    """RFC 9989 §4.10.1: "If the DMARC Policy Record to be applied is that of the Author Domain, then
    the Domain Owner Assessment Policy is taken from the "p" tag of the record"."""
    zone = _zone({"example.com": "v=DMARC1; p=quarantine; sp=reject"})
    outcome = await _check(zone)
    assert outcome.result is DmarcResult.FAIL
    assert (outcome.policy_domain, outcome.policy_tag) == ("example.com", "p")
    assert outcome.requested_policy is Policy.QUARANTINE
    assert outcome.disposition is Policy.QUARANTINE


async def test_subdomain_gets_sp_of_the_org_domain() -> None:
    """RFC 9989 §4.10.1: "If the DMARC Policy Record to be applied is that of either the
    Organizational Domain or the Public Suffix Domain and the Author Domain is a subdomain of that
    domain, then the Domain Owner Assessment Policy is taken from the "sp" tag (if any) if the Author
    Domain exists"."""
    zone = _zone({"example.com": "v=DMARC1; p=quarantine; sp=reject"}, a="news.example.com")
    outcome = await _check(zone, "a@news.example.com")
    assert (outcome.policy_domain, outcome.organizational_domain) == ("example.com", "example.com")
    assert (outcome.policy_tag, outcome.disposition) == ("sp", Policy.REJECT)
    assert outcome.author_domain_exists is None  # no np= tag: existence does not matter


async def test_subdomain_without_sp_gets_p() -> None:
    """RFC 9989 §4.10.1: "In the absence of applicable "sp" or "np" tags, the "p" tag policy is used
    for subdomains"."""
    outcome = await _check(_zone({"example.com": "v=DMARC1; p=quarantine"}), "a@news.example.com")
    assert (outcome.policy_tag, outcome.disposition) == ("p", Policy.QUARANTINE)


async def test_nonexistent_subdomain_gets_np() -> None:
    """RFC 9989 §4.10.1: "... or the "np" tag (if any) if the Author Domain does not exist"; §3.2.13:
    "if the response code received for a query for a domain name is NXDOMAIN, then the domain name
    and any possible subdomains do not exist"."""
    resolver = RecordingResolver(_zone({"example.com": "v=DMARC1; p=none; sp=quarantine; np=reject"}))
    outcome = await _check(resolver, "a@ghost.example.com")
    assert outcome.author_domain_exists is False
    assert (outcome.policy_tag, outcome.requested_policy, outcome.disposition) == (
        "np",
        Policy.REJECT,
        Policy.REJECT,
    )
    assert Question("ghost.example.com", RRType.MX) in resolver.log.questions


async def test_existing_subdomain_with_np_tag_gets_sp() -> None:
    zone = _zone({"example.com": "v=DMARC1; p=none; sp=quarantine; np=reject"}, a="news.example.com")
    outcome = await _check(zone, "a@news.example.com")
    assert outcome.author_domain_exists is True
    assert (outcome.policy_tag, outcome.disposition) == ("sp", Policy.QUARANTINE)


async def test_existing_only_as_empty_non_terminal_is_existing() -> None:
    """RFC 9989 Appendix A.4: "a "NODATA" response (rcode "NOERROR") means that the given resource
    record type queried for does not exist, but the domain name does"."""
    zone = _zone({"example.com": "v=DMARC1; p=none; np=reject"}, a="host.news.example.com")
    outcome = await _check(zone, "a@news.example.com")
    assert outcome.author_domain_exists is True
    assert outcome.disposition is Policy.NONE


async def test_nonexistent_subdomain_without_np_gets_sp() -> None:
    """RFC 9989 §4.7 (np): "If the "np" tag is absent, the policy specified by the "sp" tag (if the
    "sp" tag is present) or the policy specified by the "p" tag, if the "sp" tag is not present, MUST
    be applied for non-existent subdomains" — so no existence query is made."""
    resolver = RecordingResolver(_zone({"example.com": "v=DMARC1; p=none; sp=quarantine"}))
    outcome = await _check(resolver, "a@ghost.example.com")
    assert (outcome.policy_tag, outcome.disposition) == ("sp", Policy.QUARANTINE)
    assert all(q.rrtype is RRType.TXT for q in resolver.log.questions)


async def test_np_does_not_apply_to_the_domain_itself() -> None:
    """RFC 9989 §4.7 (np): "It applies only to non-existent subdomains of the Organizational Domain
    queried and not to either existing subdomains or the domain itself"."""
    outcome = await _check(_zone({"ghost.example": "v=DMARC1; p=quarantine; np=reject"}), "a@ghost.example")
    assert (outcome.policy_tag, outcome.disposition) == ("p", Policy.QUARANTINE)


async def test_temporary_error_in_the_existence_check_is_temperror() -> None:
    """RFC 9989 §5.3.6: "If one or more DNS queries required to perform DMARC validation on the
    message do not complete due to temporary or permanent DNS errors, the message cannot be
    considered to pass or fail"."""
    zone = _zone({"example.com": "v=DMARC1; p=none; np=reject"})
    zone.add_timeout("news.example.com", [RRType.TXT])
    outcome = await _check(zone, "a@news.example.com", dkim=[_dkim("other.example")])
    assert outcome.result is DmarcResult.TEMPERROR
    assert "exists" in outcome.reason
    assert (outcome.dkim_aligned, outcome.dkim_domains) == (False, ("other.example",))
    assert outcome.disposition is Policy.NONE


async def test_public_suffix_domain_policy() -> None:
    """RFC 9989 §4.10.1: the record applied is, failing the Author and Organizational Domains', "The
    Public Suffix Domain of the Author Domain"; §5.2: a PSO "MUST include the "psd" tag ... with a
    value of "y""."""
    zone = _zone({"example": "v=DMARC1; p=reject; sp=quarantine; np=reject; psd=y"}, a="shop.example")
    outcome = await _check(zone, "a@shop.example")
    assert (outcome.policy_domain, outcome.organizational_domain) == ("example", "shop.example")
    assert (outcome.policy_tag, outcome.disposition) == ("sp", Policy.QUARANTINE)
    ghost = await _check(zone, "a@ghost.example")
    assert (ghost.policy_tag, ghost.disposition) == ("np", Policy.REJECT)


async def test_psd_policy_applies_below_an_org_domain_without_record() -> None:
    """RFC 9989 §4.10.2: "if a search for the Organizational Domain only yields a DMARC Policy Record
    at "_dmarc.com" and that record contains the tag "psd=y", then the Organizational Domain for this
    domain would be "example.com"" — which has no record, so the PSD's record applies (§4.10.1)."""
    zone = _zone({"com": "v=DMARC1; p=none; sp=quarantine; psd=y"}, a="a.mail.example.com")
    outcome = await _check(zone, "x@a.mail.example.com")
    assert (outcome.policy_domain, outcome.organizational_domain) == ("com", "example.com")
    assert (outcome.policy_tag, outcome.disposition) == ("sp", Policy.QUARANTINE)


async def test_org_domain_record_wins_over_the_psd_record() -> None:
    """RFC 9989 §4.10.1: "PSD policy is not used for Organizational Domains that have published a
    DMARC Policy Record"."""
    zone = _zone(
        {"example": "v=DMARC1; p=reject; psd=y", "shop.example": "v=DMARC1; p=none"}, a="www.shop.example"
    )
    outcome = await _check(zone, "a@www.shop.example")
    assert outcome.policy_domain == "shop.example"
    assert outcome.disposition is Policy.NONE


async def test_records_below_the_org_domain_do_not_apply_to_deeper_names() -> None:
    """RFC 9989 Appendix B.4.2: "the Author Domain does not have a DMARC Policy Record, so the policy
    domain is the highest element in the DNS tree with a DMARC Policy Record"."""
    zone = _zone(
        {"a.example.com": "v=DMARC1; p=none", "example.com": "v=DMARC1; p=reject"}, x="x.a.example.com"
    )
    outcome = await _check(zone, "u@x.a.example.com")
    assert outcome.policy_domain == "example.com"
    assert outcome.disposition is Policy.REJECT


async def test_several_records_at_the_author_domain_fall_through_to_the_org_domain() -> None:
    """RFC 9989 §4.10 step 2: several records at one name "are all discarded"; the walk goes on."""
    zone = _zone(
        {"news.example.com": ["v=DMARC1; p=none", "v=DMARC1; p=none"], "example.com": "v=DMARC1; p=reject"},
        a="news.example.com",
    )
    outcome = await _check(zone, "a@news.example.com")
    assert outcome.policy_domain == "example.com"
    assert outcome.disposition is Policy.REJECT


async def test_only_discarded_records_are_permerror() -> None:
    """With nothing but a discarded set, no policy applies; the IANA description of permerror ("the
    retrieval of an improperly formatted DMARC Policy Record", RFC 9989 §9.2) fits better than none."""
    outcome = await _check(_zone({"example.com": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]}))
    assert outcome.result is DmarcResult.PERMERROR
    assert outcome.disposition is Policy.NONE
    assert "2 DMARC records at _dmarc.example.com" in outcome.reason


async def test_no_record_is_none() -> None:
    """RFC 9989 §4.10.1: "If the set produced by the DNS Tree Walk contains no DMARC Policy Record
    ..., Mail Receivers MUST NOT apply the DMARC mechanism to the message"; §9.2: "none: No DMARC
    Policy Record exists for the Author Domain"."""
    resolver = RecordingResolver(_zone({}))
    outcome = await _check(resolver, "a@mail.example.com", dkim=[_dkim("mail.example.com")])
    assert outcome.result is DmarcResult.NONE
    assert outcome.disposition is Policy.NONE
    assert outcome.record is None
    assert [lookup.domain for lookup in outcome.lookups] == ["mail.example.com", "example.com", "com"]
    assert _queried(resolver) == ["_dmarc.mail.example.com", "_dmarc.example.com", "_dmarc.com"]
    assert "no DMARC record for mail.example.com" in outcome.reason


async def test_temporary_error_on_the_author_domain_record_is_temperror() -> None:
    """RFC 9989 §9.2: "temperror: An error occurred during DMARC evaluation that is likely transient
    in nature, such as a DNS server being temporarily unreachable"."""
    zone = _zone({"example.com": "v=DMARC1; p=reject"})
    zone.add_timeout("_dmarc.example.com")
    outcome = await _check(zone, spf=_spf("example.com"))
    assert outcome.result is DmarcResult.TEMPERROR
    assert "_dmarc.example.com" in outcome.reason
    assert outcome.disposition is Policy.NONE


async def test_temporary_error_during_the_walk_is_temperror() -> None:
    zone = _zone({"example.com": "v=DMARC1; p=reject"})
    zone.add_timeout("_dmarc.com")
    outcome = await _check(zone, "a@news.example.com")
    assert outcome.result is DmarcResult.TEMPERROR
    assert "_dmarc.com" in outcome.reason


async def test_unusable_record_is_permerror_without_processing() -> None:
    """RFC 9989 §4.10.1: a record without a valid "p" tag and no valid rua: "the Mail Receiver applies
    no DMARC processing to this message"; §9.2 permerror: "such as the retrieval of an improperly
    formatted DMARC Policy Record"."""
    outcome = await _check(_zone({"example.com": "v=DMARC1; p=rejectt"}))
    assert outcome.result is DmarcResult.PERMERROR
    assert outcome.disposition is Policy.NONE
    assert outcome.record_text == "v=DMARC1; p=rejectt"
    assert outcome.policy_domain == "example.com"


async def test_invalid_policy_with_rua_is_monitoring() -> None:
    """RFC 9989 §4.10.1: "If a "rua" tag is present and contains at least one syntactically valid
    reporting URI, the Mail Receiver MUST act as if a record containing "p=none" was retrieved and
    continue processing"."""
    outcome = await _check(_zone({"example.com": "v=DMARC1; p=rejectt; rua=mailto:d@example.com"}))
    assert outcome.result is DmarcResult.FAIL
    assert (outcome.requested_policy, outcome.disposition) == (Policy.NONE, Policy.NONE)
    assert any("p=none" in note for note in outcome.notes)


async def test_record_without_p_is_none_policy_in_dmarcbis_but_unusable_in_rfc7489() -> None:
    """RFC 9989 §4.7: without "p" "the record is treated as if it included "p=none""; RFC 7489 §6.3:
    p is "REQUIRED for policy records"."""
    zone = _zone({"example.com": "v=DMARC1; sp=reject"})
    bis = await _check(zone)
    assert (bis.result, bis.disposition) == (DmarcResult.FAIL, Policy.NONE)
    old = await _check(zone, options=RFC7489)
    assert old.result is DmarcResult.PERMERROR


# --- RFC 7489 discovery --------------------------------------------------------------------------


async def test_rfc7489_queries_author_then_psl_org_domain() -> None:
    """RFC 7489 §6.6.3: "1. Mail Receivers MUST query the DNS for a DMARC TXT record at the DNS domain
    matching the one found in the RFC5322.From domain ... 3. If the set is now empty, the Mail
    Receiver MUST query the DNS for a DMARC TXT record at the DNS domain matching the Organizational
    Domain in place of the RFC5322.From domain in the message (if different)"."""
    resolver = RecordingResolver(_zone({"example.co.uk": "v=DMARC1; p=reject; sp=quarantine"}))
    outcome = await _check(resolver, "a@b.mail.example.co.uk", options=RFC7489)
    assert _queried(resolver) == ["_dmarc.b.mail.example.co.uk", "_dmarc.example.co.uk"]
    assert (outcome.policy_domain, outcome.organizational_domain) == ("example.co.uk", "example.co.uk")
    assert (outcome.mode, outcome.policy_tag, outcome.disposition) == ("rfc7489", "sp", Policy.QUARANTINE)


async def test_rfc7489_does_not_see_intermediate_records_but_the_tree_walk_does() -> None:
    """RFC 9989 Appendix C.3: "a Mail Receiver using an RFC 7489-based implementation of DMARC and
    relying on a PSL might arrive at a different answer"."""
    zone = _zone({"b.example.com": "v=DMARC1; p=reject"})
    old = await _check(zone, "x@a.b.example.com", options=RFC7489)
    assert old.result is DmarcResult.NONE
    bis = await _check(zone, "x@a.b.example.com")
    assert (bis.result, bis.policy_domain, bis.disposition) == (
        DmarcResult.FAIL,
        "b.example.com",
        Policy.REJECT,
    )


async def test_rfc7489_several_records_end_discovery() -> None:
    """RFC 7489 §6.6.3 step 5: "If the remaining set contains multiple records or no records, policy
    discovery terminates and DMARC processing is not applied to this message" — no fallback."""
    zone = _zone(
        {"news.example.com": ["v=DMARC1; p=none", "v=DMARC1; p=none"], "example.com": "v=DMARC1; p=reject"}
    )
    outcome = await _check(zone, "a@news.example.com", options=RFC7489)
    assert outcome.result is DmarcResult.PERMERROR
    assert "RFC 7489 §6.6.3" in outcome.reason


async def test_rfc7489_temperror() -> None:
    zone = _zone({"example.com": "v=DMARC1; p=reject"})
    zone.add_timeout("_dmarc.example.com")
    outcome = await _check(zone, "a@news.example.com", options=RFC7489)
    assert outcome.result is DmarcResult.TEMPERROR


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.com", "example.com"),
        ("a.b.c.d.example.com", "example.com"),
        ("mail.example.co.uk", "example.co.uk"),
        ("example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),
        ("com", "com"),
        ("foo.bar.unknown-tld-for-tests", "bar.unknown-tld-for-tests"),
    ],
)
def test_psl_organizational_domain(domain: str, org: str) -> None:
    """RFC 7489 §3.2: "Search the public suffix list for the name that matches the largest number of
    labels found in the subject DNS domain ... Construct a new DNS domain name using the name that
    matched from the public suffix list and prefixing to it the "x+1"th label from the subject DNS
    domain"; a name that is itself a public suffix has no such label and stays as it is."""
    assert psl_organizational_domain(domain) == org


async def test_rfc7489_organizational_domain_can_be_injected() -> None:
    options = DmarcOptions(mode="rfc7489", organizational_domain=lambda d: ".".join(d.split(".")[-3:]))
    zone = _zone({"corp.example.com": "v=DMARC1; p=reject"})
    outcome = await _check(
        zone, "a@x.corp.example.com", dkim=[_dkim("mail.corp.example.com")], options=options
    )
    assert (outcome.result, outcome.organizational_domain) == (DmarcResult.PASS, "corp.example.com")


# =================================================================================================
# Identifier alignment (RFC 9989 §4.4; RFC 7489 §3.1)
# =================================================================================================

EXAMPLE_COM = {"example.com": "v=DMARC1; p=reject"}
STRICT_SPF = {"example.com": "v=DMARC1; p=reject; aspf=s"}
STRICT_DKIM = {"example.com": "v=DMARC1; p=reject; adkim=s"}


@pytest.mark.parametrize("options", [DmarcOptions(), RFC7489], ids=["dmarcbis", "rfc7489"])
async def test_spf_relaxed_and_strict(options: DmarcOptions) -> None:
    """RFC 7489 §3.1.2: "if a message passes an SPF check with an RFC5321.MailFrom domain of
    "cbg.bounces.example.com", and the address portion of the RFC5322.From field contains
    "payments@example.com", the Authenticated RFC5321.MailFrom domain identifier and the
    RFC5322.From domain are considered to be "in alignment" in relaxed mode, but not in strict
    mode"."""
    spf = _spf("cbg.bounces.example.com")
    relaxed = await _check(_zone(EXAMPLE_COM), "payments@example.com", spf=spf, options=options)
    assert (relaxed.result, relaxed.spf_aligned, relaxed.spf_domain) == (
        DmarcResult.PASS,
        True,
        "cbg.bounces.example.com",
    )
    strict = await _check(_zone(STRICT_SPF), "payments@example.com", spf=spf, options=options)
    assert (strict.result, strict.spf_aligned, strict.disposition) == (DmarcResult.FAIL, False, Policy.REJECT)


@pytest.mark.parametrize("options", [DmarcOptions(), RFC7489], ids=["dmarcbis", "rfc7489"])
async def test_dkim_relaxed_and_strict(options: DmarcOptions) -> None:
    """RFC 7489 §3.1.1: "if a validated DKIM signature successfully verifies with a "d=" domain of
    "example.com", and the RFC5322.From address is "alerts@news.example.com", the DKIM "d=" domain and
    the RFC5322.From domain are considered to be "in alignment". In strict mode, this test would
    fail"."""
    relaxed = await _check(
        _zone(EXAMPLE_COM), "alerts@news.example.com", dkim=[_dkim("example.com")], options=options
    )
    assert (relaxed.result, relaxed.dkim_aligned) == (DmarcResult.PASS, True)
    assert relaxed.dkim_signature is not None and relaxed.dkim_signature.domain == "example.com"
    strict = await _check(
        _zone(STRICT_DKIM), "alerts@news.example.com", dkim=[_dkim("example.com")], options=options
    )
    assert (strict.result, strict.dkim_aligned) == (DmarcResult.FAIL, False)


@pytest.mark.parametrize(
    ("author", "identifier", "aligned"),
    [
        ("news.example.com", "foo.example.com", True),
        ("news.example.com", "news.example.com", True),
        ("news.example.com", "foo.example.net", False),
    ],
)
async def test_alignment_table(author: str, identifier: str, aligned: bool) -> None:
    """RFC 9989 §4.4 Table 1: foo.example.com/news.example.com "relaxed; the two have the same
    Organizational Domain"; news.example.com/news.example.com "strict; the two are identical";
    foo.example.net/news.example.com "none; the two do not share a common Organizational Domain"."""
    outcome = await _check(_zone(EXAMPLE_COM, a=author), f"x@{author}", dkim=[_dkim(identifier)])
    assert outcome.dkim_aligned is aligned
    assert outcome.result is (DmarcResult.PASS if aligned else DmarcResult.FAIL)


@pytest.mark.parametrize(
    ("mail_from", "author", "aligned"),
    [
        ("example.com", "example.com", True),
        ("child.example.com", "example.com", True),
        ("example.net", "child.example.com", False),
    ],
)
async def test_rfc9989_b11_spf_examples(mail_from: str, author: str, aligned: bool) -> None:
    """RFC 9989 Appendix B.1.1, examples 1-3: "the RFC5321.MailFrom domain and the Author Domain are
    identical"; "the Author Domain (example.com) is a parent of the RFC5321.MailFrom domain ...
    relaxed alignment"; "neither the same as, a parent of, nor a child of the Author Domain. Thus, the
    identifiers are not in alignment"."""
    outcome = await _check(_zone(EXAMPLE_COM, a=author), f"sender@{author}", spf=_spf(mail_from))
    assert outcome.spf_aligned is aligned


@pytest.mark.parametrize(
    ("d", "author", "aligned"),
    [
        ("example.com", "example.com", True),
        ("example.com", "child.example.com", True),
        ("example.net", "child.example.com", False),
    ],
)
async def test_rfc9989_b12_dkim_examples(d: str, author: str, aligned: bool) -> None:
    """RFC 9989 Appendix B.1.2, examples 1-3 (DKIM in strict, relaxed and no alignment)."""
    outcome = await _check(_zone(EXAMPLE_COM, a=author), f"sender@{author}", dkim=[_dkim(d)])
    assert outcome.dkim_aligned is aligned


@pytest.mark.parametrize("options", [DmarcOptions(), RFC7489], ids=["dmarcbis", "rfc7489"])
async def test_d_equals_com_never_aligns(options: DmarcOptions) -> None:
    """RFC 7489 §3.1.1: "a DKIM signature bearing a value of "d=com" would never allow an "in
    alignment" result, as "com" should appear on all public suffix lists"."""
    outcome = await _check(_zone(EXAMPLE_COM), "a@example.com", dkim=[_dkim("com")], options=options)
    assert (outcome.result, outcome.dkim_aligned) == (DmarcResult.FAIL, False)


async def test_any_passing_signature_may_align() -> None:
    """RFC 9989 §4.4.1: "A single email can contain multiple DKIM signatures, and it is considered to
    produce a DMARC "pass" result if any DKIM-Authenticated Identifier aligns with the Author
    Domain"."""
    second = _dkim("example.com", selector="s2")
    outcome = await _check(_zone(EXAMPLE_COM), dkim=[_dkim("esp.example.net"), second])
    assert outcome.result is DmarcResult.PASS
    assert outcome.dkim_signature is second
    assert outcome.dkim_domains == ("esp.example.net", "example.com")


async def test_exact_match_is_preferred_when_recording_the_aligned_signature() -> None:
    exact = _dkim("news.example.com", selector="exact")
    outcome = await _check(
        _zone(EXAMPLE_COM, a="news.example.com"), "a@news.example.com", dkim=[_dkim("example.com"), exact]
    )
    assert outcome.dkim_signature is exact


@pytest.mark.parametrize(
    "result",
    [
        DkimResult.FAIL,
        DkimResult.POLICY,
        DkimResult.NEUTRAL,
        DkimResult.TEMPERROR,
        DkimResult.PERMERROR,
        DkimResult.NONE,
    ],
)
async def test_only_passing_signatures_are_identifiers(result: DkimResult) -> None:
    """RFC 9989 Appendix B.1.2: "Alignment cannot exist with a DKIM signature that does not
    validate"."""
    outcome = await _check(_zone(EXAMPLE_COM), dkim=[_dkim("example.com", result)])
    assert (outcome.result, outcome.dkim_aligned, outcome.dkim_domains) == (DmarcResult.FAIL, False, ())


@pytest.mark.parametrize(
    "result",
    [
        SpfResult.FAIL,
        SpfResult.SOFTFAIL,
        SpfResult.NEUTRAL,
        SpfResult.NONE,
        SpfResult.TEMPERROR,
        SpfResult.PERMERROR,
    ],
)
async def test_only_spf_pass_is_an_identifier(result: SpfResult) -> None:
    """RFC 9989 Appendix B.1.1: "Alignment cannot exist if SPF does not produce a passing result"."""
    outcome = await _check(_zone(EXAMPLE_COM), spf=_spf("example.com", result))
    assert (outcome.result, outcome.spf_aligned, outcome.spf_domain) == (DmarcResult.FAIL, False, None)


async def test_null_reverse_path_uses_the_helo_identity() -> None:
    """RFC 9989 §3.2.4: "Section 2.4 of [RFC7208] describes the determination of the MAIL FROM
    identity for cases in which the SMTP MAIL command has a null path, i.e., the mailbox composed of
    the local-part "postmaster" and the HELO identity"."""
    outcome = await _check(_zone(EXAMPLE_COM), spf=_spf("mta.example.com", identity="helo"))
    assert (outcome.result, outcome.spf_domain, outcome.spf_aligned) == (
        DmarcResult.PASS,
        "mta.example.com",
        True,
    )


async def test_sender_id_pra_identity_is_not_an_spf_identifier() -> None:
    outcome = await _check(_zone(EXAMPLE_COM), spf=_spf("example.com", identity="pra"))
    assert (outcome.result, outcome.spf_domain) == (DmarcResult.FAIL, None)


async def test_comparisons_ignore_case_and_a_trailing_dot() -> None:
    """RFC 9989 §4.4: "Domain name comparisons in this context are case-insensitive, per [RFC4343]"."""
    outcome = await _check(
        _zone(STRICT_DKIM | {"example.com": "v=DMARC1; p=reject; adkim=s; aspf=s"}),
        "a@Example.COM",
        spf=_spf("EXAMPLE.com."),
        dkim=[_dkim("eXample.com")],
    )
    assert (outcome.result, outcome.spf_aligned, outcome.dkim_aligned) == (DmarcResult.PASS, True, True)


async def test_no_spf_check_at_all() -> None:
    outcome = await _check(_zone(EXAMPLE_COM), spf=None)
    assert (outcome.spf_aligned, outcome.spf_domain) == (False, None)


async def test_psd_n_subdomain_is_its_own_organization() -> None:
    """RFC 9989 §5.1.8: the "psd" tag "makes it possible for those local departments to declare any
    arbitrary node in their subtree as an Organizational Domain" — so a signature of that department
    does not align with the apex any more; with the RFC 7489 PSL it still does."""
    zone = _zone({"example.com": "v=DMARC1; p=reject", "dept.example.com": "v=DMARC1; p=none; psd=n"})
    bis = await _check(zone, "a@example.com", dkim=[_dkim("dept.example.com")])
    assert (bis.result, bis.dkim_aligned) == (DmarcResult.FAIL, False)
    old = await _check(zone, "a@example.com", dkim=[_dkim("dept.example.com")], options=RFC7489)
    assert (old.result, old.dkim_aligned) == (DmarcResult.PASS, True)


async def test_unrelated_identifier_needs_no_tree_walk() -> None:
    """An Organizational Domain is the name itself or a parent (RFC 9989 §4.10.2), so an identifier
    outside the Author's Organizational Domain cannot align and is not walked."""
    resolver = RecordingResolver(_zone(EXAMPLE_COM))
    outcome = await _check(resolver, dkim=[_dkim("mail.example.net")])
    assert outcome.result is DmarcResult.FAIL
    assert "_dmarc.mail.example.net" not in _queried(resolver)


async def test_strict_alignment_needs_no_tree_walk() -> None:
    """RFC 9989 §4.10.2: no alignment evaluation is needed when "The DMARC Policy Record for the
    Author Domain indicates strict alignment"."""
    resolver = RecordingResolver(_zone({"example.com": "v=DMARC1; p=reject; adkim=s; aspf=s"}))
    outcome = await _check(resolver, spf=_spf("b.example.com"), dkim=[_dkim("d.example.com")])
    assert outcome.result is DmarcResult.FAIL
    assert _queried(resolver) == ["_dmarc.example.com"]
    assert outcome.organizational_domain is None


async def test_identical_domains_need_no_tree_walk() -> None:
    """RFC 9989 §4.10.2: no alignment evaluation is needed when "The Author Domain and the
    Authenticated Identifier(s) are all the same domain, and there is a DMARC Policy Record published
    for that domain"."""
    resolver = RecordingResolver(_zone({"mail.example.com": "v=DMARC1; p=reject"}))
    outcome = await _check(
        resolver, "a@mail.example.com", spf=_spf("mail.example.com"), dkim=[_dkim("mail.example.com")]
    )
    assert outcome.result is DmarcResult.PASS
    assert _queried(resolver) == ["_dmarc.mail.example.com"]


async def test_undecidable_alignment_is_temperror() -> None:
    """RFC 9989 §5.3.6: when DNS queries "required to perform DMARC validation" fail, the message
    "cannot be considered to pass or fail"."""
    zone = _zone(EXAMPLE_COM)
    zone.add_timeout("_dmarc.mail.example.com")
    outcome = await _check(zone, dkim=[_dkim("mail.example.com")])
    assert (outcome.result, outcome.dkim_aligned) == (DmarcResult.TEMPERROR, None)
    assert "_dmarc.mail.example.com" in outcome.reason
    assert outcome.disposition is Policy.NONE


async def test_undecidable_author_org_domain_is_temperror() -> None:
    """The record is the Author Domain's own, but relaxed alignment needs its Organizational Domain,
    and the walk above it fails."""
    zone = _zone({"news.example.com": "v=DMARC1; p=reject"})
    zone.add_timeout("_dmarc.example.com")
    outcome = await _check(zone, "a@news.example.com", spf=_spf("bounce.news.example.com"))
    assert (outcome.result, outcome.spf_aligned, outcome.organizational_domain) == (
        DmarcResult.TEMPERROR,
        None,
        None,
    )
    assert "_dmarc.example.com" in outcome.reason


async def test_a_decided_pass_is_not_spoiled_by_an_undecidable_identifier() -> None:
    """Once an identifier aligned, the failing query is no longer "required" (RFC 9989 §5.3.6)."""
    zone = _zone(EXAMPLE_COM)
    zone.add_timeout("_dmarc.mail.example.com")
    outcome = await _check(zone, spf=_spf("example.com"), dkim=[_dkim("mail.example.com")])
    assert (outcome.result, outcome.spf_aligned, outcome.dkim_aligned) == (DmarcResult.PASS, True, None)


# --- RFC 9989 Appendix B.4 tree-walk examples ------------------------------------------------------


async def test_rfc9989_b41_simple_organizational_and_policy_example() -> None:
    """RFC 9989 B.4.1: Author example.com, MailFrom example.com, DKIM signing.example.com; records at
    "_dmarc.example.com" and "_dmarc.signing.example.com". ""example.com" is the highest element in
    the tree with a DMARC Policy Record ... so "example.com" is the Organizational Domain. Since this
    is also the Organizational Domain for the Author Domain, DKIM is aligned for relaxed alignment"."""
    zone = _zone({"example.com": "v=DMARC1; p=reject", "signing.example.com": "v=DMARC1; p=none"})
    outcome = await _check(zone, spf=_spf("example.com"), dkim=[_dkim("signing.example.com")])
    assert (outcome.result, outcome.spf_aligned, outcome.dkim_aligned) == (DmarcResult.PASS, True, True)
    assert (outcome.policy_domain, outcome.organizational_domain) == ("example.com", "example.com")
    assert [lookup.domain for lookup in outcome.lookups] == ["example.com", "com", "signing.example.com"]


async def test_rfc9989_b42_deep_tree_walk_example() -> None:
    """RFC 9989 B.4.2: for "a.b.c.d.e.f.g.h.i.j.k.example.com", "query
    "_dmarc.a.b.c.d.e.f.g.h.i.j.k.example.com", then query "_dmarc.g.h.i.j.k.example.com" (skipping
    the intermediate names), then query "_dmarc.h.i.j.k.example.com", "_dmarc.i.j.k.example.com",
    "_dmarc.j.k.example.com", "_dmarc.k.example.com", "_dmarc.example.com", and "_dmarc.com"" — and
    the policy domain is example.com."""
    author = "a.b.c.d.e.f.g.h.i.j.k.example.com"
    zone = _zone({"example.com": "v=DMARC1; p=reject", "signing.example.com": "v=DMARC1; p=none"}, a=author)
    recording = RecordingResolver(zone)
    outcome = await _check(
        recording, f"x@{author}", spf=_spf("example.com"), dkim=[_dkim("signing.example.com")]
    )
    assert outcome.result is DmarcResult.PASS
    assert (outcome.policy_domain, outcome.organizational_domain) == ("example.com", "example.com")
    assert _queried(recording)[:8] == [
        f"_dmarc.{author}",
        "_dmarc.g.h.i.j.k.example.com",
        "_dmarc.h.i.j.k.example.com",
        "_dmarc.i.j.k.example.com",
        "_dmarc.j.k.example.com",
        "_dmarc.k.example.com",
        "_dmarc.example.com",
        "_dmarc.com",
    ]


async def test_rfc9989_b43_psd_example() -> None:
    """RFC 9989 B.4.3: Author giant.bank.example, MailFrom mail.giant.bank.example, DKIM
    mail.mega.bank.example; "_dmarc.bank.example" has "psd=y". "The Organizational Domain is
    "giant.bank.example" ... SPF is aligned"; for the DKIM identifier "The Organizational Domain is
    "mega.bank.example", so DKIM is not aligned"."""
    zone = _zone(
        {"bank.example": "v=DMARC1; p=reject; psd=y", "giant.bank.example": "v=DMARC1; p=quarantine"}
    )
    outcome = await _check(
        zone,
        "ceo@giant.bank.example",
        spf=_spf("mail.giant.bank.example"),
        dkim=[_dkim("mail.mega.bank.example")],
    )
    assert (outcome.result, outcome.spf_aligned, outcome.dkim_aligned) == (DmarcResult.PASS, True, False)
    assert (outcome.policy_domain, outcome.organizational_domain) == (
        "giant.bank.example",
        "giant.bank.example",
    )
    failing = await _check(zone, "ceo@giant.bank.example", dkim=[_dkim("mail.mega.bank.example")])
    assert (failing.result, failing.disposition) == (DmarcResult.FAIL, Policy.QUARANTINE)


async def test_rfc9989_518_record_beyond_eight_labels_is_never_discovered() -> None:
    """RFC 9989 §5.1.8: with a psd=n record at "b.c.d.e.f.g.example.com" and Author Domain
    "mail.a.b.c.d.e.f.g.example.com", "the DMARC Policy Record published at the zone cut domain in
    this example will never be discovered. A Mail Receiver performing a Tree Walk would only perform
    queries for these names" (eight of them)."""
    author = "mail.a.b.c.d.e.f.g.example.com"
    zone = _zone(
        {"example.com": "v=DMARC1; p=reject", "b.c.d.e.f.g.example.com": "v=DMARC1; p=none; psd=n"}, a=author
    )
    recording = RecordingResolver(zone)
    outcome = await _check(recording, f"x@{author}")
    assert outcome.policy_domain == "example.com"
    assert outcome.disposition is Policy.REJECT
    assert _queried(recording) == [
        f"_dmarc.{author}",
        "_dmarc.c.d.e.f.g.example.com",
        "_dmarc.d.e.f.g.example.com",
        "_dmarc.e.f.g.example.com",
        "_dmarc.f.g.example.com",
        "_dmarc.g.example.com",
        "_dmarc.example.com",
        "_dmarc.com",
    ]


# =================================================================================================
# Disposition: t=y (RFC 9989) and pct (RFC 7489)
# =================================================================================================


@pytest.mark.parametrize(
    ("policy", "disposition"),
    [(Policy.REJECT, Policy.QUARANTINE), (Policy.QUARANTINE, Policy.NONE), (Policy.NONE, Policy.NONE)],
)
async def test_testing_lowers_the_policy_one_level(policy: Policy, disposition: Policy) -> None:
    """RFC 9989 §4.7 (t=y): "if the policy is "quarantine" and the value of the "t" tag is "y", a
    policy of "none" will be applied to failing messages; if the policy is "reject" and the value of
    the "t" tag is "y", a policy of "quarantine" will be applied"; "it has no effect on any policy
    ... that is "none"."""
    outcome = await _check(_zone({"example.com": f"v=DMARC1; p={policy}; t=y"}))
    assert outcome.result is DmarcResult.FAIL
    assert (outcome.requested_policy, outcome.disposition) == (policy, disposition)
    assert outcome.testing is (policy is not Policy.NONE)


async def test_testing_n_applies_the_policy() -> None:
    """RFC 9989 §4.7: "n: The default is a request to apply the Domain Owner Assessment Policy as
    specified to any message that produces a DMARC "fail" result"."""
    outcome = await _check(_zone({"example.com": "v=DMARC1; p=reject; t=n"}))
    assert (outcome.disposition, outcome.testing) == (Policy.REJECT, False)


async def test_testing_does_not_touch_a_pass() -> None:
    outcome = await _check(_zone({"example.com": "v=DMARC1; p=reject; t=y"}), dkim=[_dkim("example.com")])
    assert (outcome.result, outcome.disposition, outcome.testing) == (DmarcResult.PASS, Policy.NONE, False)


async def test_rfc9989_b25_subdomain_testing_then_enforcing() -> None:
    """RFC 9989 B.2.5: test.example.com publishes "p=quarantine ... t=y" ("does not want the Domain
    Owner Assessment Policy to be applied"), later "p=reject" with the testing flag removed."""
    testing = _zone(
        {
            "test.example.com": (
                "v=DMARC1; p=quarantine; ",
                "rua=mailto:dmarc-feedback@example.com,",
                "mailto:tld-test@thirdparty.example.net; ",
                "t=y",
            )
        }
    )
    first = await _check(testing, "qa@test.example.com")
    assert (first.result, first.disposition, first.testing) == (DmarcResult.FAIL, Policy.NONE, True)
    enforcing = _zone(
        {
            "test.example.com": (
                "v=DMARC1; p=reject; ",
                "rua=mailto:dmarc-feedback@example.com,",
                "mailto:tld-test@thirdparty.example.net",
            )
        }
    )
    later = await _check(enforcing, "qa@test.example.com")
    assert (later.result, later.disposition) == (DmarcResult.FAIL, Policy.REJECT)


async def test_testing_is_ignored_in_rfc7489_mode() -> None:
    """RFC 7489 has no "t" tag; "unknown tags MUST be ignored" (§6.3)."""
    outcome = await _check(_zone({"example.com": "v=DMARC1; p=reject; t=y"}), options=RFC7489)
    assert (outcome.disposition, outcome.testing) == (Policy.REJECT, False)


@pytest.mark.parametrize(
    ("pct", "draw", "sampled", "disposition", "calls"),
    [
        (100, None, True, Policy.REJECT, 0),
        (0, None, False, Policy.QUARANTINE, 0),
        (50, 0.49, True, Policy.REJECT, 1),
        (50, 0.50, False, Policy.QUARANTINE, 1),
        (1, 0.0, True, Policy.REJECT, 1),
        (99, 0.995, False, Policy.QUARANTINE, 1),
    ],
)
async def test_rfc7489_pct_sampling(
    pct: int, draw: float | None, sampled: bool, disposition: Policy, calls: int
) -> None:
    """RFC 7489 §6.6.4: "the Mail Receiver MUST NOT enact the requested policy ... on more than the
    stated percent of the totality of affected messages"; "If the email is not subject to the "reject"
    policy (due to the "pct" tag), the Mail Receiver SHOULD treat the email as though the
    "quarantine" policy applies"."""
    draws = _Draws(*(() if draw is None else (draw,)))
    options = DmarcOptions(mode="rfc7489", random=draws)
    outcome = await _check(_zone({"example.com": f"v=DMARC1; p=reject; pct={pct}"}), options=options)
    assert outcome.result is DmarcResult.FAIL
    assert (outcome.sampled, outcome.disposition) == (sampled, disposition)
    assert draws.calls == calls


async def test_rfc7489_quarantine_outside_the_sample_is_none() -> None:
    """RFC 7489 §6.6.4: "If the email is not subject to the "quarantine" policy (due to the "pct"
    tag), the Mail Receiver SHOULD apply local message classification as normal"."""
    options = DmarcOptions(mode="rfc7489", random=_Draws(0.9))
    outcome = await _check(_zone({"example.com": "v=DMARC1; p=quarantine; pct=50"}), options=options)
    assert (outcome.sampled, outcome.disposition) == (False, Policy.NONE)
    assert "outside the sample" in outcome.reason


async def test_rfc7489_b24_subdomain_sampling() -> None:
    """RFC 7489 Appendix B.2.4: "_dmarc.test IN TXT ( "v=DMARC1; p=quarantine; "
    "rua=mailto:dmarc-feedback@example.com," "mailto:tld-test@thirdparty.example.net!10m; " "pct=25" )"
    — the quarantine policy is enacted on a quarter of the failing mail, the rest gets local
    classification (RFC 7489 §6.6.4)."""
    zone = _zone(
        {
            "test.example.com": (
                "v=DMARC1; p=quarantine; ",
                "rua=mailto:dmarc-feedback@example.com,",
                "mailto:tld-test@thirdparty.example.net!10m; ",
                "pct=25",
            )
        }
    )
    dispositions = []
    for draw in (0.10, 0.24, 0.25, 0.80):
        options = DmarcOptions(mode="rfc7489", random=_Draws(draw))
        outcome = await _check(zone, "qa@test.example.com", options=options)
        dispositions.append(outcome.disposition)
        assert (
            outcome.record is not None
            and outcome.record.rua[1] == "mailto:tld-test@thirdparty.example.net!10m"
        )
    assert dispositions == [Policy.QUARANTINE, Policy.QUARANTINE, Policy.NONE, Policy.NONE]


async def test_pct_is_historic_in_dmarcbis() -> None:
    """RFC 9989 Appendix A.6 removes "pct" (§9.3 registers it as "historic"): it is kept as data but
    the policy applies to every failing message."""
    draws = _Draws()
    outcome = await _check(
        _zone({"example.com": "v=DMARC1; p=reject; pct=0"}), options=DmarcOptions(random=draws)
    )
    assert (outcome.disposition, outcome.sampled) == (Policy.REJECT, None)
    assert outcome.record is not None and outcome.record.pct == 0
    assert draws.calls == 0


async def test_pct_does_not_draw_for_passing_mail() -> None:
    draws = _Draws()
    options = DmarcOptions(mode="rfc7489", random=draws)
    outcome = await _check(
        _zone({"example.com": "v=DMARC1; p=reject; pct=50"}), dkim=[_dkim("example.com")], options=options
    )
    assert (outcome.result, outcome.sampled, draws.calls) == (DmarcResult.PASS, None, 0)


# =================================================================================================
# Whole examples
# =================================================================================================


@pytest.mark.parametrize("options", [DmarcOptions(), RFC7489], ids=["dmarcbis", "rfc7489"])
async def test_smtp_session_example(options: DmarcOptions) -> None:
    """RFC 9989 B.3.1 (RFC 7489 B.3.1): "Author Domain: example.com; SPF-authenticated Identifier:
    mail.example.com; DKIM-authenticated Identifier: example.com; DMARC Policy Record: "v=DMARC1;
    p=reject; aspf=r; rua=mailto:dmarc-feedback@example.com"" — "the SPF-Authenticated Identifier and
    the DKIM-Authenticated Identifier both align with the Author Domain. The Mail Receiver considers
    the above email to pass the DMARC check"."""
    zone = _zone({"example.com": "v=DMARC1; p=reject; aspf=r; rua=mailto:dmarc-feedback@example.com"})
    outcome = await _check(zone, spf=_spf("mail.example.com"), dkim=[_dkim("example.com")], options=options)
    assert (outcome.result, outcome.spf_aligned, outcome.dkim_aligned) == (DmarcResult.PASS, True, True)
    assert (outcome.requested_policy, outcome.disposition) == (Policy.REJECT, Policy.NONE)
    assert "aligned" in outcome.reason


async def test_monitoring_mode_example() -> None:
    """RFC 9989 B.2.1: "; DMARC Policy Record for the domain example.com _dmarc IN TXT ( "v=DMARC1;
    p=none; " "rua=mailto:dmarc-feedback@example.com" )" — "Mail Receivers should not alter how they
    treat these messages"; §5.4: "discovered policies of "p=none" MUST NOT modify existing mail
    handling processes"."""
    zone = _zone({"example.com": ("v=DMARC1; p=none; ", "rua=mailto:dmarc-feedback@example.com")})
    outcome = await _check(zone, spf=_spf("spoofer.example"))
    assert (outcome.result, outcome.disposition) == (DmarcResult.FAIL, Policy.NONE)
    assert outcome.record_text == "v=DMARC1; p=none; rua=mailto:dmarc-feedback@example.com"


# =================================================================================================
# The Author Domain (RFC 9989 §5.3.1, §11.5; RFC 7489 §6.6.1)
# =================================================================================================


async def test_no_from_field_is_permerror_with_the_configured_disposition() -> None:
    """RFC 9989 §4.2: "A message without a single, properly formed RFC5322.From header field does not
    comply with [RFC5322], and handling such a message is outside of the scope of this
    specification"; §11.5: the receiver must "recognize such messages as the threats they might be"."""
    resolver = RecordingResolver(_zone(EXAMPLE_COM))
    message = Message.parse(b"To: x@example.net\r\n\r\nbody\r\n")
    outcome = await check_dmarc(message, None, [], resolver)
    assert (outcome.result, outcome.disposition, outcome.author_domain) == (
        DmarcResult.PERMERROR,
        Policy.NONE,
        "",
    )
    assert "no From field" in outcome.reason
    assert resolver.log.questions == []
    strict = await check_dmarc(
        message, None, [], resolver, DmarcOptions(invalid_from_disposition=Policy.REJECT)
    )
    assert strict.disposition is Policy.REJECT


@pytest.mark.parametrize(
    "value", ["", "joe", "undisclosed-recipients:;", "<broken@example.com", "joe, ann@example.com"]
)
async def test_unusable_from_field_is_permerror(value: str) -> None:
    outcome = await _check(_zone(EXAMPLE_COM), value)
    assert outcome.result is DmarcResult.PERMERROR
    assert outcome.reason.startswith("no Author Domain")


async def test_several_addresses_in_one_domain_are_one_author_domain() -> None:
    """RFC 9989 §5.3.1: "If zero or more than one domain is extracted ..." — it counts domains."""
    outcome = await _check(_zone(EXAMPLE_COM), "a@example.com, b@example.com", dkim=[_dkim("example.com")])
    assert (outcome.result, outcome.per_domain) == (DmarcResult.PASS, ())


async def test_several_author_domains_apply_the_strictest_failing_policy() -> None:
    """RFC 9989 §11.5: "a recommended approach as per [RFC7489] is to apply the DMARC mechanism to each
    domain found in the RFC5322.From field as the Author Domain and apply the most strict policy
    selected among the checks that fail"."""
    zone = _zone(
        {
            "example.com": "v=DMARC1; p=quarantine",
            "example.org": "v=DMARC1; p=reject",
            "example.net": "v=DMARC1; p=none",
        }
    )
    outcome = await _check(zone, "a@example.net, b@example.com, c@example.org")
    assert (outcome.result, outcome.author_domain, outcome.disposition) == (
        DmarcResult.FAIL,
        "example.org",
        Policy.REJECT,
    )
    assert [(o.author_domain, o.disposition) for o in outcome.per_domain] == [
        ("example.net", Policy.NONE),
        ("example.com", Policy.QUARANTINE),
        ("example.org", Policy.REJECT),
    ]
    assert "3 author domains" in outcome.reason


async def test_several_author_domains_one_failing_is_fail() -> None:
    zone = _zone({"example.com": "v=DMARC1; p=quarantine", "example.org": "v=DMARC1; p=reject"})
    outcome = await _check(zone, "a@example.com, b@example.org", dkim=[_dkim("example.org")])
    assert (outcome.result, outcome.author_domain, outcome.disposition) == (
        DmarcResult.FAIL,
        "example.com",
        Policy.QUARANTINE,
    )


async def test_several_author_domains_all_passing_or_without_policy_is_pass() -> None:
    zone = _zone({"example.org": "v=DMARC1; p=reject"})
    outcome = await _check(zone, "a@example.com, b@example.org", dkim=[_dkim("example.org")])
    assert [o.result for o in outcome.per_domain] == [DmarcResult.NONE, DmarcResult.PASS]
    assert outcome.result is DmarcResult.PASS


async def test_several_from_fields_are_evaluated_like_several_domains() -> None:
    """RFC 7489 §6.6.1: "Messages with multiple RFC5322.From fields are typically rejected, since that
    form is forbidden under RFC 5322"; evaluated here like several domains, and said."""
    zone = _zone({"example.com": "v=DMARC1; p=reject"})
    outcome = await _check(zone, "a@example.com", "b@example.org")
    assert (outcome.result, outcome.disposition) == (DmarcResult.FAIL, Policy.REJECT)
    assert "2 From fields" in outcome.reason


async def test_several_author_domains_can_be_refused() -> None:
    """RFC 9989 §5.3.1: "If zero or more than one domain is extracted from the RFC5322.From header
    field, then DMARC validation is not possible and the process terminates"."""
    options = DmarcOptions(multiple_authors="permerror", invalid_from_disposition=Policy.QUARANTINE)
    resolver = RecordingResolver(_zone(EXAMPLE_COM))
    outcome = await _check(resolver, "a@example.com, b@example.org", options=options)
    assert (outcome.result, outcome.disposition) == (DmarcResult.PERMERROR, Policy.QUARANTINE)
    assert "not possible" in outcome.reason
    assert resolver.log.questions == []


async def test_too_many_author_domains_are_not_evaluated() -> None:
    """RFC 9989 §11.5: "Limiting the number of Author Domains processed will avoid this risk"."""
    resolver = RecordingResolver(_zone(EXAMPLE_COM))
    many = ", ".join(f"u@d{i}.example" for i in range(6))
    outcome = await _check(resolver, many)
    assert outcome.result is DmarcResult.PERMERROR
    assert "more than 5" in outcome.reason
    assert resolver.log.questions == []


async def test_u_label_author_domain_is_looked_up_as_a_label() -> None:
    """RFC 9989 §5.3.1: "If the domain is a U-label, the domain MUST be converted to an A-label"."""
    resolver = RecordingResolver(_zone({"xn--bcher-kva.example": "v=DMARC1; p=reject"}))
    outcome = await _check(resolver, "a@bücher.example")
    assert outcome.author_domain == "xn--bcher-kva.example"
    assert outcome.disposition is Policy.REJECT


# =================================================================================================
# Authentication-Results (RFC 8601; RFC 9989 §9.1)
# =================================================================================================


def _header(outcome: DmarcOutcome) -> str:
    return str(
        authres.AuthenticationResultsHeader(authserv_id="mx.example.net", results=[dmarc_result(outcome)])
    )


async def test_authres_fail() -> None:
    """RFC 9989 §9.1: header.from is "The domain portion of the RFC5322.From header field";
    policy.dmarc is "The evaluated DMARC policy applied/to be applied after policy options have been
    processed. Must be "none", "quarantine", or "reject""."""
    outcome = await _check(_zone({"example.com": "v=DMARC1; p=reject; sp=quarantine; t=y"}))
    assert _header(outcome) == (
        "Authentication-Results: mx.example.net; dmarc=fail (p=reject sp=quarantine dis=quarantine) "
        "header.from=example.com policy.dmarc=quarantine"
    )


async def test_authres_pass_with_np() -> None:
    outcome = await _check(
        _zone({"example.com": "v=DMARC1; p=reject; np=reject"}), dkim=[_dkim("example.com")]
    )
    assert _header(outcome) == (
        "Authentication-Results: mx.example.net; dmarc=pass (p=reject sp=reject np=reject dis=none) "
        "header.from=example.com policy.dmarc=none"
    )


async def test_authres_none_and_errors_carry_the_reason() -> None:
    none = await _check(_zone({}))
    header = _header(none)
    assert header.startswith(
        "Authentication-Results: mx.example.net; dmarc=none (no DMARC record for example.com"
    )
    assert "policy.dmarc" not in header
    assert header.endswith(" header.from=example.com")
    invalid = dmarc_result(DmarcOutcome(DmarcResult.PERMERROR, "bad (From)\r\nfield"))
    assert invalid.result_comment == "bad \\(From\\)  field"
    assert invalid.header_from is None
    parsed = authres.AuthenticationResultsHeader.parse(_header(none))
    assert parsed.results[0].result == "none"


# =================================================================================================
# Fuzzing: defined results, never exceptions
# =================================================================================================

_TAG_VALUES = {
    "p": ["none", "quarantine", "reject"],
    "sp": ["none", "quarantine", "reject"],
    "np": ["none", "quarantine", "reject"],
    "adkim": ["r", "s"],
    "aspf": ["r", "s"],
    "t": ["y", "n"],
    "psd": ["y", "n", "u"],
    "pct": [str(n) for n in (0, 1, 50, 99, 100)],
    "fo": ["0", "1", "d", "s", "0:d", "1:s:d"],
}


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=150) | st.builds(lambda t: "v=DMARC1;" + t, st.text(max_size=150)))
def test_record_parser_never_raises(text: str) -> None:
    record = parse_dmarc_record(text)
    if record is None:
        assert not is_dmarc_record(text)
        return
    assert record.tags[0] == ("v", "DMARC1")
    assert 0 <= record.pct <= 100
    assert 0 <= record.ri < 2**32
    assert record.invalid <= {
        "p",
        "sp",
        "np",
        "adkim",
        "aspf",
        "pct",
        "t",
        "psd",
        "rua",
        "ruf",
        "fo",
        "rf",
        "ri",
    }
    for mode in ("dmarcbis", "rfc7489"):
        usable_policies(record, mode)


@settings(max_examples=300)
@given(
    st.sets(st.sampled_from(sorted(_TAG_VALUES))).flatmap(
        lambda names: st.fixed_dictionaries({n: st.sampled_from(_TAG_VALUES[n]) for n in names})
    ),
    st.sampled_from(["; ", ";", " ; "]),
    st.booleans(),
)
def test_valid_records_round_trip(tags: dict[str, str], separator: str, upper: bool) -> None:
    """Any record written by the grammar reads back with the values written."""
    text = separator.join(["v=DMARC1"] + [f"{k}={v.upper() if upper else v}" for k, v in tags.items()])
    record = parse_dmarc_record(text)
    assert record is not None
    assert record.problems == () and record.invalid == frozenset()
    for name in ("p", "sp", "np"):
        assert getattr(record, name) == (Policy(tags[name]) if name in tags else None)
    assert record.testing == (tags.get("t") == "y")
    assert record.pct == int(tags.get("pct", "100"))
    assert record.psd == PsdFlag(tags.get("psd", "u"))


_FUZZ_NAMES = ["example.com", "mail.example.com", "com", "a.b.mail.example.com"]


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(_FUZZ_NAMES), st.lists(st.text(max_size=60), max_size=2), max_size=4),
    st.sampled_from(
        ["a@a.b.mail.example.com", "a@example.com", "a@mail.example.com, b@example.org", "", "x"]
    ),
    st.lists(st.sampled_from(["example.com", "mail.example.com", "evil.example", ""]), max_size=2),
    st.sampled_from(["dmarcbis", "rfc7489"]),
    st.sets(st.sampled_from(_FUZZ_NAMES), max_size=2),
)
def test_check_never_raises(
    records: dict[str, list[str]], from_value: str, d: list[str], mode: DmarcMode, timeouts: set[str]
) -> None:
    zone = _zone({name: texts for name, texts in records.items() if texts})
    for name in timeouts:
        zone.add_timeout(f"_dmarc.{name}")
    options = DmarcOptions(mode=mode, random=lambda: 0.5)
    outcome = asyncio.run(
        _check(zone, from_value, spf=_spf("mail.example.com"), dkim=[_dkim(x) for x in d], options=options)
    )
    assert outcome.result in DmarcResult
    assert outcome.reason
    if outcome.result is not DmarcResult.FAIL:
        assert outcome.disposition is Policy.NONE or outcome.result is DmarcResult.PERMERROR
    str(dmarc_result(outcome))
