"""Interoperation with real DKIM and DomainKeys implementations: Perl Mail::DKIM, OpenDKIM, dkimpy.

Passing our own round trips proves only that signer and verifier agree with each other; here every
signature mailtoaster makes must verify in the implementations the world runs, and theirs in ours:

* Mail::DKIM verifies mailtoaster's ``rsa-sha256`` signatures in every canonicalisation and its
  DomainKeys signatures (``nofws`` and ``simple``); OpenDKIM and dkimpy verify its ``rsa-sha256``
  and ``ed25519-sha256`` signatures (Mail::DKIM 1.20230212 has no Ed25519).
* mailtoaster verifies what Mail::DKIM signs (DKIM and DomainKeys), what OpenDKIM signs (RSA and
  Ed25519) and what dkimpy signs (RSA and Ed25519).
* A message altered after signing (body, a signed header) fails in every direction; changes that
  relaxed canonicalisation forgives pass in every direction.

Messages are realistic on purpose: multipart MIME, long folded headers, trailing blank lines,
whitespace at line ends, 8-bit bodies, an empty body, and messages from the shared test data.
Keys come from the loopback DNS server (Mail::DKIM, OpenDKIM) or the same records in memory
(dkimpy, mailtoaster). Peers are driven by :mod:`tests.peers`; see docs/interop.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailtoaster.auth.dkim import DkimResult, DkimSigner, DkimVerifyOptions, sign_message, verify_dkim
from mailtoaster.auth.dkim.canon import to_crlf
from mailtoaster.auth.domainkeys import DkStatus, sending_address, sign_domainkeys_message, verify_domainkeys
from mailtoaster.keys import domainkeys_record_text
from mailtoaster.message import Message
from tests import dkimcorpus
from tests.dnsserver import DnsTestServer
from tests.peers import (
    PeerError,
    PeerKey,
    Peers,
    PeerVerdict,
    dkimpy_problem,
    ed25519_key,
    mail_dkim_problem,
    opendkim_problem,
    rsa_key,
)
from tests.peers import require as require_peer

DOMAIN = "example.com"
RSA = rsa_key(DOMAIN, "interop-rsa")
ED25519 = ed25519_key(DOMAIN, "interop-ed25519")
KEYS = (RSA, ED25519)
DK_SELECTOR = "interop-dk"
DK_PRIVATE_KEY = rsa_key(DOMAIN, DK_SELECTOR).private_key
"""DomainKeys signs for the sender's own domain (RFC 4870 §3.3), so each message's sender domain
gets this key under :data:`DK_SELECTOR`, published in the DomainKeys form (``k=rsa; p=...``)."""
DK_METHODS = ("nofws", "simple")
CANONICALIZATIONS = ("simple/simple", "relaxed/relaxed", "simple/relaxed", "relaxed/simple")

# -- the messages ---------------------------------------------------------------------------------

PLAIN = b"""\
From: Alice Example <alice@example.com>
To: Bob <bob@example.org>
Subject: Lunch on Thursday?
Date: Mon, 04 Mar 2024 09:15:00 +0100
Message-ID: <lunch-1@example.com>

Hi Bob,

are you free for lunch on Thursday?

Alice
"""

MULTIPART = b"""\
From: "Newsletter" <news@example.com>
To: subscriber@example.net
Subject: Spring catalogue
Date: Tue, 05 Mar 2024 10:00:00 +0000
Message-ID: <catalogue-2024@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer-boundary"

This is a multi-part message in MIME format.

--outer-boundary
Content-Type: multipart/alternative; boundary="inner-boundary"

--inner-boundary
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Our spring catalogue is attached.

--inner-boundary
Content-Type: text/html; charset=us-ascii

<html><body><p>Our <b>spring catalogue</b> is attached.</p></body></html>

--inner-boundary--

--outer-boundary
Content-Type: application/pdf; name="catalogue.pdf"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="catalogue.pdf"

JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29k
ZT4+CnN0cmVhbQp4nCvkMlAwUDC1NNUzMVGwMDHSszRSKErlCtfiyuMCAIgkBzEKZW5kc3RyZWFt
CmVuZG9iago2IDAgb2JqCjM4CmVuZG9iagoKdHJhaWxlcgo8PC9TaXplIDcvUm9vdCAxIDAgUj4+
--outer-boundary--

Epilogue text that MIME readers ignore.
"""

FOLDED = b"""\
From: Carol Example
 <carol@example.com>
