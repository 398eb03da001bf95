"""DomainKeys (RFC 4870): Mail::DKIM's DomainKeys corpus, sign/verify round trips, every status,
the sender policy, canonicalisation, and fuzzing of everything that reads untrusted input."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter

import authres
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.auth.domainkeys import (
    DkStatus,
    DomainKeysOutcome,
    DomainKeysResult,
    DomainKeysSignError,
    SignatureSyntaxError,
    canonical_body,
    canonical_header,
    domainkeys_result,
    parse_policy,
    parse_signature,
    sign_domainkeys,
    sign_domainkeys_message,
    verify_domainkeys,
)
from mailtoaster.auth.domainkeys.verify import MAX_SIGNATURES, granularity_matches, select_signed_fields
from mailtoaster.dns import DnsStatus, RRType, StaticResolver
from mailtoaster.keys import KeyType, dkim_record_text, domainkeys_record_text, generate_private_key
from mailtoaster.message import Message
from tests import dkimcorpus
from tests.dkimcorpus import ExpectedCase, FailingResolver

DOMAIN = "example.com"
SELECTOR = "dk1"
KEY_NAME = f"{SELECTOR}._domainkey.{DOMAIN}"
MESSAGE = (
    b"Received: from client.example.com by mx.example.com; Fri, 11 Jul 2003 21:00:38 -0700\r\n"
    b"From: Joe SixPack <joe@example.com>\r\n"
    b"To: Suzie Q <suzie@example.net>\r\n"
    b"Subject: Is dinner\r\n"
    b"  ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n"
    b"\r\n"
    b"\r\n"
)


def _rsa_key(bits: int) -> rsa.RSAPrivateKey:
    key = generate_private_key(KeyType.RSA, bits)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


KEY_1024 = _rsa_key(1024)
KEY_2048 = _rsa_key(2048)


def resolver_for(key: rsa.RSAPrivateKey, record: str | None = None, name: str = KEY_NAME) -> StaticResolver:
    resolver = StaticResolver()
    text = dkim_record_text(key.public_key()) if record is None else record
    resolver.add(name, RRType.TXT, dkimcorpus.txt_rdata(text))
    return resolver


def verify(raw: bytes, resolver: StaticResolver | FailingResolver) -> DomainKeysOutcome:
    return asyncio.run(verify_domainkeys(Message.parse(raw), resolver))


def signed(raw: bytes = MESSAGE, key: rsa.RSAPrivateKey = KEY_2048, **options: object) -> bytes:
    return sign_domainkeys_message(raw, DOMAIN, SELECTOR, key, **options)  # type: ignore[arg-type]


# --- Mail::DKIM's DomainKeys corpus -------------------------------------------------------------------

corpus = pytest.mark.skipif(not dkimcorpus.available(), reason="shared testdata not present")

Q_TAG_OPTIONAL = {"bad_dk_3.txt"}
"""No ``q=`` tag. Mail::DKIM's test lists it as invalid but skips it (its verifier defaults ``q=`` to
``dns``, so it passes); RFC 4870 §3.3 makes ``q=`` optional with default ``dns``, and ``good_dk_2``
(no ``q=`` either) is expected to pass. We follow the RFC: the signature verifies."""

EXPECTED_STATUS = {
    "bad_dk_1.txt": (DkStatus.SYNTAX, "is neither the From domain example.com"),
    "bad_dk_2.txt": (DkStatus.SYNTAX, "is neither the Sender domain example.com"),
    "bad_dk_4.txt": (DkStatus.SYNTAX, "unsupported query method q=''"),
    "bad_dk_5.txt": (DkStatus.SYNTAX, "unsupported query method q='bogus'"),
}
"""Why each ``invalid`` case is invalid, pinned so a regression to another reason shows."""


def mail_dkim_verdict(outcome: DomainKeysOutcome) -> str:
    """Mail::DKIM's vocabulary: ``pass``, ``fail`` (the RSA check failed) or ``invalid`` (unusable)."""
    if outcome.status is DkStatus.OK:
        return "pass"
    return "fail" if outcome.status is DkStatus.BADSIG else "invalid"


