"""DKIM sign and verify: round trips, every failure reason, the signed header set, and bad input."""

from __future__ import annotations

import base64
import contextlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.auth.dkim import (
    DkimResult,
    DkimSigner,
    DkimVerdict,
    DkimVerifyOptions,
    SigningError,
    canon,
    parse_signature,
    sign_dkim,
    sign_message,
    verify_dkim,
)
from mailtoaster.auth.dkim.engine import PrivateKey
from mailtoaster.auth.dkim.signature import SignatureError
from mailtoaster.auth.dkim.verify import (
    BODY_HASH_MISMATCH,
    KEY_REVOKED,
    PARTIAL_BODY,
    SIGNATURE_MISMATCH,
    UNSIGNED_FROM,
)
from mailtoaster.auth.tags import TagListError, parse_tag_list
from mailtoaster.dns import RRType, StaticResolver
from mailtoaster.message import Header, Message
from tests import dkimcorpus

DOMAIN = "example.com"
NOW = 1_700_000_000
MESSAGE = (
    b"From: Joe SixPack <joe@example.com>\r\n"
    b"To: Suzie Q <suzie@example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game. Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n"
)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def record_for(key: PrivateKey, extra: str = "") -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519;{extra} p={base64.b64encode(raw).decode()}"
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa;{extra} p={base64.b64encode(der).decode()}"


def resolver_with(records: dict[str, str]) -> StaticResolver:
    resolver = StaticResolver()
    for selector, text in records.items():
        resolver.add(f"{selector}._domainkey.{DOMAIN}", RRType.TXT, dkimcorpus.txt_rdata(text))
    return resolver


KEYS = resolver_with({"rsa": record_for(RSA_KEY), "ed": record_for(ED_KEY)})


async def verify(raw: bytes, resolver: StaticResolver = KEYS, **options: object) -> list[DkimVerdict]:
    return await verify_dkim(Message.parse(raw), resolver, DkimVerifyOptions(now=NOW + 10, **options))  # type: ignore[arg-type]


def signed(raw: bytes = MESSAGE, selector: str = "rsa", key: PrivateKey = RSA_KEY, **kwargs: object) -> bytes:
    signer = DkimSigner(DOMAIN, selector, key, **kwargs)  # type: ignore[arg-type]
    return sign_message(raw, [signer], timestamp=NOW)


@pytest.mark.parametrize(
    "canonicalization", ["simple/simple", "relaxed/relaxed", "simple/relaxed", "relaxed/simple"]
)
@pytest.mark.parametrize(("selector", "key"), [("rsa", RSA_KEY), ("ed", ED_KEY)])
async def test_round_trip(canonicalization: str, selector: str, key: PrivateKey) -> None:
    verdicts = await verify(signed(selector=selector, key=key, canonicalization=canonicalization))
    assert [verdict.result for verdict in verdicts] == [DkimResult.PASS]
    assert verdicts[0].canonicalization == canonicalization
    assert verdicts[0].algorithm == ("ed25519-sha256" if key is ED_KEY else "rsa-sha256")
    assert verdicts[0].key_bits == (256 if key is ED_KEY else 2048)


async def test_both_keys_sign_and_each_verdict_is_separate() -> None:
    raw = sign_message(MESSAGE, [DkimSigner(DOMAIN, "rsa", RSA_KEY), DkimSigner(DOMAIN, "ed", ED_KEY)], NOW)
    verdicts = await verify(raw, resolver_with({"rsa": record_for(RSA_KEY)}))
    assert [(verdict.selector, verdict.result) for verdict in verdicts] == [
        ("rsa", DkimResult.PASS),
        ("ed", DkimResult.PERMERROR),
    ]
    assert verdicts[1].reason == f"no key record at ed._domainkey.{DOMAIN}"


