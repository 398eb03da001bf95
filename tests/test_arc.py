"""ARC (RFC 8617): the ValiMail validation and signing suites, stalwart's sealed messages, sealing
round trips across several hops, failure reasons, the AAR consolidation, and fuzzing."""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.auth.arc import (
    ArcHeaderError,
    ArcOptions,
    ArcOutcome,
    ArcResult,
    ArcSigningError,
    add_arc_set,
    arc_result,
    seal_arc,
    sign_arc,
    validate_arc,
)
from mailtoaster.auth.arc.headers import parse_arc_field
from mailtoaster.auth.dkim import DkimSigner, sign_message, verify_dkim
from mailtoaster.auth.dkim.engine import PrivateKey
from mailtoaster.auth.results import authentication_results, dkim_results
from mailtoaster.dns import RRType, StaticResolver
from mailtoaster.message import Header, Message
from tests import arcsuite
from tests.dkimcorpus import txt_rdata

needs_data = pytest.mark.skipif(not arcsuite.available(), reason="shared ARC test data not present")
VALIDATION = arcsuite.validation_cases() if arcsuite.available() else []
SIGNING = arcsuite.sign_cases() if arcsuite.available() else []
MAIL_AUTH = arcsuite.mail_auth_cases() if arcsuite.available() else []


async def validate(raw: bytes, resolver: StaticResolver, **options: object) -> ArcOutcome:
    return await validate_arc(Message.parse(raw), resolver, ArcOptions(**options))  # type: ignore[arg-type]


# --- the ValiMail suites ------------------------------------------------------------------------


@needs_data
def test_suites_have_every_case() -> None:
    assert len(VALIDATION) == arcsuite.VALIDATION_COUNT
    assert len({case.id for case in VALIDATION}) == arcsuite.VALIDATION_COUNT
    assert len(SIGNING) == arcsuite.SIGN_COUNT


@needs_data
@pytest.mark.parametrize("case", VALIDATION, ids=[case.id for case in VALIDATION])
async def test_validation_suite(case: arcsuite.ValidationCase) -> None:
    outcome = await validate(case.message, case.resolver)
    assert outcome.result.value == case.expected, outcome.reason
    assert outcome.reason
    if outcome.result is ArcResult.FAIL:
        assert not outcome.temporary


@needs_data
@pytest.mark.parametrize("case", SIGNING, ids=[case.id for case in SIGNING])
async def test_signing_suite(case: arcsuite.SignCase) -> None:
    chain = await validate(case.message, case.resolver)
    fields = sign_arc(
        case.message,
        domain=case.domain,
        selector=case.selector,
        private_key=case.private_key,
        authserv_id=case.authserv_id,
        chain=chain,
        timestamp=case.timestamp,
        headers=case.headers,
    )
    if not case.expected_as.strip():
        assert fields == [] and chain.terminated
        return
    aar, ams, seal = fields
    assert arcsuite.tag_set(aar) == arcsuite.tag_set(case.expected_aar)
    assert arcsuite.tag_set(ams) == arcsuite.tag_set(case.expected_ams)
    assert arcsuite.tag_set(seal) == arcsuite.tag_set(case.expected_as)
    resealed = await validate(add_arc_set(case.message, fields), case.resolver)
    assert resealed.result is (ArcResult.FAIL if chain.result is ArcResult.FAIL else ArcResult.PASS)


@needs_data
@pytest.mark.parametrize("case", MAIL_AUTH, ids=[case.name for case in MAIL_AUTH])
async def test_mail_auth_messages_pass(case: arcsuite.MailAuthArcCase) -> None:
    outcome = await validate(case.message, case.resolver)
    assert outcome.result is ArcResult.PASS, outcome.reason
    assert (outcome.sets, outcome.oldest_pass) == ({"001": 1, "002": 2}[case.name], 0)
    assert all(item.signature_valid and item.seal_valid for item in outcome.details)


@needs_data
async def test_ed25519_sets_are_an_extension_that_can_be_refused() -> None:
    """002's i=1 set is ed25519-sha256, which RFC 8617 does not name: accepted by default (as
    stalwart does), refused with ``allow_ed25519=False`` (as dkimpy does)."""
    case = next(case for case in MAIL_AUTH if case.name == "002")
    assert (await validate(case.message, case.resolver)).details[0].algorithm == "ed25519-sha256"
    strict = await validate(case.message, case.resolver, allow_ed25519=False)
    assert strict.result is ArcResult.FAIL
    assert strict.failed_instance == 1
    assert "ed25519" in strict.reason


