"""Loaders for the external DKIM / DomainKeys test data in ../shared/testdata/dkim (see its SOURCES.md).

* ``mail-dkim/``: Perl Mail::DKIM's verifier corpus (79 messages, bytes kept exact), its fake DNS
  (:func:`fake_dns_resolver`) and our transcription of its expected verdicts (:func:`expected_results`).
* ``mail-auth/``: stalwart's six real-world messages, each with its own TXT records
  (:func:`mail_auth_cases`); verify them with the clock at :data:`MAIL_AUTH_NOW`.
* ``dkimpy/``: key records, private keys and messages of dkimpy's sign-then-verify tests
  (:func:`dkimpy_key_record`, :func:`dkimpy_private_key`, :func:`dkimpy_file`).

Everything here only reads files; DNS data becomes a resolver the code under test queries normally.
"""

from __future__ import annotations

import base64
import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from mailtoaster.auth.dkim.canon import to_crlf
from mailtoaster.dns import Answer, DnsStatus, RRType, StaticResolver, normalise_name
from tests.spfsuite import TESTDATA

DKIM_DATA = TESTDATA / "dkim"
MAIL_DKIM = DKIM_DATA / "mail-dkim"
CORPUS = MAIL_DKIM / "corpus"
MAIL_AUTH = DKIM_DATA / "mail-auth"
DKIMPY = DKIM_DATA / "dkimpy"

MAIL_AUTH_NOW = 1667843664
"""The clock (2022-11-07T17:54:24Z) at which every mail-auth message verifies (006 has an x= after it)."""

TXT_STRING_MAX = 255
"""A TXT character-string holds at most 255 octets; longer values are served split, as DNS would."""

_TIMEOUT = "~~Query timed out~~"
_SERVFAIL = "~~SERVFAIL~~"


def available() -> bool:
    """Whether the shared test data is present (tests skip with a clear reason when it is not)."""
    return CORPUS.is_dir()


def txt_rdata(value: str | bytes) -> tuple[bytes, ...]:
    """One TXT record holding ``value``, split into character-strings of at most 255 octets."""
    data = value.encode("latin-1") if isinstance(value, str) else value
    if not data:
        return (b"",)
    return tuple(data[i : i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX))


class FailingResolver:
    """A :class:`StaticResolver` plus names that answer SERVFAIL, which StaticResolver cannot express."""

    def __init__(self, inner: StaticResolver, servfail: Iterable[str] = ()) -> None:
        self.inner = inner
        self.servfail = {normalise_name(name) for name in servfail}

    def add_servfail(self, name: str) -> None:
        self.servfail.add(normalise_name(name))

    async def lookup(self, name: str, rrtype: RRType) -> Answer:
        if normalise_name(name) in self.servfail:
            return Answer(name, rrtype, DnsStatus.SERVFAIL, detail=f"{name}: SERVFAIL (test data)")
        return await self.inner.lookup(name, rrtype)


def parse_fake_dns(text: str) -> FailingResolver:
    """Mail::DKIM's ``FAKE_DNS.dat`` format: ``<name><white space><TXT value>`` per line.

    Parsed the way Mail::DKIM's own ``verifier.t`` does (``split /\\s+/, $_, 2``, the value kept
    including trailing spaces); ``#``/``;`` lines and blank lines are comments. ``NXDOMAIN`` leaves
    the name out, ``~~Query timed out~~`` and ``~~SERVFAIL~~`` make every lookup of it fail that way,
    and ``""`` is one empty TXT record. Other names are NXDOMAIN, or "no data" when they are the
    parent of a listed name (``_domainkey.<domain>``), as real DNS answers (RFC 8020).
    """
    static = StaticResolver()
    resolver = FailingResolver(static)
    for line in text.splitlines():
        if not line.strip() or line.lstrip()[:1] in ("#", ";"):
            continue
        parts = re.split(r"\s+", line, maxsplit=1)
        name, value = parts[0], parts[1] if len(parts) > 1 else ""
        if value == "NXDOMAIN":
            continue
        if value == _TIMEOUT:
            static.add_timeout(name)
        elif value == _SERVFAIL:
            resolver.add_servfail(name)
        elif value == '""':
            static.add(name, RRType.TXT, (b"",))
        else:
            static.add(name, RRType.TXT, txt_rdata(value))
    return resolver


def fake_dns_resolver() -> FailingResolver:
    """The resolver for the Mail::DKIM corpus (``mail-dkim/FAKE_DNS.dat``)."""
    return parse_fake_dns((MAIL_DKIM / "FAKE_DNS.dat").read_text(encoding="latin-1"))