async def test_lf_message_keeps_lf_and_verifies() -> None:
    raw = signed(MESSAGE.replace(b"\r\n", b"\n"))
    assert b"\r\n" not in raw
    assert (await verify(raw))[0].result is DkimResult.PASS


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ((b"hungry yet", b"hungry now"), BODY_HASH_MISMATCH),
        ((b"Subject: Is dinner ready?", b"Subject: Is lunch ready?"), SIGNATURE_MISMATCH),
        ((b"From: Joe SixPack", b"From: Jim SixPack"), SIGNATURE_MISMATCH),
    ],
)
async def test_altered_message_fails_with_its_reason(change: tuple[bytes, bytes], reason: str) -> None:
    for key, selector in ((RSA_KEY, "rsa"), (ED_KEY, "ed")):
        raw = signed(selector=selector, key=key).replace(*change)
        verdicts = await verify(raw)
        assert [(verdict.result, verdict.reason) for verdict in verdicts] == [(DkimResult.FAIL, reason)]


async def test_added_from_field_breaks_the_over_signed_signature() -> None:
    raw = signed()
    forged = raw.replace(b"From: Joe", b"From: Mallory <m@evil.example>\r\nFrom: Joe", 1)
    assert (await verify(forged))[0].reason == SIGNATURE_MISMATCH


async def test_relaxed_survives_whitespace_and_case_changes_simple_does_not() -> None:
    def mangle(raw: bytes) -> bytes:
        return raw.replace(b"Subject: Is dinner", b"subject:   Is  dinner").replace(
            b"Joe.\r\n", b"Joe.  \r\n\r\n"
        )

    assert (await verify(mangle(signed(canonicalization="relaxed/relaxed"))))[0].result is DkimResult.PASS
    assert (await verify(mangle(signed(canonicalization="simple/simple"))))[0].result is DkimResult.FAIL


def test_signed_headers_are_the_recommended_set_over_signed() -> None:
    field = sign_dkim(MESSAGE + b"", [DkimSigner(DOMAIN, "rsa", RSA_KEY)], NOW)[0]
    parsed = parse_signature(Message.parse(field + b"\r\n").headers[0])
    assert parsed.signed_headers == (
        "From", "From", "Subject", "Subject", "Date", "Date", "To", "To", "Message-ID", "Message-ID",
    )  # fmt: skip
    assert parsed.body_length is None
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))


def test_signing_refuses_a_message_without_from() -> None:
    with pytest.raises(SigningError, match="no From"):
        sign_dkim(dkimcorpus.dkimpy_file("test_nofrom.message"), [DkimSigner(DOMAIN, "rsa", RSA_KEY)])


def test_signing_refuses_unknown_canonicalization() -> None:
    with pytest.raises(SigningError, match="canonicalization"):
        sign_dkim(MESSAGE, [DkimSigner(DOMAIN, "rsa", RSA_KEY, canonicalization="loose/simple")])


async def test_revoked_key() -> None:
    verdicts = await verify(signed(), resolver_with({"rsa": "v=DKIM1; k=rsa; p="}))
    assert (verdicts[0].result, verdicts[0].reason) == (DkimResult.FAIL, KEY_REVOKED)


async def test_key_too_small() -> None:
    """RFC 8301's floor is 1024 bits (the 512-bit corpus keys test it); a site may ask for more."""
    verdicts = await verify(signed(), min_rsa_bits=4096)
    expected = (DkimResult.FAIL, "key too small (2048 bits, fewer than 4096)")
    assert (verdicts[0].result, verdicts[0].reason) == expected


async def test_expired_signature_and_still_valid_one() -> None:
    raw = signed(expiration=5)
    assert (await verify(raw))[0].reason == "signature expired"
    assert (await verify_dkim(Message.parse(raw), KEYS, DkimVerifyOptions(now=NOW + 5)))[0].passed


async def test_unsupported_algorithm() -> None:
    raw = signed().replace(b"a=rsa-sha256", b"a=rsa-sha512")
    verdicts = await verify(raw)
    assert (verdicts[0].result, verdicts[0].reason) == (DkimResult.FAIL, "unsupported algorithm a=rsa-sha512")
    assert verdicts[0].domain == DOMAIN