@needs_data
async def test_suite_details_and_oldest_pass() -> None:
    case = next(case for case in VALIDATION if case.id.endswith("/cv_pass_i2_1_ams1_invalid"))
    outcome = await validate(case.message, case.resolver)
    assert (outcome.result, outcome.sets, outcome.oldest_pass) == (ArcResult.PASS, 2, 2)
    first, second = outcome.details
    assert first.signature_valid is False and first.seal_valid is True
    assert (second.instance, second.chain_validation, second.authserv_id) == (2, "pass", "lists.example.org")
    assert second.results.startswith("spf=pass smtp.mfrom=jqd@d1.example; dkim=pass")


# --- sealing round trips over several hops ------------------------------------------------------

NOW = 1_700_000_000
ORIGINAL = (
    b"From: Joe SixPack <joe@origin.example>\r\n"
    b"To: Fans <fans@list.example>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n"
    b"Message-ID: <20030712040037.46341@origin.example>\r\n"
    b"\r\n"
    b"We lost the game. Are you hungry yet?\r\n"
)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)
ED_KEYS = [ed25519.Ed25519PrivateKey.generate() for _ in range(3)]


def key_record(key: PrivateKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def resolver_for(keys: dict[str, PrivateKey]) -> StaticResolver:
    resolver = StaticResolver()
    for name, key in keys.items():
        resolver.add(name, RRType.TXT, txt_rdata(key_record(key)))
    return resolver


HOPS: list[tuple[str, PrivateKey, bool]] = [
    ("list.example", ED_KEYS[0], True),
    ("forward.example", RSA_KEY, False),
    ("lists.other.example", ED_KEYS[1], True),
]
"""(domain, key, modifies the message like a mailing list) per hop."""
RESOLVER = resolver_for(
    {"sel._domainkey.origin.example": RSA_KEY, **{f"arc._domainkey.{d}": key for d, key, _ in HOPS}}
)


def like_a_mailing_list(raw: bytes) -> bytes:
    """Tag the subject and add a footer: what breaks the author's DKIM signature."""
    raw = raw.replace(b"Subject: ", b"Subject: [fans] ", 1)
    return raw + b"--\r\nfans mailing list\r\n"


async def relay(raw: bytes, domain: str, key: PrivateKey, modifies: bool) -> bytes:
    """One ARC hop: authenticate, record the results in an AR field, maybe modify, then seal."""
    message = Message.parse(raw)
    chain = await validate_arc(message, RESOLVER)
    dkim = await verify_dkim(message, RESOLVER)
    results = authentication_results(domain, [*dkim_results(dkim), arc_result(chain)])
    raw = (results + "\r\n").encode() + (like_a_mailing_list(raw) if modifies else raw)
    fields = sign_arc(
        raw, domain=domain, selector="arc", private_key=key, authserv_id=domain, chain=chain, timestamp=NOW
    )
    return add_arc_set(raw, fields)


@pytest.mark.parametrize("hops", [1, 2, 3])
async def test_round_trip_over_hops(hops: int) -> None:
    raw = sign_message(ORIGINAL, [DkimSigner("origin.example", "sel", RSA_KEY)], timestamp=NOW)
    for domain, key, modifies in HOPS[:hops]:
        raw = await relay(raw, domain, key, modifies)
    message = Message.parse(raw)
    assert not [verdict for verdict in await verify_dkim(message, RESOLVER) if verdict.passed]
    outcome = await validate_arc(message, RESOLVER)
    assert outcome.result is ArcResult.PASS, outcome.reason
    assert outcome.sets == hops
    assert outcome.oldest_pass == (3 if hops == 3 else 0)
    assert [item.seal_domain for item in outcome.details] == [domain for domain, _, _ in HOPS[:hops]]
    assert [item.chain_validation for item in outcome.details] == ["none"] + ["pass"] * (hops - 1)
    first = outcome.details[0]
    assert first.authserv_id == "list.example"
    assert "dkim=pass" in first.results and "arc=none" in first.results


async def test_a_changed_aar_breaks_the_seal_of_its_set() -> None:
    raw = await relay(await relay(ORIGINAL, *HOPS[0]), *HOPS[1])
    forged = raw.replace(b"i=1; list.example; ", b"i=1; list.example; spf=pass; ", 1)
    outcome = await validate_arc(Message.parse(forged), RESOLVER)
    assert (outcome.result, outcome.failed_instance) == (ArcResult.FAIL, 2)
    assert outcome.reason == "ARC-Seal i=2: signature did not verify"
    assert [item.seal_valid for item in outcome.details] == [None, False]


async def test_a_change_after_the_last_seal_fails_the_newest_ams() -> None:
    raw = await relay(ORIGINAL, *HOPS[0])
    outcome = await validate_arc(Message.parse(raw + b"P.S.\r\n"), RESOLVER)
    assert (outcome.result, outcome.failed_instance) == (ArcResult.FAIL, 1)
    assert outcome.reason == "ARC-Message-Signature i=1: body hash mismatch"


async def test_sealing_a_broken_chain_says_fail_and_ends_it() -> None:
    raw = await relay(ORIGINAL, *HOPS[0])
    broken = raw.replace(b"i=1; list.example; ", b"i=1; list.example; x=y; ", 1)
    chain, fields = await seal_arc(
        broken, RESOLVER, domain="forward.example", selector="arc", private_key=RSA_KEY, authserv_id="mx"
    )
    assert chain.result is ArcResult.FAIL
    assert b"\tcv=fail;" in fields[2]
    assert fields[0].startswith(b"ARC-Authentication-Results: i=2; mx; arc=fail")
    sealed = add_arc_set(broken, fields)
    outcome = await validate_arc(Message.parse(sealed), RESOLVER)
    assert (outcome.result, outcome.terminated) == (ArcResult.FAIL, True)
    assert outcome.reason == "ARC-Seal i=2 says cv=fail: the chain was already broken"
    assert seal(sealed, chain=outcome) == []


async def test_dns_trouble_is_a_temporary_failure() -> None:
    raw = await relay(ORIGINAL, *HOPS[0])
    resolver = StaticResolver()
    resolver.add_timeout("arc._domainkey.list.example")
    outcome = await validate_arc(Message.parse(raw), resolver)
    assert (outcome.result, outcome.temporary) == (ArcResult.FAIL, True)
    assert "TIMEOUT" in outcome.reason


async def test_rsa_keys_below_the_minimum_fail() -> None:
    """The suite's ``as_fields_b_512`` covers RFC 8301's 1024; cryptography will not make smaller keys."""
    raw = await relay(ORIGINAL, "forward.example", RSA_KEY, False)
    assert (await validate(raw, RESOLVER)).result is ArcResult.PASS
    refused = await validate(raw, RESOLVER, min_rsa_bits=2048)
    assert refused.result is ArcResult.FAIL
    assert refused.reason == "ARC-Message-Signature i=1: key too small (1024 bits, fewer than 2048)"


async def test_more_than_fifty_sets_fail() -> None:
    fields = [b"ARC-Seal: i=51; a=rsa-sha256; cv=pass; d=x.example; s=s; b=AAAA\r\n"]
    outcome = await validate(b"".join(fields) + ORIGINAL, RESOLVER)
    assert outcome.result is ArcResult.FAIL
    assert "1..50" in outcome.reason


async def test_unsealed_message_is_none() -> None:
    outcome = await validate(ORIGINAL, RESOLVER)
    assert (outcome.result, outcome.sets, outcome.reason) == (ArcResult.NONE, 0, "no ARC sets")
    assert str(arc_result(outcome)) == "arc=none"


# --- signing details ----------------------------------------------------------------------------


def seal(raw: bytes, **kwargs: object) -> list[bytes]:
    arguments: dict[str, object] = {
        "domain": "list.example",
        "selector": "arc",
        "private_key": ED_KEYS[0],
        "authserv_id": "list.example",
        "timestamp": NOW,
    }
    arguments.update(kwargs)
    return sign_arc(raw, **arguments)  # type: ignore[arg-type]


def unfolded(field: bytes) -> str:
    return " ".join(field.decode().split())


def aar_text(fields: list[bytes]) -> str:
    return unfolded(fields[0])


def test_aar_takes_this_servers_results_from_the_message_and_the_caller() -> None:
    raw = (
        b"Authentication-Results: other.example; spf=fail\r\n"
        b"Authentication-Results: List.Example 1; spf=pass smtp.mailfrom=joe@origin.example\r\n" + ORIGINAL
    )
    assert aar_text(seal(raw, auth_results="dkim=pass (good; really) header.d=origin.example")) == (
        "ARC-Authentication-Results: i=1; list.example; arc=none; "
        "spf=pass smtp.mailfrom=joe@origin.example; dkim=pass (good; really) header.d=origin.example"
    )
    field = "Authentication-Results: list.example; dkim=pass; arc=none"
    assert aar_text(seal(ORIGINAL, auth_results=field)).endswith("i=1; list.example; dkim=pass; arc=none")
    assert aar_text(seal(ORIGINAL)) == "ARC-Authentication-Results: i=1; list.example; arc=none"
    with pytest.raises(ArcSigningError, match=r"other\.example"):
        seal(ORIGINAL, auth_results="other.example; dkim=pass")


def test_signed_fields_are_in_normalised_form() -> None:
    fields = seal(ORIGINAL, headers=["From", "Subject"])
    aar, ams, seal_field = fields
    assert all(field.endswith(b"\r\n") and len(max(field.split(b"\r\n"), key=len)) < 998 for field in fields)
    assert re.fullmatch(
        r"ARC-Message-Signature: a=ed25519-sha256; b=[A-Za-z0-9+/]{86}==; bh=[A-Za-z0-9+/]{43}=;"
        r" c=relaxed/relaxed; d=list\.example; h=from:subject; i=1; s=arc; t=1700000000",
        unfolded(ams),
    ), ams
    assert re.fullmatch(
        r"ARC-Seal: a=ed25519-sha256; b=[A-Za-z0-9+/]{86}==; cv=none; d=list\.example; i=1; s=arc;"
        r" t=1700000000",
        unfolded(seal_field),
    )
    assert unfolded(aar) == "ARC-Authentication-Results: i=1; list.example; arc=none"


def test_signing_refuses_what_a_validator_would_reject() -> None:
    with pytest.raises(ArcSigningError, match="From"):
        seal(ORIGINAL, headers=["subject"])
    with pytest.raises(ArcSigningError, match="ARC-Seal"):
        seal(ORIGINAL, headers=["from", "arc-seal"])
    sealed = add_arc_set(ORIGINAL, seal(ORIGINAL))
    with pytest.raises(ArcSigningError, match="chain=validate_arc"):
        seal(sealed)
    with pytest.raises(ArcSigningError, match="does not fit"):
        seal(sealed, chain=ArcOutcome(ArcResult.NONE, "no ARC sets"))


def test_add_arc_set_keeps_lf_messages_lf_and_puts_the_seal_on_top() -> None:
    lf = ORIGINAL.replace(b"\r\n", b"\n")
    sealed = add_arc_set(lf, seal(lf))
    assert b"\r" not in sealed
    assert sealed.startswith(b"ARC-Seal: ")


def test_arc_result_reports_oldest_pass_and_reasons() -> None:
    passed = ArcOutcome(ArcResult.PASS, "chain verified", sets=3, oldest_pass=2)
    assert str(arc_result(passed, remote_ip="192.0.2.1")) == (
        "arc=pass (3 sets) header.oldest-pass=2 smtp.remote-ip=192.0.2.1"
    )
    failed = ArcOutcome(ArcResult.FAIL, "ARC-Seal i=2: key (bad) record", sets=2, failed_instance=2)
    assert str(arc_result(failed)) == r"arc=fail (ARC-Seal i=2: key \(bad\) record)"


# --- fuzzing ------------------------------------------------------------------------------------

_NAMES = st.sampled_from(["ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results"])
_TAGS = st.sampled_from(["i=1", "i=2", "i=0", "i=51", "i=x", "a=rsa-sha256", "a=ed25519-sha256",
                         "a=rsa-sha1", "cv=none", "cv=pass", "cv=fail", "cv=", "d=list.example", "d=..",
                         "s=arc", "s=", "h=from", "h=from:arc-seal", "h=", "bh=AAAA", "bh=", "b=AAAA", "b=!",
                         "c=relaxed", "c=x/y", "t=1", "t=", "x=0", "list.example", "spf=pass", "", " ", "=",
                         "i"])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_NAMES, st.binary(max_size=300))
