"""Canonicalisation (RFC 6376 §3.4), shared by DKIM and ARC.

Functions take and return bytes with CRLF line endings; :func:`to_crlf` turns a message that
arrived with bare LF (a file on disk, a pipe) into that form first.
"""

from __future__ import annotations

import re

_BARE_LF = re.compile(rb"(?<!\r)\n")
_UNFOLD = re.compile(rb"\r\n(?=[ \t])")
_WSP_RUN = re.compile(rb"[ \t]+")
_TRAILING_EMPTY_LINES = re.compile(rb"(\r\n)+\Z")

SIMPLE = "simple"
RELAXED = "relaxed"
ALGORITHMS = (SIMPLE, RELAXED)


def to_crlf(data: bytes) -> bytes:
    """Bare LF becomes CRLF; existing CRLF is kept (so CRLF input is returned unchanged)."""
    return _BARE_LF.sub(b"\r\n", data) if b"\n" in data else data


def header_simple(raw: bytes) -> bytes:
    """The field exactly as it is, ending in CRLF."""
    return raw if raw.endswith(b"\r\n") else raw.rstrip(b"\r\n") + b"\r\n"


def header_relaxed(raw: bytes) -> bytes:
    """Lower-case name, unfolded, white-space runs made one space, none around the colon or at the end."""
    name, _, value = raw.partition(b":")
    value = _UNFOLD.sub(b"", value.rstrip(b"\r\n"))
    value = _WSP_RUN.sub(b" ", value).strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


def header(raw: bytes, algorithm: str) -> bytes:
    return header_relaxed(raw) if algorithm == RELAXED else header_simple(raw)


def body_simple(body: bytes) -> bytes:
    """Trailing empty lines removed; an empty body is one CRLF (RFC 6376 §3.4.3)."""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    stripped = _TRAILING_EMPTY_LINES.sub(b"", body)
    return stripped + b"\r\n" if stripped else b"\r\n"


def body_relaxed(body: bytes) -> bytes:
    """White space at line ends dropped, runs made one space, trailing empty lines removed (§3.4.4).

    An empty body stays empty (RFC 6376 erratum 1384: no CRLF is added).
    """
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = _WSP_RUN.sub(b" ", body)
    body = body.replace(b" \r\n", b"\r\n")
    stripped = _TRAILING_EMPTY_LINES.sub(b"", body)
    return stripped + b"\r\n" if stripped else b""


def body(data: bytes, algorithm: str) -> bytes:
    return body_relaxed(data) if algorithm == RELAXED else body_simple(data)


def strip_b_value(raw: bytes) -> bytes:
    """The signature field with the value of its ``b=`` tag emptied (RFC 6376 §3.7), bytes otherwise kept.

    Matches ``b=`` as a whole tag name only, never ``bh=``.
    """
    name, colon, value = raw.partition(b":")
    return name + colon + _B_TAG.sub(rb"\1", value, count=1)


_B_TAG = re.compile(rb"((?:\A|;)[ \t\r\n]*b[ \t\r\n]*=)[^;]*")
