"""File-backed messages and streamed body hashing: ``Message.from_file`` against ``Message.parse``,
the streaming DKIM/DomainKeys canonicalisers against the in-memory ones on random bodies and random
chunkings, verdicts on real signed messages read from files (tampered copies too), bounded memory
on a 50 MB message, and garbage files."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailtoaster.auth.arc import ArcOutcome, ArcResult, add_arc_set, sign_arc, validate_arc
from mailtoaster.auth.arc.seal import seal_arc_parsed, sign_arc_parsed
from mailtoaster.auth.dkim import (
    DkimResult,
    DkimSigner,
    DkimVerdict,
    DkimVerifyOptions,
    canon,
    engine,
    sign_dkim,
    verify_dkim,
)
from mailtoaster.auth.dkim.engine import PrivateKey
from mailtoaster.auth.dkim.sign import sign_dkim_parsed
from mailtoaster.auth.domainkeys import DkStatus, DomainKeysOutcome, sign_domainkeys, verify_domainkeys
from mailtoaster.auth.domainkeys import canon as dk_canon
from mailtoaster.auth.domainkeys.sign import sign_domainkeys_parsed
from mailtoaster.dns import RRType, StaticResolver
from mailtoaster.keys import dkim_record_text
from mailtoaster.message import FileBody, InMemoryMessage, Message, MessageFileError, body_chunks
from tests.dkimcorpus import txt_rdata
from tests.peers import dkimpy

NOW = 1_700_000_000
DOMAIN = "example.com"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
ARC_KEY = ed25519.Ed25519PrivateKey.generate()
OPTIONS = DkimVerifyOptions(now=NOW + 10)
TINY = 16
"""An ``in_memory_limit`` that leaves every test body on disk."""


def _resolver() -> StaticResolver:
    resolver = StaticResolver()
    keys: dict[str, PrivateKey] = {"rsa": RSA_KEY, "ed": ED_KEY, "arc": ARC_KEY, "dk": RSA_KEY}
    for selector, key in keys.items():
        resolver.add(
            f"{selector}._domainkey.{DOMAIN}", RRType.TXT, txt_rdata(dkim_record_text(key.public_key()))
        )
    return resolver


RESOLVER = _resolver()


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, repeats allowed: empty chunks are a case too)."""
    points = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(points)]


# --- streaming canonicalisation against the in-memory functions -----------------------------------

_PIECES = [
    b"a",
    b"Z.",
    b" ",
    b"\t",
    b"  \t ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b" \r\n",
    b"\r \n",
    b"\n\r",
]
bodies = st.lists(st.sampled_from(_PIECES), max_size=40).map(b"".join) | st.binary(max_size=200)
cut_lists = st.lists(st.integers(min_value=0, max_value=250), max_size=12)


@settings(max_examples=400, deadline=None)
@given(body=bodies, cuts=cut_lists)
def test_streamed_dkim_bodies_equal_the_in_memory_ones(body: bytes, cuts: list[int]) -> None:
    chunks = chunked(body, cuts)
    for algorithm in canon.ALGORITHMS:
        streamed = b"".join(canon.body_stream(iter(chunks), algorithm))
        assert streamed == engine.canonical_body(body, algorithm), algorithm


@settings(max_examples=300, deadline=None)
@given(body=bodies, cuts=cut_lists, length=st.none() | st.integers(min_value=0, max_value=260))
def test_streamed_dkim_digests_and_lengths_equal_the_in_memory_ones(
    body: bytes, cuts: list[int], length: int | None
) -> None:
    """``l=`` hashes a prefix of the canonical body; the total length is counted either way."""
    for algorithm in canon.ALGORITHMS:
        for hash_name in ("sha256", "sha1"):
            in_memory = engine.body_digest(body, algorithm, hash_name, length)
            pieces = canon.body_stream(chunked(body, cuts), algorithm)
            assert engine.digest_stream(pieces, hash_name, length) == in_memory
            canonical = engine.canonical_body(body, algorithm)
            assert in_memory.canonical_length == len(canonical)
            covered = canonical if length is None else canonical[:length]
            assert in_memory.digest == hashlib.new(hash_name, covered).digest()