async def test_dns_failure_is_temperror() -> None:
    resolver = StaticResolver()
    resolver.add_timeout(f"rsa._domainkey.{DOMAIN}")
    verdicts = await verify(signed(), resolver)
    assert (verdicts[0].result, verdicts[0].reason) == (DkimResult.TEMPERROR, "key lookup failed: TIMEOUT")


async def test_testing_flag_and_body_length_are_reported_not_trusted() -> None:
    body_length_signed = signed().replace(b"\tbh=", b"\tl=3; bh=", 1)
    verdict = (await verify(body_length_signed))[0]
    assert verdict.body_length == 3
    assert verdict.result is DkimResult.FAIL  # the inserted l= is covered by the signature itself
    testing = resolver_with({"rsa": record_for(RSA_KEY, " t=y;")})
    verdict = (await verify(signed(), testing))[0]
    assert verdict.passed and verdict.testing


def _signed_with_l(unsigned_octets: int) -> bytes:
    """A DKIM-Signature field (made as another signer would, with l=) for MESSAGE, whose l= leaves
    the last ``unsigned_octets`` of the canonical body out."""
    from mailtoaster.auth.dkim import engine

    headers = Message.parse(MESSAGE).headers
    body = Message.parse(MESSAGE).body
    covered = len(canon.body_simple(body)) - unsigned_octets
    body_hash = base64.b64encode(engine.body_hash(body, "simple", "sha256", covered)).decode()
    tags = f"v=1; a=rsa-sha256; d={DOMAIN}; s=rsa; h=From:Subject; l={covered}; bh={body_hash}; b="
    unsigned = f"DKIM-Signature: {tags}".encode()
    data = engine.header_hash_input(headers, ["From", "Subject"], unsigned, "simple")
    return unsigned + base64.b64encode(engine.sign_bytes(RSA_KEY, "rsa-sha256", data)) + b"\r\n"


async def test_l_tag_covering_the_whole_body_passes_and_is_reported() -> None:
    verdict = (await verify(_signed_with_l(0) + MESSAGE))[0]
    assert verdict.passed
    assert verdict.body_length == len(canon.body_simple(Message.parse(MESSAGE).body))
    assert verdict.unsigned_body_octets == 0


async def test_l_tag_is_not_trusted_to_cover_content_after_it() -> None:
    """Content beyond l= (here a list's P.S.) would ride on the signer's name: the signature verifies
    but is reported as policy, with the unsigned octets counted; an option restores RFC 6376's pass."""
    appended = b"P.S. appended by a list\r\n"
    raw = _signed_with_l(6) + MESSAGE + appended
    verdict = (await verify(raw))[0]
    assert verdict.result is DkimResult.POLICY
    assert verdict.reason == PARTIAL_BODY.format(octets=6 + len(appended))
    assert verdict.unsigned_body_octets == 6 + len(appended)
    lenient = (await verify(raw, accept_partial_body=True))[0]
    assert lenient.passed and lenient.unsigned_body_octets == 6 + len(appended)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("badk.txt", "unknown key type k=ed25519-sha256"),
        ("badversion.txt", "not a leading v=DKIM1"),
        ("test_bad.txt", "not a valid RSA public key"),
        ("test_tlsrpt.txt", "key s= is not for email"),
    ],
)
async def test_dkimpy_malformed_key_records(record: str, reason: str) -> None:
    private = dkimcorpus.dkimpy_private_key("test.private")
    resolver = resolver_with({"test": dkimcorpus.dkimpy_key_record(record)})
    verdicts = await verify(signed(selector="test", key=private), resolver)
    assert verdicts[0].result is DkimResult.PERMERROR
    assert reason in verdicts[0].reason


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("v=DKIM1; k=rsa; p=@@@@", "not valid base64"),
        ("v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEB", "not a valid RSA public key"),
        ("k=rsa; v=DKIM1; p=AAAA", "not a leading v=DKIM1"),
        ("v=DKIM1; k=rsa", "no p= tag"),
        ("v=DKIM1; p=A; p=B", "appears twice"),
        ("v=DKIM1; k=ed25519; p=AAAA", "ed25519 key is 3 bytes"),
        ("v=DKIM1; k=rsa; h=sha1; p=AAAA", "does not allow sha256"),
    ],
)
async def test_unusable_key_records(record: str, reason: str) -> None:
    key = ED_KEY if "ed25519" in record else RSA_KEY
    verdicts = await verify(signed(key=key), resolver_with({"rsa": record}))
    assert verdicts[0].result is DkimResult.PERMERROR
    assert reason in verdicts[0].reason