def test_header_parsers_raise_only_their_error(name: str, value: bytes) -> None:
    with contextlib.suppress(ArcHeaderError):
        parse_arc_field(Header.of(name, name.encode() + b":" + value + b"\r\n"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.lists(_TAGS, max_size=8)), max_size=7), st.binary(max_size=100))
async def test_validation_never_raises_on_random_sets(
    fields: list[tuple[str, list[str]]], body: bytes
) -> None:
    header = b"".join(f"{name}: {'; '.join(tags)}\r\n".encode() for name, tags in fields)
    outcome = await validate(header + ORIGINAL + body, RESOLVER)
    assert outcome.result is not ArcResult.PASS
    assert outcome.reason
    assert outcome.result is ArcResult.NONE or fields


def _mutations() -> list[Callable[[bytes], bytes]]:
    return [
        lambda raw: raw.replace(b"cv=none", b"cv=pass", 1),
        lambda raw: raw.replace(b"i=1;", b"i=2;", 1),
        lambda raw: raw.replace(b"a=ed25519-sha256", b"a=rsa-sha256", 1),
        lambda raw: raw.replace(b"s=arc", b"s=nope", 1),
    ]


@pytest.mark.parametrize("mutate", _mutations())
async def test_edited_sets_fail(mutate: Callable[[bytes], bytes]) -> None:
    raw = add_arc_set(ORIGINAL, seal(ORIGINAL))
    assert (await validate_arc(Message.parse(raw), RESOLVER)).passed
    edited = mutate(raw)
    assert edited != raw
    assert (await validate_arc(Message.parse(edited), RESOLVER)).result is ArcResult.FAIL