@settings(max_examples=300, deadline=None)
@given(body=bodies, cuts=cut_lists)
def test_streamed_domainkeys_bodies_equal_the_in_memory_ones(body: bytes, cuts: list[int]) -> None:
    for method in ("simple", "nofws"):
        streamed = b"".join(dk_canon.canonical_body_stream(chunked(body, cuts), method))
        assert streamed == dk_canon.canonical_body(body, method), method


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        b"\r\n\r\n\r\n",
        b" \t \r\n \r\n",
        b"line \t \r\n\r\n  \r\n",
        b"a\r\r\nb\r \n \t\r",
        b"last line without CRLF \t ",
        b"x\n\n\ny \n\r\n\t\n",
        b"\r",
        b" \r",
    ],
)
def test_every_single_cut_point(body: bytes) -> None:
    """Each body cut into chunks of every size from 1 octet up: every boundary gets hit."""
    for size in range(1, len(body) + 2):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        for algorithm in canon.ALGORITHMS:
            assert b"".join(canon.body_stream(chunks, algorithm)) == engine.canonical_body(body, algorithm)
        for method in ("simple", "nofws"):
            streamed = b"".join(dk_canon.canonical_body_stream(chunks, method))
            assert streamed == dk_canon.canonical_body(body, method)


def test_known_canonical_forms_of_the_stream() -> None:
    """Spot values from RFC 6376 §3.4.5 and erratum 1384, so agreement is not agreement on a bug."""
    body = b" C \r\nD \t E\r\n\r\n\r\n"
    chunks = chunked(body, [1, 2, 5, 9, 11, 13])
    assert b"".join(canon.body_stream(chunks, "relaxed")) == b" C\r\nD E\r\n"
    assert b"".join(canon.body_stream(chunks, "simple")) == b" C \r\nD \t E\r\n"
    assert b"".join(canon.body_stream([], "relaxed")) == b""
    assert b"".join(canon.body_stream([b"\r", b"\n"], "simple")) == b"\r\n"
    assert b"".join(dk_canon.canonical_body_stream([b"a b\r", b"\n\r\n"], "nofws")) == b"\r\nab\r\n"
    assert b"".join(dk_canon.canonical_body_stream([b"\r\n", b"\r\n"], "simple")) == b""


def test_a_million_empty_lines_stream_in_bounded_pieces() -> None:
    """Trailing empty lines are held back as a count: text after a million of them is still written
    in pieces of bounded size, never one 2 MB bytes object."""
    chunks = [b"x\r\n", *([b"\r\n" * 4096] * 256), b"y"]
    pieces = list(canon.body_stream(chunks, "relaxed"))
    assert max(len(piece) for piece in pieces) <= 1 << 16
    assert b"".join(pieces) == b"x\r\n" + b"\r\n" * (4096 * 256) + b"y\r\n"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, chunk_size=st.integers(min_value=1, max_value=64), length=st.none() | st.integers(0, 100))
def test_file_body_digests_equal_the_in_memory_ones(
    tmp_path: Path, body: bytes, chunk_size: int, length: int | None
) -> None:
    path = tmp_path / "body"
    path.write_bytes(b"0123456789" + body)
    file_body = FileBody(path, 10, len(body))
    assert b"".join(file_body.chunks(chunk_size)) == body
    assert b"".join(body_chunks(body, chunk_size)) == body
    for algorithm in canon.ALGORITHMS:
        expected = engine.body_digest(body, algorithm, "sha256", length)
        assert engine.body_digest(file_body, algorithm, "sha256", length) == expected
    headers = Message.parse(b"From: a@example.com\r\nSubject: x\r\n\r\n").headers
    for method in ("simple", "nofws"):
        signed = dk_canon.signed_data(headers, body, method)
        assert dk_canon.signed_digest(headers, file_body, method) == hashlib.sha1(signed).digest()
        assert dk_canon.signed_digest(headers, body, method) == hashlib.sha1(signed).digest()


# --- Message.from_file against Message.parse ------------------------------------------------------