@dataclass(frozen=True)
class ExpectedCase:
    """One row of ``mail-dkim/expected.tsv``."""

    file: str
    expected: str
    """Mail::DKIM's overall verdict: ``pass``, ``fail`` or ``invalid``."""
    signature_types: str
    """``DKIM(n)`` or ``DomainKey(n)``: which kind of signature and how many."""
    upstream_skipped: bool
    """Mail::DKIM's own test skips this message (pre-standard drafts, ``bad_dk_3``)."""
    strict_mode_expected: str | None
    """The verdict with Mail::DKIM's ``Strict => 1``, where its test checks one."""
    note: str
    dkimpy_crosscheck: str
    """Per-signature results from dkimpy 1.1.8 (``minkey=256``), for orientation only."""

    @property
    def is_domainkeys(self) -> bool:
        return self.signature_types.startswith("DomainKey")

    @property
    def signature_count(self) -> int:
        match = re.search(r"\((\d+)\)", self.signature_types)
        return int(match.group(1)) if match else 0

    @property
    def name(self) -> str:
        """The file name without ``.txt``, handy as a test id."""
        return self.file.removesuffix(".txt")


def expected_results() -> list[ExpectedCase]:
    """Every row of ``mail-dkim/expected.tsv``, in file order."""
    cases = []
    with (MAIL_DKIM / "expected.tsv").open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if not row or row[0].startswith("#"):
                continue
            row += [""] * (7 - len(row))
            cases.append(
                ExpectedCase(
                    file=row[0],
                    expected=row[1],
                    signature_types=row[2],
                    upstream_skipped=row[3] == "yes",
                    strict_mode_expected=row[4] or None,
                    note=row[5],
                    dkimpy_crosscheck=row[6],
                )
            )
    return cases


def domainkeys_cases() -> list[ExpectedCase]:
    """The 17 DomainKeys (RFC 4870) messages of the corpus."""
    return [case for case in expected_results() if case.is_domainkeys]


def dkim_cases() -> list[ExpectedCase]:
    """The 62 DKIM messages of the corpus."""
    return [case for case in expected_results() if not case.is_domainkeys]


def corpus_message(name: str) -> bytes:
    """A corpus message, bytes exactly as stored (CRLF, except ``bad_1878954.txt``); ``.txt`` optional."""
    file = name if name.endswith(".txt") else name + ".txt"
    return (CORPUS / file).read_bytes()


class MailAuthCase(NamedTuple):
    """Unpacks as ``(name, resolver, message)``."""

    name: str
    resolver: StaticResolver
    message: bytes
    """CRLF line endings; the last DKIM-Signature passes at :data:`MAIL_AUTH_NOW`."""


def parse_mail_auth(data: bytes) -> tuple[StaticResolver, bytes]:
    """stalwart's format: ``<name> <TXT value>`` lines, an empty line, then the message with LF endings."""
    records, _, message = data.partition(b"\n\n")
    resolver = StaticResolver()
    for line in records.splitlines():
        if line.strip():
            name, _, value = line.partition(b" ")
            resolver.add(name.decode("ascii"), RRType.TXT, txt_rdata(value))
    return resolver, to_crlf(message)


def mail_auth_cases() -> list[MailAuthCase]:
    """The six ``mail-auth/NNN.txt`` cases, sorted by name."""
    cases = []
    for path in sorted(MAIL_AUTH.glob("[0-9]*.txt")):
        resolver, message = parse_mail_auth(path.read_bytes())
        cases.append(MailAuthCase(path.stem, resolver, message))
    return cases


def dkimpy_file(name: str) -> bytes:
    """A dkimpy data file, bytes as stored (LF line endings for most)."""
    return (DKIMPY / name).read_bytes()


def dkimpy_key_record(name: str) -> str:
    """The TXT record text in a dkimpy ``*.txt`` / ``*.dns`` file (trailing newline removed)."""
    return dkimpy_file(name).decode("ascii").strip("\r\n")


def dkimpy_private_key(name: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """``*.private``: an RSA PEM key; ``*.key``: an ed25519 key given as a base64 32-byte seed."""
    data = dkimpy_file(name)
    if name.endswith(".key"):
        return ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.strip()))
    key = load_pem_private_key(data, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{name} is not an RSA private key")
    return key


def dkimpy_resolver(records: dict[str, str]) -> StaticResolver:
    """A resolver serving dkimpy key files: ``{"test._domainkey.example.com": "test.txt", ...}``."""
    resolver = StaticResolver()
    for name, file in records.items():
        resolver.add(name, RRType.TXT, txt_rdata(dkimpy_key_record(file)))
    return resolver


def testdata_path(*parts: str) -> Path:
    """A path under ``testdata/dkim`` (for tests that hand a file to an external program)."""
    return DKIM_DATA.joinpath(*parts)