To: one@example.org, two@example.org, three@example.org, four@example.org,
\tfive@example.org, six@example.org,
    seven@example.org
Subject: =?UTF-8?Q?Quarterly_report_=E2=80=93_draft?= for review by the whole team, with a
 subject line long enough that the mail client folded it twice
 across three lines
Date: Wed, 06 Mar 2024 16:45:12 -0500
Message-ID: <report-draft-7@example.com>
References: <a1@example.com> <a2@example.com> <a3@example.com> <a4@example.com>
 <a5@example.com> <a6@example.com>
X-Mixed-CASE-Header:   value with   inner runs and trailing blanks\x20\x20\t
MIME-Version: 1.0
Content-Type: text/plain;
\tcharset="us-ascii";
\tformat=flowed

Please review the attached draft.
"""

WHITESPACE = b"""\
From: dave@example.com
To: erin@example.org
Subject: whitespace everywhere
Date: Thu, 07 Mar 2024 08:00:00 +0000

line with trailing spaces\x20\x20\x20
line with a trailing tab\t
\x20\x20\t
inner   runs\tof\t\twhitespace
\x20leading space line


trailing blank lines follow



"""

EIGHT_BIT = """\
From: =?UTF-8?Q?J=C3=BCrgen?= <juergen@example.com>
To: frank@example.org
Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=
Date: Fri, 08 Mar 2024 12:00:00 +0100
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Grüße aus Köln! Ünïcödé and 東京 in an 8-bit body.
Straße — “quoted” – dashes.
""".encode()

EMPTY_BODY = b"""\
From: grace@example.com
To: heidi@example.org
Subject: (no body)
Date: Sat, 09 Mar 2024 00:00:00 +0000

"""

NO_FINAL_NEWLINE = b"""\
From: ivan@example.com
To: judy@example.org
Subject: body without a final line break
Date: Sun, 10 Mar 2024 00:00:00 +0000

last line has no CRLF"""

_SIGNATURE_FIELD = re.compile(
    rb"^(?:DKIM-Signature|DomainKey-Signature):.*?\r\n(?![ \t])", re.IGNORECASE | re.MULTILINE | re.DOTALL
)


def unsigned(raw: bytes) -> bytes:
    """``raw`` (as CRLF) without its DKIM-Signature and DomainKey-Signature fields."""
    data = to_crlf(raw)
    head, separator, body = data.partition(b"\r\n\r\n")
    return _SIGNATURE_FIELD.sub(b"", head + b"\r\n").removesuffix(b"\r\n") + separator + body


def _shared(folder: str, name: str) -> bytes:
    return unsigned(dkimcorpus.testdata_path(folder, name).read_bytes())


def messages() -> dict[str, bytes]:
    """Every message under test, CRLF line endings, unsigned."""
    found = {
        "plain": PLAIN,
        "multipart": MULTIPART,
        "folded-headers": FOLDED,
        "whitespace": WHITESPACE,
        "8bit": EIGHT_BIT,
        "empty-body": EMPTY_BODY,
    }
    if dkimcorpus.available():
        found["dkimpy-rfc6376"] = _shared("dkimpy", "rfc6376.msg")
        found["dkimpy-test2"] = _shared("dkimpy", "test2.message")
        found["mail-dkim-gmail"] = _shared("mail-dkim", "corpus/good_dk_gmail.txt")
        found["mail-dkim-multiple"] = _shared("mail-dkim", "corpus/multiple_2.txt")
    return {name: to_crlf(raw) for name, raw in found.items()}


MESSAGES = messages()
MESSAGE_IDS = list(MESSAGES)


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    """Every peer, with :data:`KEYS` served by a DNS server on 127.0.0.1."""
    with DnsTestServer() as server, Peers(server, tmp_path_factory.mktemp("peers")) as found:
        for key in KEYS:
            found.zone.add_key(key)
        for message in MESSAGES.values():
            key = dk_key(message)
            found.zone.add(key.name, domainkeys_record_text(key.private_key.public_key()))
        found.publish()
        yield found


def mail_dkim() -> None:
    require_peer(mail_dkim_problem())


def opendkim() -> None:
    require_peer(opendkim_problem())


def dkimpy() -> None:
    require_peer(dkimpy_problem())


def dk_key(message: bytes) -> PeerKey:
    """The DomainKeys key for ``message``: :data:`DK_PRIVATE_KEY` at its sender's domain."""
    return PeerKey(sending_address(Message.parse(message).headers).domain, DK_SELECTOR, DK_PRIVATE_KEY)