async def test_wrong_type_key() -> None:
    verdicts = await verify(signed(), resolver_with({"rsa": record_for(ED_KEY)}))
    assert "does not match a=rsa-sha256" in verdicts[0].reason


async def test_two_key_records_is_permerror() -> None:
    resolver = resolver_with({"rsa": record_for(RSA_KEY)})
    resolver.add(f"rsa._domainkey.{DOMAIN}", RRType.TXT, (b"v=DKIM1; p=",))
    assert (await verify(signed(), resolver))[0].reason.startswith("2 key records")


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ((b"v=1;", b"v=1; v=1;"), "appears twice"),
        ((b"; d=example.com", b""), "lacks required tag(s) d="),
        ((b"bh=", b"bh=!!"), "bh= is not valid base64"),
        ((b"v=1;", b"v=2;"), "unsupported version v=2"),
        ((b"h=From:From:", b"h="), "h= does not include From"),
        ((b"t=1700000000", b"t=1700000000; i=joe@evil.example"), "is not within d=example.com"),
        ((b"t=1700000000", b"t=1700000000; x=1"), "x= is earlier than t="),
        ((b"t=1700000000", b"t=17000000000000"), "t= is not a number"),
        ((b"t=1700000000", b"t=1700000000; q=http"), "no dns/txt"),
    ],
)
async def test_malformed_signatures_are_neutral_with_a_reason(edit: tuple[bytes, bytes], reason: str) -> None:
    raw = signed().replace(*edit, 1)
    verdicts = await verify(raw)
    assert verdicts[0].result is DkimResult.NEUTRAL
    assert reason in verdicts[0].reason


async def test_absurdly_long_header_and_broken_mime_give_verdicts() -> None:
    huge = b"X-Long: " + b"a" * 200_000 + b"\r\n"
    broken = b'Content-Type: multipart/mixed; boundary="never"\r\n'
    raw = signed(huge + broken + MESSAGE + b"--never\r\n\xff\xfe\r\n")
    assert (await verify(raw))[0].passed
    long_signature = b"DKIM-Signature: v=1; " + b"z=" + b"x" * 100_000 + b"\r\n" + MESSAGE
    verdict = (await verify(long_signature))[0]
    assert verdict.result is DkimResult.NEUTRAL


async def test_many_signatures_are_bounded() -> None:
    raw = b"DKIM-Signature: v=1; a=rsa-sha256\r\n" * 20 + MESSAGE
    verdicts = await verify(raw)
    assert len(verdicts) == 20
    assert verdicts[-1].reason == "not evaluated: more than 16 signatures"


async def test_unsigned_message_has_no_verdicts() -> None:
    assert await verify(MESSAGE) == []


def test_tag_list_grammar() -> None:
    assert parse_tag_list(" a = 1 ;b=two words; c=\r\n\tfolded;") == {
        "a": "1",
        "b": "two words",
        "c": "folded",
    }
    for bad in ("a=1;;b=2", "1a=x", "a", "a=1; a=2", "a=\x00"):
        with pytest.raises(TagListError):
            parse_tag_list(bad)


def test_strip_b_value_keeps_bh() -> None:
    field = b"DKIM-Signature: bh=abc; b=\r\n\tdef ghi; d=x\r\n"
    assert canon.strip_b_value(field) == b"DKIM-Signature: bh=abc; b=; d=x\r\n"


