"""Canonicalisation (RFC 6376 §3.4), shared by DKIM and ARC.

Functions take and return bytes with CRLF line endings; :func:`to_crlf` turns a message that
arrived with bare LF (a file on disk, a pipe) into that form first.

Bodies come two ways. :func:`body` canonicalises bytes in memory (the fast path, for every message
that fits). :func:`body_stream` does the same to a body read in chunks, yielding the canonical body
in pieces, so a 50 MB body is hashed with one chunk in memory. Chunks may split the input anywhere
(inside a CRLF, a white-space run, the trailing empty lines); the stream holds back only what the
next chunk can change: a final CR, one collapsed space, and a count of trailing CRLFs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import NamedTuple

_UNFOLD = re.compile(rb"\r\n(?=[ \t])")
_WSP_RUN = re.compile(rb"[ \t]+")
_NOT_WSP_SPACE = re.compile(rb"[\r\n\x0b\x0c]")
_REVERSED_CRLFS = re.compile(rb"(?:\n\r)*")
_CRLF = b"\r\n"
_LINE_BREAKS_PER_PIECE = 1 << 15
"""Held-back CRLFs are written in pieces of at most this many (64 KiB)."""

SIMPLE = "simple"
RELAXED = "relaxed"
ALGORITHMS = (SIMPLE, RELAXED)


def to_crlf(data: bytes) -> bytes:
    """Bare LF becomes CRLF; existing CRLF is kept (so CRLF input is returned unchanged)."""
    line_feeds = data.count(b"\n")
    if line_feeds == 0 or line_feeds == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def header_simple(raw: bytes) -> bytes:
    """The field exactly as it is, ending in CRLF."""
    return raw if raw.endswith(b"\r\n") else raw.rstrip(b"\r\n") + b"\r\n"


def header_relaxed(raw: bytes) -> bytes:
    """Lower-case name, unfolded, white-space runs made one space, none around the colon or at the end."""
    name, _, value = raw.partition(b":")
    value = value.rstrip(b"\r\n")
    if b"\r\n" in value:
        value = _UNFOLD.sub(b"", value)
    if _NOT_WSP_SPACE.search(value):  # bare CR/LF, VT or FF are kept: only WSP is white space here
        value = _WSP_RUN.sub(b" ", value).strip(b" ")
    else:
        value = b" ".join(value.split())  # the same result, several times faster
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


def header(raw: bytes, algorithm: str) -> bytes:
    return header_relaxed(raw) if algorithm == RELAXED else header_simple(raw)


def headers(fields: Sequence[bytes], algorithm: str) -> bytes:
    """Several fields, each canonicalised with :func:`header` (after :func:`to_crlf`), concatenated.

    Relaxed canonicalisation of ordinary fields takes a batch path: when every CR and LF belongs to a
    CRLF that ends a field or folds a line, ``bytes.split`` unfolds and collapses white space in one
    call per field, with the same result as :func:`header_relaxed` (verification hashes a dozen
    fields per signature; this is most of that time).
    """
    if algorithm == RELAXED and _plainly_folded(fields):
        return b"".join(
            [
                name.rstrip(b" \t").lower() + b":" + b" ".join(value.split()) + b"\r\n"
                for name, _, value in (raw.partition(b":") for raw in fields)
            ]
        )
    return b"".join([header(to_crlf(raw), algorithm) for raw in fields])


def _plainly_folded(fields: Sequence[bytes]) -> bool:
    """Each field ends in CRLF; every other CRLF is followed by white space; no other CR, LF, VT or FF."""
    joined = b"".join(fields)
    line_ends = joined.count(b"\r\n")
    return (
        all(raw.endswith(b"\r\n") for raw in fields)
        and joined.count(b"\r") == line_ends == joined.count(b"\n")
        and line_ends - joined.count(b"\r\n ") - joined.count(b"\r\n\t") == len(fields)
        and b"\x0b" not in joined
        and b"\x0c" not in joined
    )


def body_simple(body: bytes) -> bytes:
    """Trailing empty lines removed; an empty body is one CRLF (RFC 6376 §3.4.3)."""
    stripped = _without_trailing_line_breaks(body)
    return stripped + b"\r\n" if stripped else b"\r\n"


def body_relaxed(body: bytes) -> bytes:
    """White space at line ends dropped, runs made one space, trailing empty lines removed (§3.4.4).

    An empty body stays empty (RFC 6376 erratum 1384: no CRLF is added).
    """
    body = _relaxed_lines(body)
    stripped = _without_trailing_line_breaks(body)
    if stripped.endswith(b" "):  # the last line had no CRLF; its trailing white space goes too
        stripped = stripped.rstrip(b" ")
        stripped = _without_trailing_line_breaks(stripped)
    return stripped + b"\r\n" if stripped else b""


def _relaxed_lines(data: bytes) -> bytes:
    """Runs of white space made one space, and none left before a CRLF (§3.4.4 a and b)."""
    return _collapse_white_space(data).replace(b" \r\n", b"\r\n")


def _collapse_white_space(data: bytes) -> bytes:
    """Every run of spaces and tabs made one space. ``bytes.replace`` passes are several times faster
    than a regular expression on large bodies; a run of n spaces needs about log2(n) passes."""
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return data


def _without_trailing_line_breaks(body: bytes) -> bytes:
    """``body`` without its final CRLFs, i.e. without its last line break and any empty lines after it."""
    end = len(body)
    while body.startswith(b"\r\n", end - 2) and end >= 2:
        end -= 2
    return body[:end]


def body(data: bytes, algorithm: str) -> bytes:
    return body_relaxed(data) if algorithm == RELAXED else body_simple(data)


def body_stream(chunks: Iterable[bytes], algorithm: str) -> Iterator[bytes]:
    """:func:`body` of ``to_crlf(b"".join(chunks))``, in pieces, holding O(one chunk) in memory."""
    return relaxed_body_stream(chunks) if algorithm == RELAXED else simple_body_stream(chunks)


def simple_body_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """:func:`body_simple` of the CRLF form of a body read in chunks."""
    yield from without_final_line_breaks(crlf_stream(chunks))
    yield _CRLF


def relaxed_body_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """:func:`body_relaxed` of the CRLF form of a body read in chunks."""
    end = yield from without_final_line_breaks(_relaxed_line_stream(crlf_stream(chunks)))
    if end.wrote:
        yield _CRLF


class StreamEnd(NamedTuple):
    """What :func:`without_final_line_breaks` saw: whether it yielded anything, and how many final
    CRLFs it dropped (DomainKeys keeps one of them when there was content)."""

    wrote: bool
    dropped_line_breaks: int


def with_final_cr_carried(chunks: Iterable[bytes], transform: Callable[[bytes], bytes]) -> Iterator[bytes]:
    """``transform`` applied piecewise, never to a piece ending in CR: that CR waits for the next
    chunk, since whether it begins a CRLF depends on the next octet. For transforms (like
    :func:`to_crlf`) that look only at a CR and the octet after it, the pieces joined equal
    ``transform`` of the chunks joined. Empty pieces are not yielded."""
    carried = b""
    for chunk in chunks:
        data = carried + chunk if carried else chunk
        carried = b"\r" if data.endswith(b"\r") else b""
        if carried:
            data = data[:-1]
        if data:
            yield transform(data)
    if carried and (last := transform(carried)):
        yield last


def crlf_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """:func:`to_crlf` over a body read in chunks. Every LF out has its CR in the same piece."""
    return with_final_cr_carried(chunks, to_crlf)


def _relaxed_line_stream(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """:func:`_relaxed_lines` over CRLF pieces: a space ending a piece waits for the next, which may
    begin with more white space (one run) or a CRLF (the space goes); one left at the end is the
    trailing white space of a last line without CRLF, which §3.4.4 drops."""
    space = b""
    for piece in pieces:
        text = _relaxed_lines(space + piece if space else piece)
        space = b" " if text.endswith(b" ") else b""
        if space:
            text = text[:-1]
        if text:
            yield text


def without_final_line_breaks(pieces: Iterable[bytes]) -> Generator[bytes, None, StreamEnd]:
    """The pieces with every CRLF at the very end dropped; returns what was written and dropped.

    CRLFs are held back (as a count, so a million empty lines cost nothing) until content follows
    them. Each piece must contain whole CRLFs, as the CRLF streams above make them.
    """
    held = 0
    wrote = False
    for piece in pieces:
        content, line_breaks = _split_final_line_breaks(piece)
        if content:
            yield from _line_breaks(held)
            yield content
            held, wrote = line_breaks, True
        else:
            held += line_breaks
    return StreamEnd(wrote, held)


def _split_final_line_breaks(piece: bytes) -> tuple[bytes, int]:
    """``piece`` without its final CRLFs, and how many there were (linear, unlike stripping pairs in a
    loop, for a chunk that is all empty lines)."""
    content = piece.rstrip(b"\r\n")
    tail = piece[len(content) :]
    if not tail:
        return piece, 0
    pairs = _REVERSED_CRLFS.match(tail[::-1])
    line_breaks = pairs.end() // 2 if pairs else 0
    return piece[: len(piece) - 2 * line_breaks], line_breaks


def _line_breaks(count: int) -> Iterator[bytes]:
    """``count`` CRLFs, in pieces of bounded size."""
    while count > 0:
        now = min(count, _LINE_BREAKS_PER_PIECE)
        yield _CRLF * now
        count -= now


def strip_b_value(raw: bytes) -> bytes:
    """The signature field with the value of its ``b=`` tag emptied (RFC 6376 §3.7), bytes otherwise kept.

    Matches ``b=`` as a whole tag name only, never ``bh=``.
    """
    name, colon, value = raw.partition(b":")
    specs = value.split(b";")
    for position, spec in enumerate(specs):
        tag, equals, _ = spec.partition(b"=")
        if equals and tag.strip(b" \t\r\n") == b"b":
            specs[position] = tag + equals
            break
    return name + colon + b";".join(specs)