@corpus
@pytest.mark.parametrize("case", dkimcorpus.domainkeys_cases(), ids=lambda case: case.name)
def test_mail_dkim_corpus(case: ExpectedCase) -> None:
    outcome = verify(dkimcorpus.corpus_message(case.file), dkimcorpus.fake_dns_resolver())
    assert len(outcome.verdicts) == case.signature_count
    if case.file in Q_TAG_OPTIONAL:
        assert case.expected == "invalid" and case.upstream_skipped
        assert outcome.status is DkStatus.OK
        return
    assert mail_dkim_verdict(outcome) == case.expected, outcome.reason
    if case.file in EXPECTED_STATUS:
        status, reason = EXPECTED_STATUS[case.file]
        assert outcome.status is status and reason in outcome.reason
        assert outcome.result is DomainKeysResult.NEUTRAL


@corpus
def test_corpus_counts() -> None:
    """17 DomainKeys messages with 18 signatures; 12 pass and 5 invalid upstream (one of which we pass)."""
    cases = dkimcorpus.domainkeys_cases()
    assert len(cases) == 17
    assert sum(case.signature_count for case in cases) == 18
    assert Counter(case.expected for case in cases) == {"pass": 12, "invalid": 5}
    resolver = dkimcorpus.fake_dns_resolver()
    outcomes = [verify(dkimcorpus.corpus_message(case.file), resolver) for case in cases]
    assert Counter(outcome.status for outcome in outcomes) == {DkStatus.OK: 13, DkStatus.SYNTAX: 4}


@corpus
def test_two_signatures_both_pass() -> None:
    """dk_multiple_1: messiah.edu signs a Sender it covers; gmail.com's h= leaves that Sender out, so
    its sending address is the From; both verify."""
    outcome = verify(dkimcorpus.corpus_message("dk_multiple_1"), dkimcorpus.fake_dns_resolver())
    first, second = outcome.verdicts
    assert (first.status, first.domain, first.sending_header, first.sending_address) == (
        DkStatus.OK,
        "messiah.edu",
        "Sender",
        "george@messiah.edu",
    )
    assert (second.status, second.domain, second.sending_header, second.sending_address) == (
        DkStatus.OK,
        "gmail.com",
        "From",
        "jasonalonzolong@gmail.com",
    )
    assert first.header_index < second.header_index
    assert "Sender" not in second.signed_headers
    assert outcome.domain == "messiah.edu" and outcome.policy is None


@corpus
def test_corpus_details() -> None:
    """Testing keys are reported; h= order, not message order, is the hashing order (dk_headers_1
    moved fields after gmail signed them); an unsigned Sender below the signature is ignored."""
    resolver = dkimcorpus.fake_dns_resolver()
    yahoo = verify(dkimcorpus.corpus_message("good_dk_yahoo"), resolver)
    assert yahoo.key_testing and yahoo.canonicalization == "nofws" and yahoo.selector == "s1024"
    moved = verify(dkimcorpus.corpus_message("dk_headers_1"), resolver)
    assert moved.verdicts[0].signed_headers[2:5] == ("Message-ID", "Date", "From")
    evil = verify(dkimcorpus.corpus_message("dk_headers_2"), resolver)
    assert evil.passed and evil.sending_header == "From"


# --- The corpus loaders other tests rely on ----------------------------------------------------------


@corpus
def test_fake_dns_resolver() -> None:
    resolver = dkimcorpus.fake_dns_resolver()

    def status(name: str) -> DnsStatus:
        return asyncio.run(resolver.lookup(name, RRType.TXT)).status

    assert status("selector1._domainkey.messiah.edu") is DnsStatus.NOERROR
    assert status("nonexistent._domainkey.messiah.edu") is DnsStatus.NXDOMAIN
    assert status("test3._domainkey.blackhole.messiah.edu") is DnsStatus.TIMEOUT
    assert status("test3._domainkey.blackhole2.messiah.edu") is DnsStatus.SERVFAIL
    assert status("_domainkey.messiah.edu") is DnsStatus.NODATA
    empty = asyncio.run(resolver.lookup("2023-05-ed25519-empty._domainkey.wander.science", RRType.TXT))
    assert empty.texts() == [b""]
    long_key = asyncio.run(resolver.lookup("shan._domainkey.vmt2.cis.att.net", RRType.TXT))
    (record,) = long_key.records
    assert isinstance(record, tuple) and all(len(part) <= 255 for part in record)
    assert long_key.texts()[0].startswith(b"v=DKIM1; k=rsa; h=sha1:sha256:sha512;")


