"""Wire encoding of IMAP values (RFC 3501 §4 and §9), written byte for byte as Dovecot 2.3 writes them.

Every function returns bytes ready to go on the wire. Strings are the subtle part: RFC 3501 allows a
quoted string only for 7-bit text without CR, LF or NUL, so anything else must be a literal
(``{n}\\r\\n`` and the bytes). Dovecot also prefers a literal once a quoted string would need more
than four backslash escapes, and clients (and our tests against Dovecot) see exactly these choices,
so they are copied here rather than reinvented. :func:`string_for_humans` is Dovecot's cleanup of
display text (ENVELOPE subjects and names): white space runs become one space, the ends are trimmed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

NIL = b"NIL"
QUOTED_MAX_ESCAPES = 4
"""Backslash escapes a quoted string may need before a literal is shorter on average (Dovecot's rule)."""

_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')


def literal(data: bytes) -> bytes:
    """``{n}\\r\\n`` followed by ``data``: any bytes but NUL may be sent this way."""
    return b"{%d}\r\n" % len(data) + data


def quoted(data: bytes) -> bytes:
    """``data`` as a quoted string; the caller has checked it is 7-bit without CR, LF or NUL."""
    if b"\\" in data or b'"' in data:
        data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + data + b'"'


_QUOTING_TROUBLE = re.compile(rb"[^\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]")
"""Bytes a quoted string cannot hold (8-bit, NUL, CR, LF) or must escape (quote, backslash)."""


def _needs_literal(data: bytes) -> bool:
    """Whether ``data`` cannot (8-bit, CR, LF, NUL) or should not (too many escapes) be quoted."""
    if _QUOTING_TROUBLE.search(data) is None:
        return False
    if not data.isascii() or b"\n" in data or b"\r" in data or b"\0" in data:
        return True
    return data.count(b'"') + data.count(b"\\") > QUOTED_MAX_ESCAPES


def string(data: bytes) -> bytes:
    """A quoted string when that is safe and short, else a literal (Dovecot's ``imap_append_string``)."""
    return literal(data) if _needs_literal(data) else quoted(data)


def nstring(data: bytes | None) -> bytes:
    """NIL for None, else :func:`string`."""
    return NIL if data is None else string(data)


def nstring_nolf(data: bytes | None) -> bytes:
    """:func:`nstring` of a header value with its line breaks removed, as Dovecot writes the ENVELOPE
    date and message ids: a CR or LF is dropped, or becomes a space when the next line does not
    already begin with white space (so unfolding never glues two words together)."""
    if data is None or (b"\n" not in data and b"\r" not in data):
        return nstring(data)
    kept = bytearray()
    for index, byte in enumerate(data):
        if byte not in (0x0A, 0x0D):
            kept.append(byte)
        elif index + 1 < len(data) and data[index + 1] not in b" \t\r\n":
            kept.append(0x20)
    return string(bytes(kept))


def astring(data: bytes) -> bytes:
    """An atom when every byte allows it (and it is not empty or ``NIL``), else :func:`string`."""
    if data and data.upper() != NIL and is_astring_atom(data):
        return data
    return string(data)


def is_astring_atom(data: bytes) -> bool:
    """Whether ``data`` consists only of ASTRING-CHARs (ATOM-CHARs and ``]``)."""
    return all(0x20 < byte < 0x7F and (byte not in _ATOM_SPECIALS or byte == 0x5D) for byte in data)


def atom(text: str | bytes) -> bytes:
    """An atom as is; raises ValueError for text that is not one (it would corrupt the response)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if not data or any(byte <= 0x20 or byte >= 0x7F or byte in _ATOM_SPECIALS for byte in data):
        raise ValueError(f"not an IMAP atom: {data!r}")
    return data


def string_for_humans(data: bytes) -> bytes:
    """Display text cleaned the way Dovecot cleans ENVELOPE subjects and names.

    Tabs, CRs and LFs count as spaces, runs of white space become one space, leading and trailing
    white space goes, NUL becomes 0x80. Text that needed no change is sent quoted as it is; text
    that changed, or holds a quote, backslash or 8-bit byte, is sent as a literal (as Dovecot does,
    even when a quoted string would have done).
    """
    if _humane_unchanged(data):
        return b'"' + data + b'"'
    words = data.replace(b"\0", b"\x80").translate(_SPACES).split(b" ")
    text = b" ".join(word for word in words if word)
    return literal(text) if text else b'""'


_SPACES = bytes.maketrans(b"\t\r\n", b"   ")


def _humane_unchanged(data: bytes) -> bool:
    """True when :func:`string_for_humans` may send ``data`` quoted as it is (Dovecot's fast path)."""
    return _HUMANE_CHANGED.search(data) is None


_HUMANE_CHANGED = re.compile(rb"[^\x01-\x08\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]|^ | $|  ")
"""What :func:`string_for_humans` changes or will not quote: NUL, tab, CR, LF, quote, backslash,
8-bit bytes, leading or trailing space, a run of spaces."""


def paren_list(items: Iterable[bytes]) -> bytes:
    """``(a b c)``: the items, already encoded, separated by single spaces."""
    return b"(" + b" ".join(items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    """A flag list such as ``(\\Seen $Junk)``; flags are atoms (system flags keep their backslash)."""
    return paren_list(_flag(flag) for flag in flags)


def _flag(flag: str) -> bytes:
    if flag.startswith("\\"):
        return b"\\" + atom(flag[1:])
    return atom(flag)


def untagged(text: str | bytes) -> bytes:
    """``* text\\r\\n``; ``text`` may hold literals (their CRLFs are part of it)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return b"* " + data + b"\r\n"


def tagged(tag: str | bytes, status: str, text: str, code: str | None = None) -> bytes:
    """``tag OK [CODE] text\\r\\n`` (status OK, NO or BAD; the code without its brackets)."""
    if status not in ("OK", "NO", "BAD"):
        raise ValueError(f"not a tagged status: {status!r}")
    tag_bytes = tag.encode("ascii") if isinstance(tag, str) else tag
    middle = f"{status} [{code}] {text}" if code else f"{status} {text}"
    return tag_bytes + b" " + middle.encode("utf-8") + b"\r\n"


def date_time_text(moment: datetime) -> bytes:
    """RFC 3501 date-time text ``dd-Mon-yyyy hh:mm:ss +zzzz`` (day always two digits, as Dovecot
    writes it); a naive ``moment`` is taken as UTC."""
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = b"-" if minutes < 0 else b"+"
    hours, minutes = divmod(abs(minutes), 60)
    return b"%02d-%s-%04d %02d:%02d:%02d %s%02d%02d" % (
        moment.day,
        _MONTHS[moment.month - 1],
        moment.year,
        moment.hour,
        moment.minute,
        moment.second,
        sign,
        hours,
        minutes,
    )


def date_time(moment: datetime) -> bytes:
    """INTERNALDATE's value: :func:`date_time_text` as a quoted string."""
    return b'"' + date_time_text(moment) + b'"'
