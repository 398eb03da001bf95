"""Canonicalisation (RFC 6376 §3.4), shared by DKIM and ARC.

Functions take and return bytes with CRLF line endings; :func:`to_crlf` turns a message that
arrived with bare LF (a file on disk, a pipe) into that form first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_UNFOLD = re.compile(rb"\r\n(?=[ \t])")
_WSP_RUN = re.compile(rb"[ \t]+")
_NOT_WSP_SPACE = re.compile(rb"[\r\n\x0b\x0c]")

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
    body = _collapse_white_space(body).replace(b" \r\n", b"\r\n")
    stripped = _without_trailing_line_breaks(body)
    if stripped.endswith(b" "):  # the last line had no CRLF; its trailing white space goes too
        stripped = stripped.rstrip(b" ")
        stripped = _without_trailing_line_breaks(stripped)
    return stripped + b"\r\n" if stripped else b""


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