_LINES = [
    b"From: a@example.com",
    b"Subject: hi",
    b"X-Folded: one",
    b"\ttwo",
    b" three",
    b"Bad Name: x",
    b"no colon here",
    b"",
    b"body text  ",
    b"\x00\xff binary",
]
messages = st.builds(
    lambda lines, ending, tail: ending.join(lines) + tail,
    st.lists(st.sampled_from(_LINES), max_size=14),
    st.sampled_from([b"\r\n", b"\n"]),
    st.sampled_from([b"", b"\r\n", b"\n", b"tail"]),
) | st.binary(max_size=300)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=messages, in_memory_limit=st.integers(min_value=0, max_value=400))
def test_from_file_sees_what_parse_sees(tmp_path: Path, raw: bytes, in_memory_limit: int) -> None:
    path = tmp_path / "message"
    path.write_bytes(raw)
    parsed = Message.parse(raw)
    loaded = Message.from_file(path, in_memory_limit=in_memory_limit)
    assert (loaded.headers, loaded.defects) == (parsed.headers, parsed.defects)
    assert loaded.body_size == len(parsed.body)
    assert b"".join(loaded.body_chunks(7)) == parsed.body
    if len(parsed.body) <= in_memory_limit:
        assert isinstance(loaded, InMemoryMessage)
        assert loaded == parsed
    else:
        assert isinstance(loaded.body_source, FileBody)
        assert not hasattr(loaded, "body")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=messages, header_limit=st.integers(min_value=0, max_value=120))
@example(raw=b"A: 1\r\n\r\nbody", header_limit=8)  # the blank line is the last whole line read
@example(raw=b"A: 1\r\n\tmore\r\nbody", header_limit=10)  # a field may go on past the limit
def test_a_header_section_past_the_limit_is_cut_with_a_defect(
    tmp_path: Path, raw: bytes, header_limit: int
) -> None:
    """Within the limit (the line ending the header section read whole) the result is parse's;
    past it the fields read so far, less the last, are the header and the rest is the body."""
    path = tmp_path / "message"
    path.write_bytes(raw)
    parsed = Message.parse(raw)
    loaded = Message.from_file(path, header_limit=header_limit)
    assert isinstance(loaded, InMemoryMessage)
    header_end = sum(len(field.raw) for field in parsed.headers)
    end_line = raw.find(b"\n", header_end)
    if len(raw) <= header_limit or 0 <= end_line < header_limit:
        assert loaded == parsed
        return
    assert loaded.defects == (
        f"header section longer than {header_limit} octets: the rest is taken as the body",
    )
    assert loaded.headers == parsed.headers[: len(loaded.headers)]
    assert len(loaded.headers) < max(1, len(parsed.headers))
    assert b"".join(field.raw for field in loaded.headers) + loaded.body == raw


def test_file_backed_message_has_no_body_attribute(tmp_path: Path) -> None:
    path = tmp_path / "message"
    path.write_bytes(b"From: a@example.com\r\n\r\n" + b"x" * 100)
    loaded = Message.from_file(path, in_memory_limit=99)
    with pytest.raises(AttributeError, match="body"):
        loaded.body  # type: ignore[attr-defined]  # noqa: B018
    assert loaded.body_size == 100
    assert isinstance(Message.from_file(path, in_memory_limit=100), InMemoryMessage)