@corpus
def test_expected_results_and_messages() -> None:
    cases = dkimcorpus.expected_results()
    assert len(cases) == 79
    assert Counter(case.expected for case in cases) == {"pass": 41, "fail": 7, "invalid": 31}
    assert sum(case.upstream_skipped for case in cases) == 6
    assert dkimcorpus.corpus_message("good_dk_1").count(b"\r\n") > 10
    assert b"\r\n" not in dkimcorpus.corpus_message("bad_1878954.txt")


@corpus
def test_mail_auth_and_dkimpy_loaders() -> None:
    cases = dkimcorpus.mail_auth_cases()
    assert [case.name for case in cases] == ["001", "002", "003", "004", "005", "006"]
    name, resolver, message = cases[0]
    assert name == "001" and b"\n" not in message.replace(b"\r\n", b"")
    answer = asyncio.run(resolver.lookup("brisbane._domainkey.football.example.com", RRType.TXT))
    assert answer.texts() == [b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]
    rsa_key = dkimcorpus.dkimpy_private_key("test.private")
    assert isinstance(rsa_key, rsa.RSAPrivateKey) and rsa_key.key_size == 1024
    ed_key = dkimcorpus.dkimpy_private_key("rfc8032_7_1.key")
    assert isinstance(ed_key, ed25519.Ed25519PrivateKey)
    assert ed_key.public_key().public_bytes_raw() == base64.b64decode(
        "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    )
    assert (
        dkimcorpus.dkimpy_key_record("ed25519test.dns")
        == "k=ed25519; p=yi50DjK5O9pqbFpNHklsv9lqaS0ArSYu02qp1S0DW1Y="
    )


# --- Sign and verify ----------------------------------------------------------------------------------


@pytest.mark.parametrize("canonicalization", ["simple", "nofws"])
@pytest.mark.parametrize("key", [KEY_1024, KEY_2048], ids=["rsa1024", "rsa2048"])
def test_round_trip(key: rsa.RSAPrivateKey, canonicalization: str) -> None:
    outcome = verify(signed(key=key, canonicalization=canonicalization), resolver_for(key))
    assert outcome.status is DkStatus.OK and outcome.result is DomainKeysResult.PASS
    (verdict,) = outcome.verdicts
    assert verdict.key_bits == key.key_size
    assert (verdict.domain, verdict.selector, verdict.canonicalization) == (
        DOMAIN,
        SELECTOR,
        canonicalization,
    )
    assert (verdict.sending_header, verdict.sending_address) == ("From", "joe@example.com")
    assert verdict.signed_headers == ("From", "To", "Subject", "Date", "Message-ID")
    assert outcome.policy is None and not outcome.suspicious


def test_domainkeys_form_key_record() -> None:
    """``k=rsa; p=...`` (RFC 4870 §3.2.3, no v=) serves as well as the DKIM form ``dns records`` publishes."""
    record = domainkeys_record_text(KEY_1024.public_key())
    assert verify(signed(key=KEY_1024), resolver_for(KEY_1024, record)).status is DkStatus.OK


def test_signature_field_shape() -> None:
    field = sign_domainkeys(MESSAGE, DOMAIN, SELECTOR, KEY_2048, headers=["from", "subject", "received"])
    assert field.startswith(b"DomainKey-Signature: a=rsa-sha1; q=dns; c=nofws;\r\n\ts=dk1; d=example.com;")
    assert field.endswith(b"\r\n") and b"\n\r\n" not in field
    assert all(len(line) <= 80 for line in field.split(b"\r\n"))
    signature = parse_signature(field.decode().partition(":")[2])
    assert signature.headers == ("received", "from", "subject")
    assert len(signature.signature) == 256


def test_many_headers_fold_and_verify() -> None:
    extra = b"".join(b"X-Long-Header-Name-%d: v\r\n" % n for n in range(12))
    raw = extra + MESSAGE
    field = sign_domainkeys(
        raw, DOMAIN, SELECTOR, KEY_1024, headers=[f"x-long-header-name-{n}" for n in range(12)]
    )
    assert all(len(line) <= 80 for line in field.split(b"\r\n"))
    assert verify(field + raw, resolver_for(KEY_1024)).status is DkStatus.OK


def test_lf_input_is_signed_as_crlf() -> None:
    lf = MESSAGE.replace(b"\r\n", b"\n")
    assert sign_domainkeys(lf, DOMAIN, SELECTOR, KEY_1024) == sign_domainkeys(
        MESSAGE, DOMAIN, SELECTOR, KEY_1024
    )
    assert verify(signed(lf, KEY_1024), resolver_for(KEY_1024)).passed


def test_altered_body_or_header_is_badsig() -> None:
    resolver = resolver_for(KEY_2048)
    message = signed()
    assert verify(message.replace(b"hungry", b"thirsty"), resolver).status is DkStatus.BADSIG
    tampered = verify(message.replace(b"Is dinner", b"Was dinner"), resolver)
    assert tampered.status is DkStatus.BADSIG and tampered.result is DomainKeysResult.FAIL
    assert verify(message + b"P.S. more text\r\n", resolver).status is DkStatus.BADSIG


def test_nofws_survives_white_space_changes_simple_does_not() -> None:
    resolver = resolver_for(KEY_1024)

    def rewrap(message: bytes) -> bytes:
        return message.replace(b"Is dinner\r\n  ready?", b"Is dinner ready?").replace(
            b"game.  Are", b"game. Are"
        )

    assert verify(rewrap(signed(key=KEY_1024, canonicalization="nofws")), resolver).status is DkStatus.OK
    assert verify(rewrap(signed(key=KEY_1024, canonicalization="simple")), resolver).status is DkStatus.BADSIG


def test_trailing_empty_lines_and_added_fields_above_do_not_matter() -> None:
    resolver = resolver_for(KEY_1024)
    message = signed(key=KEY_1024, canonicalization="simple")
    assert verify(message + b"\r\n\r\n", resolver).passed
    assert verify(b"Received: by relay.example.org; now\r\n" + message, resolver).passed


def test_reordered_fields_still_verify_and_unsigned_fields_are_ignored() -> None:
    """RFC 4870 §3.3: ``h=`` gives the hashing order, so reordering signed fields is harmless."""
    resolver = resolver_for(KEY_1024)
    field = sign_domainkeys(MESSAGE, DOMAIN, SELECTOR, KEY_1024)
    lines = MESSAGE.split(b"\r\n")
    reordered = b"\r\n".join([lines[0], lines[6], lines[5], *lines[1:5], *lines[7:]])
    assert reordered != MESSAGE
    assert verify(field + reordered, resolver).passed
    assert verify(field + b"X-Mailing-List: added\r\n" + MESSAGE, resolver).passed


def test_every_occurrence_of_a_signed_name_is_covered() -> None:
    """All occurrences of a listed field count, so one added later below the signature breaks it."""
    resolver = resolver_for(KEY_1024)
    raw = b"Comments: one\r\n" + MESSAGE.replace(b"Date:", b"Comments: two\r\nDate:")
    field = sign_domainkeys(raw, DOMAIN, SELECTOR, KEY_1024, headers=["from", "comments"])
    assert b"h=Comments:From:Comments;" in field
    assert verify(field + raw, resolver).passed
    added = raw.replace(b"\r\n\r\nHi.", b"\r\nComments: three\r\n\r\nHi.")
    assert verify(field + added, resolver).status is DkStatus.BADSIG


def test_sender_is_the_sending_address() -> None:
    """RFC 4870 §3.3: with a Sender field the signing domain follows it, not From."""
    raw = MESSAGE.replace(b"From: Joe", b"Sender: list@lists.example.org\r\nFrom: Joe")
    with pytest.raises(DomainKeysSignError, match=r"Sender domain is lists\.example\.org"):
        sign_domainkeys(raw, DOMAIN, SELECTOR, KEY_1024)
    field = sign_domainkeys_message(raw, "example.org", SELECTOR, KEY_1024)
    resolver = resolver_for(KEY_1024, name=f"{SELECTOR}._domainkey.example.org")
    outcome = verify(field, resolver)
    assert outcome.passed and (outcome.sending_header, outcome.sending_address) == (
        "Sender",
        "list@lists.example.org",
    )


def test_sender_added_after_signing() -> None:
    """h= lists only the fields present when signing, so a Sender added later below the signature is
    not covered and the signed From stays the sending address (as in dk_headers_2); a signed Sender
    that is changed breaks the signature."""
    field = sign_domainkeys(MESSAGE, DOMAIN, SELECTOR, KEY_1024)
    assert b"Sender" not in field
    added = field + MESSAGE.replace(b"To:", b"Sender: someone@evil.example\r\nTo:")
    outcome = verify(added, resolver_for(KEY_1024))
    assert outcome.passed and outcome.sending_header == "From"
    raw = MESSAGE.replace(b"To:", b"Sender: joe@example.com\r\nTo:")
    changed = sign_domainkeys_message(raw, DOMAIN, SELECTOR, KEY_1024).replace(
        b"Sender: joe@example.com", b"Sender: joe@evil.example"
    )
    outcome = verify(changed, resolver_for(KEY_1024))
    assert outcome.status is DkStatus.SYNTAX and "Sender domain evil.example" in outcome.reason


def test_parent_domain_may_sign_subdomain() -> None:
    raw = MESSAGE.replace(b"joe@example.com", b"joe@mail.example.com")
    assert verify(signed(raw, KEY_1024), resolver_for(KEY_1024)).passed
    with pytest.raises(DomainKeysSignError):
        sign_domainkeys(raw.replace(b"mail.example.com", b"notexample.com"), DOMAIN, SELECTOR, KEY_1024)


# --- Every failure status ------------------------------------------------------------------------------


def test_missing_key_is_nokey() -> None:
    outcome = verify(signed(key=KEY_1024), StaticResolver())
    assert outcome.status is DkStatus.NOKEY and outcome.result is DomainKeysResult.PERMERROR
    assert "nxdomain" in outcome.reason


def test_dns_timeout_and_servfail_are_cantvrfy() -> None:
    timeout = StaticResolver()
    timeout.add_timeout(KEY_NAME)
    outcome = verify(signed(key=KEY_1024), timeout)
    assert outcome.status is DkStatus.CANTVRFY and outcome.result is DomainKeysResult.TEMPERROR
    servfail = FailingResolver(StaticResolver(), [KEY_NAME])
    assert verify(signed(key=KEY_1024), servfail).status is DkStatus.CANTVRFY


def test_revoked_key() -> None:
    outcome = verify(signed(key=KEY_1024), resolver_for(KEY_1024, "k=rsa; t=y; p="))
    assert outcome.status is DkStatus.REVOKED and outcome.result is DomainKeysResult.PERMERROR


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "k=ed25519"),
        ("k=rsa; p=not-base64!", "base64"),
        ("k=rsa; p=AAAA", "not a valid RSA public key"),
        ("k=rsa; t=y; t=n; p=AAAA", "twice"),
        ("", "no p= tag"),
        ("v=DKIM1; h=sha256; p={key}", "h= does not allow sha1"),
        ("v=DKIM1; s=tlsrpt; p={key}", "s= does not include email"),
        ("k=rsa; g=jane; p={key}", "g=jane does not match joe@example.com"),
    ],
)
def test_unusable_key_is_badkey(record: str, reason: str) -> None:
    key_b64 = dkim_record_text(KEY_1024.public_key()).rpartition("p=")[2]
    outcome = verify(signed(key=KEY_1024), resolver_for(KEY_1024, record.replace("{key}", key_b64)))
    assert outcome.status is DkStatus.BADKEY, outcome.reason
    assert reason in outcome.reason