def mt_sign(message: bytes, key: PeerKey, canonicalization: str = "relaxed/relaxed") -> bytes:
    signer = DkimSigner(key.domain, key.selector, key.private_key, canonicalization=canonicalization)
    return sign_message(message, [signer])


async def mt_verify(peers: Peers, message: bytes, *, allow_sha1: bool = False) -> list[DkimResult]:
    verdicts = await verify_dkim(
        Message.parse(message), peers.resolver(), DkimVerifyOptions(allow_sha1=allow_sha1)
    )
    return [verdict.result for verdict in verdicts]


async def mt_verify_domainkeys(peers: Peers, message: bytes) -> list[DkStatus]:
    outcome = await verify_domainkeys(Message.parse(message), peers.resolver())
    return [verdict.status for verdict in outcome.verdicts]


def results(verdicts: list[PeerVerdict]) -> list[str]:
    return [verdict.result for verdict in verdicts]


# -- mailtoaster signs, the peers verify ----------------------------------------------------------


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
@pytest.mark.parametrize("name", MESSAGE_IDS)
def test_mail_dkim_verifies_mailtoaster_rsa(peers: Peers, name: str, canonicalization: str) -> None:
    """In Mail::DKIM's Strict mode (no SHA-1, no keys under 1024 bits), as a careful receiver runs it."""
    mail_dkim()
    signed = mt_sign(MESSAGES[name], RSA, canonicalization)
    verdicts = peers.mail_dkim_verify(signed, strict=True)
    assert [(v.kind, v.result, v.selector) for v in verdicts] == [("dkim", "pass", RSA.selector)], verdicts


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.algorithm)
@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
@pytest.mark.parametrize("name", MESSAGE_IDS)
def test_opendkim_verifies_mailtoaster(peers: Peers, name: str, canonicalization: str, key: PeerKey) -> None:
    opendkim()
    verdicts = peers.opendkim_verify(mt_sign(MESSAGES[name], key, canonicalization))
    assert [(v.result, v.selector) for v in verdicts] == [("pass", key.selector)], verdicts


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.algorithm)
@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
@pytest.mark.parametrize("name", MESSAGE_IDS)
def test_dkimpy_verifies_mailtoaster(peers: Peers, name: str, canonicalization: str, key: PeerKey) -> None:
    dkimpy()
    assert peers.dkimpy_verify(mt_sign(MESSAGES[name], key, canonicalization)) == [True]


# -- the peers sign, mailtoaster verifies ---------------------------------------------------------


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
@pytest.mark.parametrize("name", MESSAGE_IDS)
async def test_mailtoaster_verifies_mail_dkim(peers: Peers, name: str, canonicalization: str) -> None:
    mail_dkim()
    signed = peers.mail_dkim_sign(MESSAGES[name], RSA, method=canonicalization)
    assert await mt_verify(peers, signed) == [DkimResult.PASS]


@pytest.mark.parametrize("name", ["plain", "folded-headers"])
async def test_mail_dkim_rsa_sha1_verifies_but_is_refused_by_policy(peers: Peers, name: str) -> None:
    """rsa-sha1 (still Mail::DKIM's default) checks out cryptographically, but RFC 8301 forbids
    counting it: ``policy`` by default, ``pass`` only when the operator allows SHA-1. Mail::DKIM
    agrees: it passes the signature, except in its Strict mode."""
    mail_dkim()
    signed = peers.mail_dkim_sign(MESSAGES[name], RSA, algorithm="rsa-sha1")
    assert await mt_verify(peers, signed) == [DkimResult.POLICY]
    assert await mt_verify(peers, signed, allow_sha1=True) == [DkimResult.PASS]
    assert results(peers.mail_dkim_verify(signed)) == ["pass"]
    assert results(peers.mail_dkim_verify(signed, strict=True)) == ["invalid"]


def _opendkim_cases() -> list[Any]:
    """OpenDKIM 2.11.0's Ed25519 signatures with *simple* header canonicalisation verify nowhere (see
    test_opendkim_ed25519_simple_header_bug_is_seen_by_everyone); those are tested separately."""
    return [
        pytest.param(name, canonicalization, key, id=f"{name}-{canonicalization}-{key.algorithm}")
        for name in MESSAGE_IDS
        for canonicalization in CANONICALIZATIONS
        for key in KEYS
        if not (key.is_ed25519 and canonicalization.startswith("simple/"))
    ]