def test_canonicalisation_examples_from_rfc6376_3_4_6() -> None:
    """RFC 6376 §3.4.6's worked example."""
    headers = [b"A: X\r\n", b"B : Y\t\r\n\tZ  \r\n"]
    assert b"".join(canon.header_relaxed(field) for field in headers) == b"a:X\r\nb:Y Z\r\n"
    body = b" C \r\nD \t E\r\n\r\n\r\n"
    assert canon.body_relaxed(body) == b" C\r\nD E\r\n"
    assert canon.body_simple(body) == b" C \r\nD \t E\r\n"
    assert canon.body_simple(b"") == b"\r\n"
    assert canon.body_relaxed(b"") == b""


_FIELD_PIECES = st.sampled_from(
    [
        b"a",
        b"B",
        b":",
        b" ",
        b"\t",
        b"\r",
        b"\n",
        b"\r\n",
        b"\r\n ",
        b"\r\n\t",
        b"\x0b",
        b"\x0c",
        b"\xff",
        b"  ",
    ]
)
_FIELDS = st.builds(
    lambda name, pieces, end: name + b"".join(pieces) + end,
    st.sampled_from([b"From:", b"Subject :", b"X-Y\t:", b"a: "]),
    st.lists(_FIELD_PIECES, max_size=12),
    st.sampled_from([b"\r\n", b"", b"\n", b"\r\n\r\n"]),
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(_FIELDS, min_size=1, max_size=5), st.sampled_from([canon.RELAXED, canon.SIMPLE]))
def test_batched_header_canonicalisation_equals_field_by_field(fields: list[bytes], algorithm: str) -> None:
    """canon.headers takes a fast path for ordinary fields; it must give the per-field result always."""
    expected = b"".join(canon.header(canon.to_crlf(field), algorithm) for field in fields)
    assert canon.headers(fields, algorithm) == expected


def test_batched_header_canonicalisation_takes_the_fast_path_for_ordinary_fields() -> None:
    fields = [b"From: A <a@example.com>\r\n", b"Subject:  two\r\n\t lines \r\n"]
    assert canon._plainly_folded(fields)
    assert canon.headers(fields, canon.RELAXED) == b"from:A <a@example.com>\r\nsubject:two lines\r\n"
    assert not canon._plainly_folded([b"Subject: bare\rCR\r\n"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_tag_list_parser_never_raises_anything_else(text: str) -> None:
    with contextlib.suppress(TagListError):
        parse_tag_list(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_signature_parser_fuzz(value: bytes) -> None:
    field = Header.of("DKIM-Signature", b"DKIM-Signature:" + value + b"\r\n")
    with contextlib.suppress(SignatureError):
        parse_signature(field)


_TAGS = st.sampled_from(["v=1", "a=rsa-sha256", "a=ed25519-sha256", "d=example.com", "s=rsa", "s=ed",
                         "h=from", "h=From:To", "bh=AAAA", "b=AAAA", "c=relaxed", "l=5", "i=@example.com",
                         "t=1", "x=2", "q=dns/txt", "bh=", "b=", "l=x", "c=x/y", "h="])  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(_TAGS, max_size=12), st.binary(max_size=200))
async def test_verify_never_raises_on_random_signatures(tags: list[str], body: bytes) -> None:
    raw = ("DKIM-Signature: " + "; ".join(tags) + "\r\n").encode() + MESSAGE + body
    verdicts = await verify(raw)
    assert len(verdicts) == 1
    assert verdicts[0].result is not DkimResult.PASS


async def test_a_from_field_added_above_a_singly_signed_from_fails() -> None:
    """h=From covers one From; a second one added on top (what a reader sees) must not pass."""
    raw = signed(headers=["From", "Subject"])
    assert (await verify(raw))[0].passed
    forged = raw.replace(b"From: Joe", b"From: Mallory <m@evil.example>\r\nFrom: Joe", 1)
    verdict = (await verify(forged))[0]
    assert (verdict.result, verdict.reason) == (DkimResult.FAIL, UNSIGNED_FROM)


def test_tag_list_parser_stays_linear_on_a_long_bad_value() -> None:
    """A value of 100,000 spaces then a NUL: a backtracking whole-list pattern would take minutes."""
    with pytest.raises(TagListError, match="not allowed"):
        parse_tag_list("a=" + " " * 100_000 + "\x00")