def test_granularity() -> None:
    assert granularity_matches("joe", "joe") and not granularity_matches("joe", "Joe")
    assert granularity_matches("jl*g", "jlong") and granularity_matches("*", "")
    assert not granularity_matches("jl*g", "jlg1") and not granularity_matches("ab*ba", "aba")
    key_b64 = dkim_record_text(KEY_1024.public_key()).rpartition("p=")[2]
    for pattern in ("joe", "j*", "", "*e"):
        resolver = resolver_for(KEY_1024, f"k=rsa; g={pattern}; p={key_b64}")
        assert verify(signed(key=KEY_1024), resolver).passed, pattern


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("a=rsa-sha1; d=example.com; s=dk1; b", "has no '='"),
        ("a=rsa-sha1; d=example.com; d=example.org; s=dk1; b=AAAA", "twice"),
        ("a=rsa-sha256; d=example.com; s=dk1; b=AAAA", "unsupported algorithm"),
        ("c=relaxed; d=example.com; s=dk1; b=AAAA", "unsupported canonicalization"),
        ("q=http; d=example.com; s=dk1; b=AAAA", "unsupported query method"),
        ("d=example.com; s=dk1", "missing or empty b="),
        ("d=example.com; s=dk1; b=", "missing or empty b="),
        ("s=dk1; b=AAAA", "missing or empty d="),
        ("d=example.com; b=AAAA", "missing or empty s="),
        ("d=exa mple.com; s=dk1; b=AAAA", "invalid d= value"),
        ("d=example.com; s=dk1; b=AA*A", "not valid base64"),
        ("d=example.com; s=dk1; h=:; b=AAAA", "h= names no header field"),
    ],
)
def test_malformed_signature_is_syntax(field: str, reason: str) -> None:
    with pytest.raises(SignatureSyntaxError, match=reason):
        parse_signature(field)
    outcome = verify(b"DomainKey-Signature: " + field.encode() + b"\r\n" + MESSAGE, resolver_for(KEY_1024))
    assert outcome.status is DkStatus.SYNTAX and outcome.result is DomainKeysResult.NEUTRAL
    assert reason in outcome.reason