@pytest.mark.parametrize(("name", "canonicalization", "key"), _opendkim_cases())
async def test_mailtoaster_verifies_opendkim(
    peers: Peers, name: str, canonicalization: str, key: PeerKey
) -> None:
    opendkim()
    signed = peers.opendkim_sign(MESSAGES[name], key, canonicalization=canonicalization)
    assert await mt_verify(peers, signed) == [DkimResult.PASS]


@pytest.mark.parametrize("canonicalization", ["simple/simple", "simple/relaxed"])
async def test_opendkim_ed25519_simple_header_bug_is_seen_by_everyone(
    peers: Peers, canonicalization: str
) -> None:
    """OpenDKIM 2.11.0 signs ed25519-sha256 with simple header canonicalisation wrongly: not even
    OpenDKIM verifies the result, nor dkimpy. mailtoaster must agree (fail), and verifies OpenDKIM's
    relaxed ones and its own simple ones fine (tests above)."""
    opendkim()
    dkimpy()
    signed = peers.opendkim_sign(MESSAGES["plain"], ED25519, canonicalization=canonicalization)
    assert results(peers.opendkim_verify(signed)) == ["fail"]
    assert peers.dkimpy_verify(signed) == [False]
    assert await mt_verify(peers, signed) == [DkimResult.FAIL]


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.algorithm)
@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
@pytest.mark.parametrize("name", MESSAGE_IDS)
async def test_mailtoaster_verifies_dkimpy(
    peers: Peers, name: str, canonicalization: str, key: PeerKey
) -> None:
    dkimpy()
    signed = peers.dkimpy_sign(MESSAGES[name], key, canonicalization=canonicalization)
    assert await mt_verify(peers, signed) == [DkimResult.PASS]


# -- several signatures on one message ------------------------------------------------------------


async def test_dual_signed_rsa_and_ed25519(peers: Peers) -> None:
    """RFC 8463 §6's advice: sign with both. Verifiers without Ed25519 (Mail::DKIM) still pass the RSA
    signature and call the other unsupported; the others pass both."""
    mail_dkim()
    opendkim()
    dkimpy()
    signers = [DkimSigner(key.domain, key.selector, key.private_key) for key in (ED25519, RSA)]
    signed = sign_message(MESSAGES["multipart"], signers)
    by_mail_dkim = {v.selector: (v.result, v.detail) for v in peers.mail_dkim_verify(signed)}
    assert by_mail_dkim[RSA.selector] == ("pass", "pass")
    assert by_mail_dkim[ED25519.selector][0] == "invalid"
    assert "unsupported algorithm" in by_mail_dkim[ED25519.selector][1]
    assert sorted((v.selector, v.result) for v in peers.opendkim_verify(signed)) == sorted(
        [(ED25519.selector, "pass"), (RSA.selector, "pass")]
    )
    assert peers.dkimpy_verify(signed) == [True, True]
    assert await mt_verify(peers, signed) == [DkimResult.PASS, DkimResult.PASS]


async def test_every_signer_on_one_message(peers: Peers) -> None:
    """Each signer adds its signature on top of the others' (as relays do); every verifier passes every
    signature it supports, so no signer disturbs another's."""
    mail_dkim()
    opendkim()
    dkimpy()
    message = mt_sign(MESSAGES["folded-headers"], ED25519, "relaxed/simple")
    message = peers.mail_dkim_sign(message, RSA, method="simple/simple")
    message = peers.opendkim_sign(message, ED25519, canonicalization="relaxed/relaxed")
    message = peers.dkimpy_sign(message, RSA, canonicalization="simple/relaxed")
    message = mt_sign(message, RSA, "simple/simple")
    assert await mt_verify(peers, message) == [DkimResult.PASS] * 5
    assert peers.dkimpy_verify(message) == [True] * 5
    assert results(peers.opendkim_verify(message)) == ["pass"] * 5
    by_mail_dkim = [(v.selector, v.result) for v in peers.mail_dkim_verify(message)]
    assert sorted(by_mail_dkim) == sorted([(RSA.selector, "pass")] * 3 + [(ED25519.selector, "invalid")] * 2)


# -- alterations after signing --------------------------------------------------------------------

Signer = Callable[[Peers, bytes], bytes]

