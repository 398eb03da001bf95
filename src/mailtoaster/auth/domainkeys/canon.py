"""DomainKeys canonicalisation (RFC 4870 §3.4.2): the exact bytes that are hashed and signed.

Unlike DKIM there is one hash over headers and body together: the signed header fields (each
ending CRLF), then, only if the canonical body is not empty, the blank separator line and the
body. Trailing empty lines are never hashed. ``nofws`` removes every space, tab, CR and LF from
each line (header fields unfolded first) and ends it with CRLF; ``simple`` changes nothing else.
Bare CRs and LFs in the body are dropped by ``nofws``, as Mail::DKIM and libdomainkeys do.

A body comes two ways: :func:`canonical_body` takes bytes in memory, :func:`canonical_body_stream` a
body read in chunks (``Message.from_file``). :func:`signed_digest` feeds either into one SHA-1, which
sign and verify hand to ``cryptography`` as ``Prehashed``, so the signed data is never one bytes object.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

from mailtoaster.auth.dkim.canon import (
    crlf_stream,
    header_simple,
    to_crlf,
    with_final_cr_carried,
    without_final_line_breaks,
)
from mailtoaster.auth.domainkeys.signature import NOFWS
from mailtoaster.message import Body, Header, body_chunks

_FWS_CHARS = re.compile(rb"[ \t\r\n]")
_WSP = b" \t"
_LONE_CR = re.compile(rb"\r(?!\n)")
_LONE_LF = re.compile(rb"(?<!\r)\n")
_CRLF = b"\r\n"


def canonical_header(raw: bytes, method: str) -> bytes:
    """One header field, ending in CRLF."""
    if method == NOFWS:
        return _FWS_CHARS.sub(b"", raw) + _CRLF
    return header_simple(to_crlf(raw))


def canonical_body(body: bytes, method: str) -> bytes:
    """The separator line plus the body, without trailing empty lines; empty if nothing remains."""
    data = to_crlf(body)
    if method == NOFWS:
        data = _without_bare_line_ends(_without_white_space(data))
    return _strip_trailing_empty_lines(_CRLF + data)


def canonical_body_stream(chunks: Iterable[bytes], method: str) -> Iterator[bytes]:
    """:func:`canonical_body` of a body read in chunks, in pieces, holding O(one chunk) in memory.

    The separator CRLF goes in front as a piece of its own: trailing empty lines are then CRLFs at
    the end of the stream, all dropped, and one put back when some content came before them.
    """
    data = crlf_stream(chunks)
    if method == NOFWS:
        data = with_final_cr_carried(map(_without_white_space, data), _without_bare_line_ends)
    end = yield from without_final_line_breaks(_with_separator(data))
    if end.wrote and end.dropped_line_breaks:
        yield _CRLF


def _with_separator(pieces: Iterable[bytes]) -> Iterator[bytes]:
    yield _CRLF
    yield from pieces


def _without_white_space(data: bytes) -> bytes:
    return data.translate(None, _WSP)


def _without_bare_line_ends(data: bytes) -> bytes:
    """A CR not before an LF, or an LF not after a CR, removed (``nofws`` keeps only CRLF pairs)."""
    line_breaks = data.count(_CRLF)
    if data.count(b"\r") == line_breaks == data.count(b"\n"):
        return data  # the usual case, found in three C-speed passes instead of two regex passes
    return _LONE_LF.sub(b"", _LONE_CR.sub(b"", data))


def _strip_trailing_empty_lines(data: bytes) -> bytes:
    """Drop empty lines (whole CRLF pairs) at the end; a lone separator line means "no body"."""
    end = len(data)
    while end >= 4 and data[end - 4 : end] == _CRLF + _CRLF:
        end -= 2
    return b"" if end == 2 and data[:2] == _CRLF else data[:end]


def signed_data(headers: Iterable[Header], body: bytes, method: str) -> bytes:
    """Everything the signature covers, given the header fields it selects (in message order)."""
    return b"".join(canonical_header(field.raw, method) for field in headers) + canonical_body(body, method)


def signed_digest(headers: Iterable[Header], body: Body, method: str) -> bytes:
    """The SHA-1 digest of :func:`signed_data`, for either kind of body: a body in memory is
    canonicalised whole (the fast path), one on disk is streamed into the hash."""
    hasher = hashlib.sha1()
    for field in headers:
        hasher.update(canonical_header(field.raw, method))
    if isinstance(body, bytes):
        hasher.update(canonical_body(body, method))
    else:
        for piece in canonical_body_stream(body_chunks(body), method):
            hasher.update(piece)
    return hasher.digest()