def test_signature_without_signed_sender_is_syntax() -> None:
    field = sign_domainkeys(MESSAGE, DOMAIN, SELECTOR, KEY_1024)
    outcome = verify(
        field.replace(b"From:", b"X-From:") + MESSAGE.replace(b"From:", b"X-From:"), resolver_for(KEY_1024)
    )
    assert outcome.status is DkStatus.SYNTAX and "no signed Sender or From" in outcome.reason
    broken_from = MESSAGE.replace(b"From: Joe SixPack <joe@example.com>", b"From: joe at example dot com")
    outcome = verify(field + broken_from, resolver_for(KEY_1024))
    assert outcome.status is DkStatus.SYNTAX and "From has no usable address" in outcome.reason


def test_first_passing_signature_wins_else_first() -> None:
    good = sign_domainkeys(MESSAGE, DOMAIN, SELECTOR, KEY_1024)
    nokey = sign_domainkeys(MESSAGE, DOMAIN, "missing", KEY_1024)
    outcome = verify(nokey + good + MESSAGE, resolver_for(KEY_1024))
    assert [v.status for v in outcome.verdicts] == [DkStatus.NOKEY, DkStatus.OK]
    assert outcome.status is DkStatus.OK and outcome.selector == SELECTOR
    outcome = verify(nokey + good + MESSAGE.replace(b"Joe.", b"Jim."), resolver_for(KEY_1024))
    assert [v.status for v in outcome.verdicts] == [DkStatus.NOKEY, DkStatus.BADSIG]
    assert outcome.status is DkStatus.NOKEY and outcome.selector == "missing"