SIGNERS: dict[str, tuple[Signer, PeerKey]] = {
    "mailtoaster-rsa": (lambda p, m: mt_sign(m, RSA, "simple/simple"), RSA),
    "mailtoaster-ed25519": (lambda p, m: mt_sign(m, ED25519, "relaxed/relaxed"), ED25519),
    "mail-dkim-rsa": (lambda p, m: p.mail_dkim_sign(m, RSA, method="relaxed/simple"), RSA),
    "opendkim-rsa": (lambda p, m: p.opendkim_sign(m, RSA, canonicalization="simple/simple"), RSA),
    "opendkim-ed25519": (
        lambda p, m: p.opendkim_sign(m, ED25519, canonicalization="relaxed/relaxed"),
        ED25519,
    ),
    "dkimpy-rsa": (lambda p, m: p.dkimpy_sign(m, RSA, canonicalization="relaxed/relaxed"), RSA),
    "dkimpy-ed25519": (lambda p, m: p.dkimpy_sign(m, ED25519, canonicalization="simple/simple"), ED25519),
}


def _replace_once(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def alter(message: bytes) -> bytes:
        assert message.count(old) >= 1, f"{old!r} not in the message"
        return message.replace(old, new, 1)

    return alter


ALTERATIONS: dict[str, Callable[[bytes], bytes]] = {
    "body-word": _replace_once(b"review the attached", b"ignore the attached"),
    "body-line-added": lambda m: m + b"P.S. one more line\r\n",
    "subject": _replace_once(b"Subject: =?UTF-8?Q?Quarterly", b"Subject: =?UTF-8?Q?Yearly"),
    "from": _replace_once(b"<carol@example.com>", b"<mallory@example.com>"),
}


_VERIFIERS = ("mailtoaster", "opendkim", "dkimpy", "mail-dkim")


async def _all_verdicts(peers: Peers, message: bytes, key: PeerKey) -> dict[str, list[str]]:
    """Each verifier's per-signature results, as words (Mail::DKIM only for RSA)."""
    found = {
        "mailtoaster": [result.value for result in await mt_verify(peers, message)],
        "opendkim": results(peers.opendkim_verify(message)),
        "dkimpy": ["pass" if ok else "fail" for ok in peers.dkimpy_verify(message)],
    }
    if not key.is_ed25519:
        found["mail-dkim"] = results(peers.mail_dkim_verify(message))
    return found


@pytest.mark.parametrize("alteration", list(ALTERATIONS))
@pytest.mark.parametrize("signer", list(SIGNERS))
async def test_altered_message_fails_everywhere(peers: Peers, signer: str, alteration: str) -> None:
    mail_dkim()
    opendkim()
    dkimpy()
    sign, key = SIGNERS[signer]
    signed = sign(peers, MESSAGES["folded-headers"])
    intact = await _all_verdicts(peers, signed, key)
    assert intact == {verifier: ["pass"] for verifier in intact}, "the unaltered message must pass first"
    altered = await _all_verdicts(peers, ALTERATIONS[alteration](signed), key)
    assert altered == {verifier: ["fail"] for verifier in altered}


def in_transit(message: bytes) -> bytes:
    """What relaxed canonicalisation forgives (RFC 6376 §3.4.2, §3.4.4): header names re-cased,
    fields refolded, white space runs changed, trailing white space and trailing empty lines added."""
    head = re.sub(rb"^Subject:", b"SUBJECT:  ", message, flags=re.MULTILINE)  # not h=...:Subject:...
    return respaced(head)


def respaced(message: bytes) -> bytes:
    """White space changes only: fields refolded, runs changed, trailing white space and trailing
    empty lines added (what DomainKeys ``nofws`` forgives: it keeps header names' case)."""
    head, _, body = message.partition(b"\r\n\r\n")
    head = re.sub(rb"^To: one@", b"To:\r\n\tone@", head, flags=re.MULTILINE)
    head = head.replace(b"\r\n\tfive@", b"\r\n  five@")
    body = body.replace(b"review the", b"review   the\t").replace(b"\r\n", b"  \r\n") + b"\r\n\r\n"
    return head + b"\r\n\r\n" + body


RELAXED_SIGNERS: dict[str, tuple[Signer, PeerKey]] = {
    "mailtoaster-rsa": (lambda p, m: mt_sign(m, RSA), RSA),
    "mailtoaster-ed25519": (lambda p, m: mt_sign(m, ED25519), ED25519),
    "mail-dkim-rsa": (lambda p, m: p.mail_dkim_sign(m, RSA, method="relaxed/relaxed"), RSA),
    "opendkim-ed25519": (
        lambda p, m: p.opendkim_sign(m, ED25519, canonicalization="relaxed/relaxed"),
        ED25519,
    ),
    "dkimpy-rsa": (lambda p, m: p.dkimpy_sign(m, RSA, canonicalization="relaxed/relaxed"), RSA),
}


@pytest.mark.parametrize("signer", list(RELAXED_SIGNERS))
async def test_relaxed_forgives_transit_changes_everywhere(peers: Peers, signer: str) -> None:
    mail_dkim()
    opendkim()
    dkimpy()
    sign, key = RELAXED_SIGNERS[signer]
    changed = in_transit(sign(peers, MESSAGES["folded-headers"]))
    verdicts = await _all_verdicts(peers, changed, key)
    assert verdicts == {verifier: ["pass"] for verifier in verdicts}


@pytest.mark.parametrize("canonicalization", ["simple/simple", "simple/relaxed", "relaxed/simple"])
async def test_simple_does_not_forgive_transit_changes_anywhere(peers: Peers, canonicalization: str) -> None:
    mail_dkim()
    opendkim()
    dkimpy()
    changed = in_transit(mt_sign(MESSAGES["folded-headers"], RSA, canonicalization))
    verdicts = await _all_verdicts(peers, changed, RSA)
    assert verdicts == {verifier: ["fail"] for verifier in verdicts}


async def test_over_signed_from_defeats_an_added_from_everywhere(peers: Peers) -> None:
    """mailtoaster names From once more in h= than it occurs (RFC 6376 §8.15), so a second From
    added later breaks its signature in every verifier, not just in ours."""
    mail_dkim()
    opendkim()
    dkimpy()
    signed = mt_sign(MESSAGES["plain"], RSA)
    assert await _all_verdicts(peers, signed, RSA) == {key: ["pass"] for key in _VERIFIERS}
    added = b"From: Mallory <mallory@example.com>\r\n" + signed
    assert await _all_verdicts(peers, added, RSA) == {key: ["fail"] for key in _VERIFIERS}


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
async def test_body_without_final_crlf(peers: Peers, canonicalization: str) -> None:
    """A body whose last line has no CRLF (impossible over SMTP, possible from a file or a pipe):
    RFC 6376 §3.4.3 and §3.4.4 say both canonicalisations add the missing CRLF. mailtoaster and
    dkimpy do. Two peers deviate, each asserted here so a change in them is noticed:

    * Mail::DKIM's *simple* body canonicalisation does not add it: its body hash differs, so its
      simple-body signatures fail in mailtoaster and dkimpy, and ours fail in it.
    * OpenDKIM refuses *relaxed* bodies without it ("CRLF at end of body missing"): it will not sign
      them and evaluates no signature on them.
    """
    mail_dkim()
    opendkim()
    dkimpy()
    message = to_crlf(NO_FINAL_NEWLINE)
    relaxed_body = canonicalization.endswith("/relaxed")
    ours = mt_sign(message, RSA, canonicalization)
    assert await mt_verify(peers, ours) == [DkimResult.PASS]
    assert peers.dkimpy_verify(ours) == [True]
    assert results(peers.mail_dkim_verify(ours)) == ["pass" if relaxed_body else "fail"]
    assert results(peers.opendkim_verify(ours)) == ([] if relaxed_body else ["pass"])

    theirs = peers.mail_dkim_sign(message, RSA, method=canonicalization)
    expected = DkimResult.PASS if relaxed_body else DkimResult.FAIL
    assert await mt_verify(peers, theirs) == [expected]
    assert peers.dkimpy_verify(theirs) == [relaxed_body]

    if relaxed_body:
        with pytest.raises(PeerError, match="CRLF at end of body missing"):
            peers.opendkim_sign(message, RSA, canonicalization=canonicalization)
    else:
        signed = peers.opendkim_sign(message, RSA, canonicalization=canonicalization)
        assert await mt_verify(peers, signed) == [DkimResult.PASS]


# -- DomainKeys (RFC 4870) ------------------------------------------------------------------------


def mt_sign_domainkeys(message: bytes, method: str) -> bytes:
    key = dk_key(message)
    assert isinstance(key.private_key, rsa.RSAPrivateKey)
    return sign_domainkeys_message(message, key.domain, key.selector, key.private_key, method)


FOLDED_FROM = b"From: Carol Example\r\n <carol@example.com>\r\n"
DK_MESSAGES = {
    name: message.replace(FOLDED_FROM, b"From: Carol Example <carol@example.com>\r\n")
    for name, message in MESSAGES.items()
}
"""For DomainKeys the From field is not folded: Mail::DKIM cannot read a folded sender address (see
test_domainkeys_folded_from)."""
DK_SENDER_FIELDS = frozenset({"from", "sender", "to", "subject", "date", "message-id"})


@pytest.mark.parametrize("method", DK_METHODS)
@pytest.mark.parametrize("name", MESSAGE_IDS)
def test_mail_dkim_verifies_mailtoaster_domainkeys(peers: Peers, name: str, method: str) -> None:
    mail_dkim()
    verdicts = peers.mail_dkim_verify(mt_sign_domainkeys(DK_MESSAGES[name], method))
    assert [(v.kind, v.result) for v in verdicts] == [("domainkeys", "pass")], verdicts


@pytest.mark.parametrize("h_tag", [False, True], ids=["all-headers", "h-tag"])
@pytest.mark.parametrize("method", DK_METHODS)
@pytest.mark.parametrize("name", MESSAGE_IDS)
async def test_mailtoaster_verifies_mail_dkim_domainkeys(
    peers: Peers, name: str, method: str, h_tag: bool
) -> None:
    """Mail::DKIM signs every field when not told otherwise (no ``h=``, as most DomainKeys signers
    did) or the fields named in ``h=``."""
    mail_dkim()
    message = DK_MESSAGES[name]
    names = [field.name for field in Message.parse(message).headers]
    headers = [name for name in names if name.lower() in DK_SENDER_FIELDS] if h_tag else None
    signed = peers.mail_dkim_sign(
        message, dk_key(message), method=method, algorithm="rsa-sha1", domainkeys=True, headers=headers
    )
    assert (b"h=" in signed.split(b"\r\n\t b=")[0].split(b"b=")[0]) == h_tag
    assert await mt_verify_domainkeys(peers, signed) == [DkStatus.OK]


def _domainkeys_signers() -> dict[str, Callable[[Peers, bytes, str], bytes]]:
    return {
        "mailtoaster": lambda peers, message, method: mt_sign_domainkeys(message, method),
        "mail-dkim": lambda peers, message, method: peers.mail_dkim_sign(
            message, dk_key(message), method=method, algorithm="rsa-sha1", domainkeys=True
        ),
    }


async def _domainkeys_verdicts(peers: Peers, message: bytes) -> dict[str, list[str]]:
    return {
        "mailtoaster": [status.result.value for status in await mt_verify_domainkeys(peers, message)],
        "mail-dkim": results([v for v in peers.mail_dkim_verify(message) if v.kind == "domainkeys"]),
    }


@pytest.mark.parametrize("alteration", list(ALTERATIONS))
@pytest.mark.parametrize("method", DK_METHODS)
@pytest.mark.parametrize("signer", list(_domainkeys_signers()))
async def test_altered_domainkeys_message_fails_in_both(
    peers: Peers, signer: str, method: str, alteration: str
) -> None:
    mail_dkim()
    signed = _domainkeys_signers()[signer](peers, DK_MESSAGES["folded-headers"], method)
    assert await _domainkeys_verdicts(peers, signed) == {"mailtoaster": ["pass"], "mail-dkim": ["pass"]}
    altered = ALTERATIONS[alteration](signed)
    assert await _domainkeys_verdicts(peers, altered) == {"mailtoaster": ["fail"], "mail-dkim": ["fail"]}


@pytest.mark.parametrize("signer", list(_domainkeys_signers()))
async def test_nofws_forgives_white_space_changes_in_both(peers: Peers, signer: str) -> None:
    """``nofws`` drops all white space (RFC 4870 §3.4.2.2), so refolding and respacing are harmless;
    ``simple`` notices them. (Neither forgives re-cased header names, unlike DKIM's relaxed.)"""
    assert respaced(DK_MESSAGES["folded-headers"]) != DK_MESSAGES["folded-headers"]
    mail_dkim()
    signers = _domainkeys_signers()[signer]
    nofws = respaced(signers(peers, DK_MESSAGES["folded-headers"], "nofws"))
    assert await _domainkeys_verdicts(peers, nofws) == {"mailtoaster": ["pass"], "mail-dkim": ["pass"]}
    simple = respaced(signers(peers, DK_MESSAGES["folded-headers"], "simple"))
    assert await _domainkeys_verdicts(peers, simple) == {"mailtoaster": ["fail"], "mail-dkim": ["fail"]}
    recased = in_transit(signers(peers, DK_MESSAGES["folded-headers"], "nofws"))
    assert await _domainkeys_verdicts(peers, recased) == {"mailtoaster": ["fail"], "mail-dkim": ["fail"]}


async def test_dkim_and_domainkeys_on_one_message(peers: Peers) -> None:
    """A qmail-era sender signs with both; Mail::DKIM checks both kinds in one pass, and each of
    mailtoaster's verifiers checks its own kind, undisturbed by the other's field."""
    mail_dkim()
    message = mt_sign_domainkeys(MESSAGES["multipart"], "nofws")
    message = mt_sign(message, RSA, "relaxed/simple")
    message = peers.mail_dkim_sign(
        message, dk_key(message), method="simple", algorithm="rsa-sha1", domainkeys=True
    )
    by_mail_dkim = sorted((v.kind, v.result) for v in peers.mail_dkim_verify(message))
    assert by_mail_dkim == [("dkim", "pass"), ("domainkeys", "pass"), ("domainkeys", "pass")]
    assert await mt_verify(peers, message) == [DkimResult.PASS]
    assert await mt_verify_domainkeys(peers, message) == [DkStatus.OK, DkStatus.OK]


@pytest.mark.parametrize("method", DK_METHODS)
async def test_domainkeys_folded_from(peers: Peers, method: str) -> None:
    """A From field folded before the address (``From: Carol Example\\r\\n <carol@...>``, legal and
    common): Mail::DKIM 1.20230212 cannot find the sender in it and calls any DomainKey-Signature
    "invalid (bad identity)", even its own. mailtoaster unfolds it (RFC 5322 §2.2.3) and verifies
    both its own signature and Mail::DKIM's."""
    mail_dkim()
    message = MESSAGES["folded-headers"]
    assert FOLDED_FROM in message
    ours = mt_sign_domainkeys(message, method)
    theirs = _domainkeys_signers()["mail-dkim"](peers, message, method)
    for signed in (ours, theirs):
        assert await mt_verify_domainkeys(peers, signed) == [DkStatus.OK]
        verdicts = peers.mail_dkim_verify(signed)
        assert [(v.result, v.detail) for v in verdicts] == [("invalid", "invalid (bad identity)")]


async def test_domainkeys_h_tag_without_the_sender_is_refused_by_both(peers: Peers) -> None:
    """RFC 4870 §3.3: the sending address's field must be signed. Mail::DKIM will make such a
    signature when told to, but neither it nor mailtoaster accepts one."""
    mail_dkim()
    message = DK_MESSAGES["plain"]
    key = dk_key(message)
    signed = peers.mail_dkim_sign(
        message, key, method="nofws", algorithm="rsa-sha1", domainkeys=True, headers=["To", "Subject"]
    )
    verdicts = peers.mail_dkim_verify(signed)
    assert [(v.result, v.detail) for v in verdicts] == [("invalid", "invalid (bad identity)")]
    assert await mt_verify_domainkeys(peers, signed) == [DkStatus.SYNTAX]


# -- RFC 5322 obsolete syntax ---------------------------------------------------------------------

OBSOLETE_SYNTAX = to_crlf(b"""\
From: User <user@example.com>
Subject : white space before the colon
To\t: recipient@example.org

body
""")


@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
async def test_white_space_before_the_colon(peers: Peers, canonicalization: str) -> None:
    """``Subject :`` is RFC 5322 §4.5 obsolete syntax that receivers must still accept. mailtoaster and
    Mail::DKIM sign and verify it alike, and both notice a change to such a field. (dkimpy refuses
    the message outright: test_dkim_differential.py; OpenDKIM's test mode errors out on it.)"""
    mail_dkim()
    message = OBSOLETE_SYNTAX
    ours = mt_sign(message, RSA, canonicalization)
    theirs = peers.mail_dkim_sign(message, RSA, method=canonicalization)
    for signed in (ours, theirs):
        assert results(peers.mail_dkim_verify(signed)) == ["pass"]
        assert await mt_verify(peers, signed) == [DkimResult.PASS]
        altered = signed.replace(b"before the colon", b"after the colon")
        assert results(peers.mail_dkim_verify(altered)) == ["fail"]
        assert await mt_verify(peers, altered) == [DkimResult.FAIL]
