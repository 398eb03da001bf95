"""DomainKeys canonicalisation (RFC 4870 §3.4.2): the exact bytes that are hashed and signed.

Unlike DKIM there is one hash over headers and body together: the signed header fields (each
ending CRLF), then, only if the canonical body is not empty, the blank separator line and the
body. Trailing empty lines are never hashed. ``nofws`` removes every space, tab, CR and LF from
each line (header fields unfolded first) and ends it with CRLF; ``simple`` changes nothing else.
Bare CRs and LFs in the body are dropped by ``nofws``, as Mail::DKIM and libdomainkeys do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mailtoaster.auth.dkim.canon import header_simple, to_crlf
from mailtoaster.auth.domainkeys.signature import NOFWS
from mailtoaster.message import Header

_FWS_CHARS = re.compile(rb"[ \t\r\n]")
_WSP = re.compile(rb"[ \t]")
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
        data = _LONE_LF.sub(b"", _LONE_CR.sub(b"", _WSP.sub(b"", data)))
    return _strip_trailing_empty_lines(_CRLF + data)


def _strip_trailing_empty_lines(data: bytes) -> bytes:
    """Drop empty lines (whole CRLF pairs) at the end; a lone separator line means "no body"."""
    end = len(data)
    while end >= 4 and data[end - 4 : end] == _CRLF + _CRLF:
        end -= 2
    return b"" if end == 2 and data[:2] == _CRLF else data[:end]


def signed_data(headers: Iterable[Header], body: bytes, method: str) -> bytes:
    """Everything the signature covers, given the header fields it selects (in message order)."""
    return b"".join(canonical_header(field.raw, method) for field in headers) + canonical_body(body, method)