# --- Policy ---------------------------------------------------------------------------------------------


def policy_resolver(record: str | None) -> StaticResolver:
    resolver = resolver_for(KEY_1024)
    if record is not None:
        resolver.add(f"_domainkey.{DOMAIN}", RRType.TXT, dkimcorpus.txt_rdata(record))
    return resolver


def test_unsigned_message() -> None:
    outcome = verify(MESSAGE, policy_resolver(None))
    assert outcome.status is DkStatus.NOSIG and outcome.result is DomainKeysResult.NONE
    assert outcome.verdicts == () and outcome.sending_address == "joe@example.com"
    assert outcome.policy is not None and not outcome.policy.found and not outcome.suspicious
    assert outcome.policy.dns_status is DnsStatus.NODATA


@pytest.mark.parametrize(
    ("record", "signs_all", "testing", "suspicious"),
    [
        ("o=-", True, False, True),
        ("o=-; t=y", True, True, False),
        ("o=~; r=dk@example.com", False, False, False),
    ],
)
def test_policy_record(record: str, signs_all: bool, testing: bool, suspicious: bool) -> None:
    outcome = verify(MESSAGE, policy_resolver(record))
    assert outcome.policy is not None and outcome.policy.found
    assert (outcome.policy.signs_all, outcome.policy.testing, outcome.suspicious) == (
        signs_all,
        testing,
        suspicious,
    )
    failing = verify(signed(key=KEY_1024).replace(b"Joe.", b"Jim."), policy_resolver(record))
    assert failing.status is DkStatus.BADSIG and failing.suspicious is suspicious
    passing = verify(signed(key=KEY_1024), policy_resolver(record))
    assert passing.policy is None and not passing.suspicious