def test_mypy_rejects_body_on_a_message_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the two types: ``.body`` on what ``from_file`` returns is a type error, and is
    accepted once narrowed to an in-memory message."""
    from mypy import api

    import mailtoaster

    monkeypatch.setenv("MYPYPATH", str(Path(mailtoaster.__file__).parents[1]))
    careless = tmp_path / "careless.py"
    careless.write_text(
        "from pathlib import Path\nfrom mailtoaster.message import InMemoryMessage, Message\n"
        "def size(path: Path) -> int:\n    return len(Message.from_file(path).body)\n"
        "def narrowed(path: Path) -> int:\n    message = Message.from_file(path)\n"
        "    return len(message.body) if isinstance(message, InMemoryMessage) else message.body_size\n"
    )
    flags = ["--strict", "--no-incremental", "--cache-dir", os.devnull, "--follow-imports", "silent"]
    report, _, status = api.run([*flags, str(careless)])
    assert status == 1
    assert report.count("error:") == 1
    assert 'careless.py:4: error: "Message" has no attribute "body"' in report


def test_a_file_changed_after_parsing_is_an_error_not_a_short_body(tmp_path: Path) -> None:
    path = tmp_path / "message"
    path.write_bytes(b"From: a@example.com\r\n\r\n" + b"x" * 1000)
    loaded = Message.from_file(path, in_memory_limit=TINY)
    path.write_bytes(b"From: a@example.com\r\n\r\n" + b"x" * 10)
    with pytest.raises(MessageFileError, match="ended 990 octets early"):
        b"".join(loaded.body_chunks())


def test_fields_added_on_top_keep_the_body_where_it_is(tmp_path: Path) -> None:
    path = tmp_path / "message"
    path.write_bytes(b"From: a@example.com\r\n\r\n" + b"x" * 100)
    loaded = Message.from_file(path, in_memory_limit=TINY)
    signed = loaded.with_fields_on_top(b"DKIM-Signature: v=1;\r\n\tb=abc\r\nX-Two: 2\r\n")
    assert [field.name for field in signed.headers] == ["DKIM-Signature", "X-Two", "From"]
    assert signed.headers[0].raw == b"DKIM-Signature: v=1;\r\n\tb=abc\r\n"
    assert signed.body_source is loaded.body_source
    in_memory = Message.parse(b"From: a@example.com\r\n\r\nhi\r\n").with_fields_on_top(b"X-A: 1\r\n")
    assert in_memory.body == b"hi\r\n" and in_memory.get("x-a") is not None


# --- real signed messages, verified from files ----------------------------------------------------

BODY_LINES = [
    b"Hello  there,\t\r\n",
    b"  indented line with trailing space \r\n",
    b"\r\n",
    b"tab\tseparated\t\tcolumns\r\n",
    b"a line long enough to matter " * 3 + b"\r\n",
]


def make_message(body_octets: int, seed: int = 0, line_ending: bytes = b"\r\n") -> bytes:
    rng = random.Random(seed)
    lines = [rng.choice(BODY_LINES) for _ in range(body_octets // 40)]
    body = b"".join(lines) + b"last line \t" + b"\r\n\r\n \r\n"
    header = (
        b"From: Joe <joe@example.com>\r\nTo: Suzie <suzie@example.net>\r\nSubject: files\r\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <streamed@example.com>\r\n\r\n"
    )
    return (header + body).replace(b"\r\n", line_ending)


def dkimpy_signature(raw: bytes, canonicalization: tuple[bytes, bytes]) -> bytes:
    """A signature made by another implementation, with ``l=`` set to the whole canonical body."""
    pem = RSA_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    field: bytes = dkimpy().sign(
        canon.to_crlf(raw), b"rsa", DOMAIN.encode(), pem, canonicalize=canonicalization, length=True
    )
    return field


def sign_everything(raw: bytes) -> bytes:
    """``raw`` with DKIM (every canonicalisation, RSA and Ed25519, dkimpy's l=), DomainKeys (simple
    and nofws) and an ARC set on top; signatures made from the bytes in memory."""
    signers = [
        DkimSigner(DOMAIN, "rsa", RSA_KEY, "relaxed/relaxed"),
        DkimSigner(DOMAIN, "ed", ED_KEY, "simple/simple"),
        DkimSigner(DOMAIN, "rsa", RSA_KEY, "relaxed/simple"),
        DkimSigner(DOMAIN, "ed", ED_KEY, "simple/relaxed"),
    ]
    fields = b"".join(sign_dkim(raw, signers, timestamp=NOW))
    fields += dkimpy_signature(raw, (b"relaxed", b"relaxed")) + dkimpy_signature(raw, (b"simple", b"simple"))
    for method in ("simple", "nofws"):
        fields += sign_domainkeys(raw, DOMAIN, "dk", RSA_KEY, canonicalization=method)
    signed = fields + canon.to_crlf(raw)
    arc = sign_arc(signed, domain=DOMAIN, selector="arc", private_key=ARC_KEY, authserv_id="mx.example.com")
    return add_arc_set(signed, arc)


Verdicts = tuple[list[DkimVerdict], DomainKeysOutcome, ArcOutcome]


async def all_verdicts(message: Message) -> Verdicts:
    dkim = await verify_dkim(message, RESOLVER, OPTIONS)
    domainkeys = await verify_domainkeys(message, RESOLVER)
    arc = await validate_arc(message, RESOLVER)
    return dkim, domainkeys, arc


def _body_emptied(signed: bytes) -> bytes:
    return signed[: signed.index(b"\r\n\r\n") + 4]


APPENDED = b"P.S. appended\r\n"
TAMPERINGS: dict[str, Callable[[bytes], bytes]] = {
    "as signed": lambda signed: signed,
    "a body octet changed past the first chunk": lambda signed: signed[:-70_000] + b"#" + signed[-69_999:],
    "white space added inside the body": lambda signed: signed[:-50_000] + b"  \t" + signed[-50_000:],
    "a line appended": lambda signed: signed + APPENDED,
    "trailing empty lines added": lambda signed: signed + b"\r\n\r\n",
    "the subject changed": lambda signed: signed.replace(b"Subject: files", b"Subject: FILES", 1),
    "bare LF line endings": lambda signed: signed.replace(b"\r\n", b"\n"),
    "the body emptied": _body_emptied,
}
HARMLESS = {"as signed", "trailing empty lines added", "bare LF line endings"}
SIGNED = sign_everything(make_message(200_000, seed=1))


@pytest.mark.parametrize("case", TAMPERINGS)
async def test_file_backed_verdicts_equal_in_memory_verdicts(tmp_path: Path, case: str) -> None:
    raw = TAMPERINGS[case](SIGNED)
    path = tmp_path / "message"
    path.write_bytes(raw)
    streamed = Message.from_file(path, in_memory_limit=TINY)
    assert isinstance(streamed.body_source, FileBody) or case == "the body emptied"
    in_memory = await all_verdicts(Message.parse(raw))
    assert await all_verdicts(streamed) == in_memory
    dkim, domainkeys, arc = in_memory
    assert len(dkim) == 6
    if case in HARMLESS:  # the comparison above is not between two failures
        assert [verdict.result for verdict in dkim] == [DkimResult.PASS] * 6
        assert domainkeys.status is DkStatus.OK and arc.result is ArcResult.PASS
    else:
        assert not all(verdict.passed for verdict in dkim)
        assert domainkeys.status is not DkStatus.OK or arc.result is not ArcResult.PASS
    if case == "a line appended":
        # dkimpy's l= signatures still cover what they signed; the P.S. is unsigned, and in relaxed
        # so are the body's old trailing lines "\r\n \r\n" (empty there, but not in simple).
        unsigned = [len(b"\r\n\r\n" + APPENDED), len(APPENDED)]
        assert [(verdict.result, verdict.unsigned_body_octets) for verdict in dkim[4:]] == [
            (DkimResult.POLICY, octets) for octets in unsigned
        ]


@pytest.mark.parametrize("line_ending", [b"\r\n", b"\n"])
async def test_signing_a_file_equals_signing_its_bytes(tmp_path: Path, line_ending: bytes) -> None:
    raw = make_message(150_000, seed=2, line_ending=line_ending)
    path = tmp_path / "message"
    path.write_bytes(raw)
    streamed = Message.from_file(path, in_memory_limit=TINY)
    assert isinstance(streamed.body_source, FileBody)
    signers = [DkimSigner(DOMAIN, "rsa", RSA_KEY, c) for c in ("relaxed/relaxed", "simple/simple")]
    assert sign_dkim_parsed(streamed, signers, timestamp=NOW) == sign_dkim(raw, signers, timestamp=NOW)
    for method in ("simple", "nofws"):
        from_file = sign_domainkeys_parsed(streamed, DOMAIN, "dk", RSA_KEY, canonicalization=method)
        assert from_file == sign_domainkeys(raw, DOMAIN, "dk", RSA_KEY, canonicalization=method)
    arc_options = {
        "domain": DOMAIN,
        "selector": "arc",
        "private_key": ARC_KEY,
        "authserv_id": "mx",
        "timestamp": NOW,
    }
    assert sign_arc_parsed(streamed, **arc_options) == sign_arc(raw, **arc_options)  # type: ignore[arg-type]
    chain, fields = await seal_arc_parsed(streamed, RESOLVER, **arc_options)  # type: ignore[arg-type]
    assert chain.result is ArcResult.NONE and fields == sign_arc(raw, **arc_options)  # type: ignore[arg-type]


# --- a 50 MB message in bounded memory ------------------------------------------------------------

FIFTY_MB = 50 * 1024 * 1024
PEAK_LIMIT = 10 * 1024 * 1024


def write_large_message(path: Path) -> None:
    header = make_message(0)
    header = header[: header.index(b"\r\n\r\n") + 4]
    block = make_message(1 << 20, seed=3)[len(header) :]
    with path.open("wb") as file:
        file.write(header)
        for _ in range(FIFTY_MB // len(block) + 1):
            file.write(block)


async def test_a_50_mb_message_is_signed_and_verified_in_bounded_memory(tmp_path: Path) -> None:
    unsigned, signed = tmp_path / "unsigned", tmp_path / "signed"
    write_large_message(unsigned)
    assert unsigned.stat().st_size > FIFTY_MB
    arc_options = {
        "domain": DOMAIN,
        "selector": "arc",
        "private_key": ARC_KEY,
        "authserv_id": "mx",
        "timestamp": NOW,
    }
    tracemalloc.start()
    try:
        message = Message.from_file(unsigned)
        signers = [DkimSigner(DOMAIN, "rsa", RSA_KEY), DkimSigner(DOMAIN, "ed", ED_KEY, "simple/simple")]
        fields = b"".join(sign_dkim_parsed(message, signers, timestamp=NOW))
        fields += sign_domainkeys_parsed(message, DOMAIN, "dk", RSA_KEY)
        arc = sign_arc_parsed(message.with_fields_on_top(fields), **arc_options)  # type: ignore[arg-type]
        signing_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        with signed.open("wb") as out, unsigned.open("rb") as original:
            out.write(b"".join(reversed(arc)) + fields)
            while block := original.read(1 << 16):
                out.write(block)
        tracemalloc.start()
        dkim, domainkeys, chain = await all_verdicts(Message.from_file(signed))
        verifying_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [verdict.result for verdict in dkim] == [DkimResult.PASS, DkimResult.PASS]
    assert domainkeys.status is DkStatus.OK
    assert chain.result is ArcResult.PASS
    assert signing_peak < PEAK_LIMIT, signing_peak
    assert verifying_peak < PEAK_LIMIT, verifying_peak


# --- garbage files never raise --------------------------------------------------------------------


def garbage_files() -> Iterator[tuple[str, bytes]]:
    rng = random.Random(4)
    yield "empty", b""
    yield "only a blank line", b"\r\n"
    yield "no header section", b"Hello, this is not a header\r\n" * 1000
    yield "binary", rng.randbytes(3 << 20)
    yield "one huge line", b"X-Huge: " + b"a" * (3 << 20)
    yield "a huge folded field", b"X-Huge: a\r\n" + b" continued\r\n" * 300_000 + b"\r\nbody\r\n"
    yield "too many fields", b"From: a@example.com\r\n" + b"X-Field: value\r\n" * 100_000 + b"\r\nbody\r\n"
    yield (
        "signature fields and garbage",
        b"DKIM-Signature: v=1; b=\x00\xff\r\nDomainKey-Signature: q\r\n\x00\r\n",
    )


@pytest.mark.parametrize("name", [name for name, _ in garbage_files()])
async def test_garbage_files_never_raise(tmp_path: Path, name: str) -> None:
    raw = dict(garbage_files())[name]
    path = tmp_path / "garbage"
    path.write_bytes(raw)
    parsed = Message.parse(raw)
    for limit in (TINY, 1 << 20):
        message = Message.from_file(path, in_memory_limit=limit)
        assert message.headers == parsed.headers[: len(message.headers)]
        cut = any("header section longer than" in defect for defect in message.defects)
        assert cut or b"".join(message.body_chunks()) == parsed.body
        assert cut == (len(raw) > 1 << 20 and name != "binary")
        await all_verdicts(message)


def test_a_long_header_section_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    """The fields that fit are kept, the cut one and the rest become the body: nothing unbounded."""
    raw = b"From: a@example.com\r\n" + b"X-Field: value\r\n" * 100_000 + b"\r\nbody\r\n"
    path = tmp_path / "message"
    path.write_bytes(raw)
    message = Message.from_file(path)
    assert isinstance(message, InMemoryMessage)
    header_octets = sum(len(field.raw) for field in message.headers)
    assert 1 << 19 < header_octets <= 1 << 20
    assert message.get("From") is not None
    assert message.body == raw[header_octets:]
    streamed = Message.from_file(path, in_memory_limit=TINY)
    assert streamed.headers == message.headers and isinstance(streamed.body_source, FileBody)


def test_file_body_digest_is_shared_between_identical_requests(tmp_path: Path) -> None:
    """Two signatures asking for the same body hash read the file once (the file is replaced after
    the first pass; the second answer is the first one's)."""
    path = tmp_path / "message"
    path.write_bytes(b"From: a@example.com\r\n\r\n" + b"x y\r\n" * 100)
    body = Message.from_file(path, in_memory_limit=TINY).body_source
    assert isinstance(body, FileBody)
    first = engine.body_digest(body, "relaxed", "sha256")
    path.write_bytes(b"From: a@example.com\r\n\r\n" + b"z w\r\n" * 100)
    assert engine.body_digest(body, "relaxed", "sha256") == first
    assert engine.body_digest(body, "simple", "sha256").digest == engine.body_hash(
        b"z w\r\n" * 100, "simple", "sha256"
    )
    other = FileBody(path, body.offset, body.size)
    assert engine.body_digest(other, "relaxed", "sha256") != first