def test_policy_errors_are_reported_not_raised() -> None:
    resolver = StaticResolver()
    resolver.add_timeout(f"_domainkey.{DOMAIN}")
    outcome = verify(MESSAGE, resolver)
    assert outcome.policy is not None and outcome.policy.temporary_error and outcome.policy.error
    bad = parse_policy(DOMAIN, "o=-; o=~")
    assert not bad.found and "twice" in bad.error and not bad.signs_all
    assert parse_policy(DOMAIN, "t=y; o=-; n=notes").signs_all


def test_no_sending_domain_means_no_policy() -> None:
    outcome = verify(b"Subject: no from\r\n\r\nbody\r\n", StaticResolver())
    assert outcome.status is DkStatus.NOSIG and outcome.policy is None and outcome.sending_header == ""


# --- Signing refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "arguments", "message"),
    [
        (b"To: a@example.com\r\n\r\nbody\r\n", {}, "no Sender or From"),
        (MESSAGE, {"domain": "example.org"}, "From domain is example.com"),
        (MESSAGE, {"domain": "exa mple.com"}, "invalid domain"),
        (MESSAGE, {"selector": "a/b"}, "invalid selector"),
        (MESSAGE, {"canonicalization": "relaxed"}, "simple or nofws"),
        (MESSAGE, {"private_key": ed25519.Ed25519PrivateKey.generate()}, "RSA keys only"),
        (MESSAGE.replace(b"<joe@example.com>", b"<joe>"), {}, "no domain"),
    ],
)
def test_sign_refuses(raw: bytes, arguments: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"domain": DOMAIN, "selector": SELECTOR, "private_key": KEY_1024} | arguments
    with pytest.raises(DomainKeysSignError, match=message):
        sign_domainkeys(raw, **options)  # type: ignore[arg-type]
    assert issubclass(DomainKeysSignError, ValueError)


@pytest.mark.skipif(not dkimcorpus.available(), reason="shared testdata not present")
def test_sign_refuses_dkimpy_message_without_from() -> None:
    with pytest.raises(DomainKeysSignError):
        sign_domainkeys(dkimcorpus.dkimpy_file("test_nofrom.message"), DOMAIN, SELECTOR, KEY_1024)


# --- Canonicalisation ------------------------------------------------------------------------------------


def test_canonical_header() -> None:
    raw = b"Subject : Is dinner\r\n\t ready?  \r\n"
    assert canonical_header(raw, "nofws") == b"Subject:Isdinnerready?\r\n"
    assert canonical_header(raw, "simple") == raw
    assert canonical_header(b"X: a\nb", "simple") == b"X: a\r\nb\r\n"


@pytest.mark.parametrize(
    ("body", "simple", "nofws"),
    [
        (b"", b"", b""),
        (b"\r\n\r\n", b"", b""),
        (b"a b\r\n\r\n \r\n", b"\r\na b\r\n\r\n \r\n", b"\r\nab\r\n"),
        (b"\r\nx\r\n", b"\r\n\r\nx\r\n", b"\r\n\r\nx\r\n"),
        (b"no newline", b"\r\nno newline", b"\r\nnonewline"),
        (b"lf\nline\n\n", b"\r\nlf\r\nline\r\n", b"\r\nlf\r\nline\r\n"),
        (b"a\rb\r\n", b"\r\na\rb\r\n", b"\r\nab\r\n"),
    ],
)
def test_canonical_body(body: bytes, simple: bytes, nofws: bytes) -> None:
    """The separator line is hashed only before a non-empty body; trailing empty lines never are."""
    assert canonical_body(body, "simple") == simple
    assert canonical_body(body, "nofws") == nofws


def test_select_signed_fields_follows_h_order() -> None:
    headers = Message.parse(b"A: 1\r\nB: 2\r\nA: 3\r\nC: 4\r\n\r\n").headers
    values = [field.value for field in select_signed_fields(headers, ["b", "a"])]
    assert values == ["2", "1", "3"]
    assert [f.value for f in select_signed_fields(headers, ["a", "b", "a"])] == ["1", "2", "3"]
    assert [f.value for f in select_signed_fields(headers, None)] == ["1", "2", "3", "4"]
    assert select_signed_fields(headers, ["d"]) == []


# --- Status vocabulary and Authentication-Results ----------------------------------------------------------


def test_status_letters_and_results() -> None:
    assert "".join(status.letter for status in DkStatus) == "ABCDEFGHIJK"
    assert [status.name for status in DkStatus] == [
        "OK",
        "BADSIG",
        "NOSIG",
        "NOKEY",
        "BADKEY",
        "CANTVRFY",
        "SYNTAX",
        "NORESOURCE",
        "ARGS",
        "REVOKED",
        "INTERNAL",
    ]
    assert DkStatus.REVOKED.letter == "J" and DkStatus.SYNTAX.letter == "G"
    assert {status.result for status in DkStatus} <= set(DomainKeysResult)
    assert all(status.meaning for status in DkStatus)


def test_authentication_results() -> None:
    outcome = verify(signed(key=KEY_1024), resolver_for(KEY_1024))
    result = domainkeys_result(outcome)
    assert isinstance(result, authres.DomainKeysAuthenticationResult)
    assert (
        str(result) == "domainkeys=pass (signature verified) header.d=example.com header.from=joe@example.com"
    )
    unsigned = verify(MESSAGE, policy_resolver("o=-"))
    text = str(domainkeys_result(unsigned))
    assert text.startswith("domainkeys=none (no DomainKey-Signature header field; example.com says it signs")
    assert "header.from=joe@example.com" in text and "header.d" not in text


# --- Fuzzing: nothing that reads untrusted input may raise ------------------------------------------

TAG_TEXT = st.text(alphabet="abcdhqsx=;: \t\r\n-.0123456789AZ+/*", max_size=80)


@settings(max_examples=300, deadline=None)
@given(TAG_TEXT)
def test_parse_signature_never_raises_anything_else(value: str) -> None:
    try:
        signature = parse_signature(value)
    except SignatureSyntaxError:
        return
    assert signature.domain and signature.selector and signature.signature


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a=rsa-sha1", "c=nofws", "c=simple", "q=dns", "h=from:to", "d=example.com", "s=dk1"])
    )
    .map("; ".join)
    .map(lambda tags: tags + "; b=AAAA"),
    st.binary(max_size=200),
)
def test_verify_never_raises(tags: str, noise: bytes) -> None:
    raw = b"DomainKey-Signature: " + tags.encode() + b"\r\n" + MESSAGE.replace(b"Hi.", noise)
    outcome = verify(raw, resolver_for(KEY_1024))
    assert outcome.status not in (DkStatus.OK, DkStatus.INTERNAL)
    assert outcome.reason


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_verify_arbitrary_bytes(raw: bytes) -> None:
    outcome = verify(b"DomainKey-Signature: " + raw, StaticResolver())
    assert outcome.status is not DkStatus.INTERNAL, outcome.reason


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_canonical_body_properties(body: bytes) -> None:
    for method in ("simple", "nofws"):
        canonical = canonical_body(body, method)
        assert not canonical.endswith(b"\r\n\r\n")
        assert canonical == b"" or canonical.startswith(b"\r\n")
    nofws = canonical_body(body, "nofws")
    assert b" " not in nofws and b"\t" not in nofws
    assert nofws.replace(b"\r\n", b"").count(b"\r") == 0 and b"\n" not in nofws.replace(b"\r\n", b"")


def test_signature_limit() -> None:
    """Past MAX_SIGNATURES fields the rest are reported, not checked, so DNS work stays bounded."""
    field = sign_domainkeys(MESSAGE, DOMAIN, SELECTOR, KEY_1024)
    outcome = verify(field * (MAX_SIGNATURES + 2) + MESSAGE, resolver_for(KEY_1024))
    statuses = [verdict.status for verdict in outcome.verdicts]
    assert statuses == [DkStatus.OK] * MAX_SIGNATURES + [DkStatus.NORESOURCE] * 2
    assert outcome.passed and "not evaluated" in outcome.verdicts[-1].reason
