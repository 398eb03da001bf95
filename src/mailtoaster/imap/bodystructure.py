"""The MIME structure of a stored message, parsed once into offsets, and IMAP's ENVELOPE, BODY and
BODYSTRUCTURE rendered from it exactly as Dovecot 2.3 renders them.

Clients compare servers, and the project's tests compare this one with Dovecot byte for byte, so the
parsing rules here are Dovecot's (``lib-mail/message-parser.c``, ``message-header-parser.c``,
``rfc2231-parser.c``, ``message-part-data.c`` and ``lib-imap/imap-bodystructure.c``; the RFC 822
tokens and address lists, shared with SEARCH, are in :mod:`.rfc822`), reimplemented rather than
approximated with the ``email`` package, whose object model rewrites messages and cannot say where
a part starts in the stored bytes.
The rules that matter most:

* A header ends at the first empty line (a line without a colon is a header too), at end of data,
  or, inside a multipart, at a line that starts with a boundary of an enclosing multipart; then the
  newline before that boundary belongs to the parent's body.
* A boundary line is ``--`` followed by a boundary of any open multipart as a prefix (the longest,
  searching from the innermost); ``--boundary--`` closes it, and a boundary of an outer multipart
  also closes the inner ones. A part without Content-Type is text/plain, or message/rfc822 inside
  multipart/digest; Content-* fields count only in MIME parts (MIME-Version or Content-Type seen, or a
  multipart's child). A multipart or message/rfc822 nested :data:`MAX_NESTED_PARTS` deep, or met
  after :data:`MAX_TOTAL_PARTS` parts, is not opened (BODYSTRUCTURE calls it application/octet-stream).
* Sizes and line counts are those of the CRLF form (every bare LF counts as CRLF), computed from the
  offsets with ``bytes.count``, never by copying.

Parsing never raises on any input. It keeps the part tree and the header fields BODYSTRUCTURE and
ENVELOPE read, not the message: header fields and boundary lines are found with ``bytes.find`` and
regular expressions, so a huge header or a flood of ``--`` lines costs time in C, not objects.
"""

from __future__ import annotations

import mmap
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache

from mailtoaster.imap import response
from mailtoaster.imap.rfc822 import UNICODE_REPLACEMENT, Address, Tokens, parse_addresses

MessageData = bytes | mmap.mmap
"""A whole message as stored: bytes in memory, or a read-only mmap of the Maildir file."""

MAX_NESTED_PARTS = 100
"""Dovecot's nesting limit for multiparts and message/rfc822: deeper parts become plain bodies."""
MAX_TOTAL_PARTS = 10000
"""Dovecot's limit on parts in one message (itself included): once reached, boundaries are no longer
recognised and message/rfc822 bodies are not parsed."""
BOUNDARY_MAX = 80
"""Longest boundary kept (RFC 2046 allows 70; Dovecot keeps 80 and ignores the rest)."""
_BOUNDARY_LINE_SCAN = BOUNDARY_MAX + 4
_DEFAULT_CHARSET = b'"charset" "us-ascii"'
_EMPTY_BODY = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
_EMPTY_BODYSTRUCTURE = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
_LWSP = (0x20, 0x09)
_ENVELOPE_STRINGS = {
    b"DATE": "date",
    b"SUBJECT": "subject",
    b"IN-REPLY-TO": "in_reply_to",
    b"MESSAGE-ID": "message_id",
}
_ENVELOPE_ADDRESSES = {
    b"FROM": "from",
    b"SENDER": "sender",
    b"REPLY-TO": "reply-to",
    b"TO": "to",
    b"CC": "cc",
    b"BCC": "bcc",
}
_STRUCTURE_FIELDS = frozenset([b"MIME-VERSION", *_ENVELOPE_STRINGS, *_ENVELOPE_ADDRESSES])
"""Fields a part keeps (with every Content-* field): what BODYSTRUCTURE and ENVELOPE read."""

# -- MIME parameters (rfc2231-parser.c); RFC 822 tokens and addresses are in .rfc822 ---------------


def _rfc2231_parameters(tokens: Tokens) -> list[tuple[bytes, bytes]]:
    """Content-Type/Disposition parameters, RFC 2231 continuations joined (values left encoded)."""
    previous_replacement = tokens.nul_replacement
    tokens.nul_replacement = UNICODE_REPLACEMENT
    plain: list[tuple[bytes, bytes]] = []
    continued: list[tuple[bytes, int, bool, bytes]] = []
    index = 0  # Dovecot keeps the previous index for a bare "name*": copied, odd as it is
    while True:
        ret, key, value = tokens.content_param()
        if ret == 0:
            break
        if ret < 0 or key is None:
            if tokens.pos >= tokens.end:
                break
            tokens.pos += 1
            continue
        star = key.find(b"*")
        if star < 0:
            plain.append((key, value))
            continue
        rest = key[star + 1 :]
        if rest:
            digits = re.match(rb"[0-9]*", rest)
            length = digits.end() if digits else 0
            index = int(rest[:length]) if length else 0
            rest = rest[length:]
            extended = rest[:1] == b"*"
            rest = rest[1:] if extended else rest
        else:
            extended = True  # "name*": Dovecot reads the star itself as the extended marker
        if rest:
            plain.append((key, value))
        else:
            continued.append((key[:star], index, extended, value))
    tokens.nul_replacement = previous_replacement
    return plain + _join_rfc2231(continued)


def _join_rfc2231(continued: list[tuple[bytes, int, bool, bytes]]) -> list[tuple[bytes, bytes]]:
    joined: list[tuple[bytes, bytes]] = []
    continued.sort(key=lambda item: (item[0], item[1]))
    first = 0
    while first < len(continued):
        name = continued[first][0].lower()
        last = first
        while last < len(continued) and continued[last][0].lower() == name:
            last += 1
        group = continued[first:last]
        in_order = all(item[1] == position for position, item in enumerate(group))
        any_extended = any(item[2] for item in group)
        if not in_order:
            for key, index, extended, value in group:
                joined.append((key + b"*%d" % index + (b"*" if extended else b""), value))
        else:
            value = b"''" if any_extended and not group[0][2] else b""
            for _key, _index, extended, part in group:
                value += part.replace(b"%", b"%25") if any_extended and not extended else part
            joined.append((group[0][0] + (b"*" if any_extended else b""), value))
        first = last
    return joined


# -- header fields (message-header-parser.c) -----------------------------------------------------


class HeaderField:
    """One header field: its name, its value as Dovecot unfolds it, and where its lines are.

    Only the name is read up front; the value is worked out from the stored bytes when first asked
    for (most fields of most messages never are).
    """

    __slots__ = ("_data", "_value", "end", "has_colon", "lookup_name", "name", "start", "value_start")

    def __init__(self, data: MessageData, start: int, end: int) -> None:
        self._data = data
        self.start = start
        self.end = end
        """Offsets of the field's first byte and just past its last line's LF (or the data's end)."""
        line_end = data.find(b"\n", start, end)
        first_end = end if line_end < 0 else line_end
        if line_end >= 0 and first_end > start and data[first_end - 1] == 0x0D:
            first_end -= 1
        colon = data.find(b":", start, first_end)
        self.has_colon = colon >= 0
        self.name: bytes = data[start : first_end if colon < 0 else colon]
        """As written before the colon, white space before it removed (the whole line if none)."""
        if colon >= 0:
            self.name = self.name.rstrip(b" \t")
        self.value_start = first_end if colon < 0 else colon + 1
        name = self.name.partition(b"\0")[0] if b"\0" in self.name else self.name
        self.lookup_name = name.upper()
        """The name as C compares it (up to a NUL), upper-cased for case-insensitive matching."""
        self._value: bytes | None = None

    @property
    def value(self) -> bytes:
        """White space after the colon skipped; continuation lines joined with LF, CRs dropped."""
        if self._value is None:
            self._value = self._unfold()
        return self._value

    def _unfold(self) -> bytes:
        lines = self._data[self.value_start : self.end].split(b"\n")
        last = lines.pop()  # b"" after the final LF, else a last line cut off by the end of data
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        if last:
            lines.append(last)
        first = lines[0] if lines and self.has_colon else b""
        lines[:1] = [_skip_value_lwsp(first)]
        return b"\n".join(lines)

    def __repr__(self) -> str:
        return f"HeaderField({self.name!r}, {self.value!r}, {self.start}, {self.end})"


def header_value(data: bytes) -> bytes:
    """A value as Dovecot duplicates it for ENVELOPE and BODYSTRUCTURE strings: NUL becomes U+FFFD."""
    return data.replace(b"\0", UNICODE_REPLACEMENT) if b"\0" in data else data


def _skip_value_lwsp(value: bytes) -> bytes:
    """Dovecot's SKIP_INITIAL_LWSP: all white space after the colon, or one byte if that is all."""
    stripped = value.lstrip(b" \t")
    if stripped or not value:
        return stripped
    return value[1:]


def empty_line_at_or_after(data: MessageData, pos: int, end: int) -> int:
    """Where the first empty line (LF or CRLF alone) at or after line start ``pos`` begins; -1 if none."""
    if pos >= end:
        return -1
    if data[pos] == 0x0A or (data[pos] == 0x0D and data[pos + 1 : pos + 2] == b"\n"):
        return pos
    found = data.find(b"\n\n", pos, end)
    crlf = data.find(b"\n\r\n", pos, found + 1 if found >= 0 else end)
    if crlf >= 0:
        return crlf + 1
    return found + 1 if found >= 0 else -1


def field_end(data: MessageData, start: int, stop: int) -> int:
    """Where the field starting at ``start`` ends: after the last of its continuation lines."""
    while True:
        line_end = data.find(b"\n", start, stop)
        if line_end < 0:
            return stop
        start = line_end + 1
        if start >= stop or data[start] not in _LWSP:
            return start


def field_ranges(
    data: MessageData, pos: int, stop: int, names: frozenset[bytes], content: bool = False
) -> Iterator[tuple[int, int]]:
    """Where the fields in ``pos``..``stop`` named one of ``names`` (upper case; or CONTENT-*
    when ``content``) start and end. One regular expression finds them, so the other fields of a
    long header cost no Python work at all."""
    pattern = _fields_pattern(names, content)
    if pattern is None:
        return
    for found in pattern.finditer(data, pos, stop):
        start = found.start()
        if start >= stop or (start != pos and data[start] in _LWSP):
            continue  # a continuation line is part of the field before it
        yield start, field_end(data, start, stop)


@cache
def _fields_pattern(names: frozenset[bytes], content: bool) -> re.Pattern[bytes] | None:
    """Lines whose field name, as Dovecot compares it, is one of ``names``: the name and then
    white space and the colon, a NUL (a C string ends there), or the end of a line without colon."""
    alternatives = [
        re.escape(name) + rb"(?:[ \t]*:|\x00|\r?\n|\Z)"
        for name in sorted(names)
        if b"\n" not in name and b":" not in name
    ]
    if content:
        alternatives.append(rb"content-")
    if not alternatives:
        return None
    return re.compile(rb"(?mi)^(?:" + b"|".join(alternatives) + rb")")


def fields_named(
    data: MessageData, pos: int, stop: int, names: frozenset[bytes], content: bool = False
) -> Iterator[HeaderField]:
    """:func:`field_ranges` as :class:`HeaderField` objects."""
    for start, end in field_ranges(data, pos, stop, names, content):
        yield HeaderField(data, start, end)


def header_stop(data: MessageData, pos: int, end: int) -> tuple[int, bool]:
    """Where the header from ``pos`` ends if MIME boundaries are ignored (the way Dovecot's header
    filter reads a part's header for HEADER.FIELDS): (the empty line's start or ``end``, whether
    there was an empty line)."""
    blank = empty_line_at_or_after(data, pos, end)
    return (end, False) if blank < 0 else (blank, True)


# -- the part tree --------------------------------------------------------------------------------


@dataclass(slots=True)
class Size:
    """A byte range's size as stored (physical), in CRLF form (virtual), and its LF count."""

    physical: int
    virtual: int
    lines: int


@dataclass(eq=False, slots=True)
class MessagePart:
    """One MIME part: offsets into the message and what its header says.

    ``start``..``header_end`` is the header (the empty line included), ``header_end``..``end`` the
    body. A multipart's children are its parts; a message/rfc822 part has one child, the message.
    """

    start: int
    parent: MessagePart | None = None
    header_end: int = 0
    end: int = 0
    fields: list[HeaderField] = field(default_factory=list)
    children: list[MessagePart] = field(default_factory=list)
    is_mime: bool = False
    is_text: bool = False
    is_multipart: bool = False
    is_digest: bool = False
    is_rfc822: bool = False
    header_cut: bool = False
    """The header ended at a boundary: its last newline belongs to the parent, its body is empty."""
    demoted: bool = False
    """Declared multipart or message/rfc822 but nested too deep (or too many parts) to parse:
    written as application/octet-stream, as Dovecot writes it."""
    depth: int = 0
    """How many parts enclose this one (the message itself is 0)."""


@dataclass(eq=False, slots=True)
class _Boundary:
    part: MessagePart
    text: bytes
    closed: bool = False


def count_bare_lf(data: MessageData, start: int, end: int) -> int:
    """LFs in ``start``..``end`` without a CR before them: each adds one byte in CRLF form."""
    if start >= end:
        return 0
    lines = count(data, b"\n", start, end)
    if not lines:
        return 0
    bare = lines - count(data, b"\r\n", start, end)
    if data[start] == 0x0A and start > 0 and data[start - 1] == 0x0D:
        bare -= 1
    return bare


def count(data: MessageData, needle: bytes, start: int, end: int) -> int:
    """``data.count(needle, start, end)`` for bytes and mmap alike (mmap has no count)."""
    if isinstance(data, bytes):
        return data.count(needle, start, end)
    total, step = 0, 1 << 20
    for chunk_start in range(start, end, step):
        chunk_end = min(end, chunk_start + step + len(needle) - 1)
        total += data[chunk_start:chunk_end].count(needle)
    return total


def range_size(data: MessageData, start: int, end: int) -> Size:
    """The :class:`Size` of ``data[start:end]``."""
    if start >= end:
        return Size(0, 0, 0)
    lines = count(data, b"\n", start, end)
    return Size(end - start, end - start + count_bare_lf(data, start, end), lines)


class _MimeParser:
    """Dovecot's message parser over a whole message in memory (no streaming, same decisions)."""

    def __init__(self, data: MessageData) -> None:
        self.data = data
        self.end = len(data)
        self.boundaries: list[_Boundary] = []
        self.total_parts = 1
        self._next_seen: dict[_Boundary, tuple[int, int]] = {}

    def parse(self) -> MessagePart:
        part = MessagePart(start=0)
        state, pos = self._header(part, 0)
        while True:
            if state == _RFC822 and part.header_cut:
                part = self._append_cut_message(part)
                state = _AFTER_BOUNDARY
                continue
            if state == _RFC822:
                part = self._append(part, pos)
                state, pos = self._header(part, pos)
                continue
            if state == _TO_EOF or not self.boundaries:
                break
            found = self._next_boundary(pos)
            if found is None:
                break
            line_start, boundary, next_line = found
            part = self._close_to(part, boundary.part, line_start)
            self._forget_after(boundary)
            if next_line is None:  # the boundary line runs to the end of the data
                break
            pos = next_line
            if self.boundaries and self.boundaries[-1].part is part:
                part = self._append(part, pos)
                part.is_mime = True
                state, pos = self._header(part, pos)
            else:
                state = _AFTER_BOUNDARY
        root = self._close_to(part, None, self.end)
        return root

    # -- parts --

    def _append(self, parent: MessagePart, pos: int) -> MessagePart:
        child = MessagePart(start=pos, parent=parent, depth=parent.depth + 1)
        parent.children.append(child)
        self.total_parts += 1
        return child

    def _append_cut_message(self, parent: MessagePart) -> MessagePart:
        """The message inside a message/rfc822 part whose header a boundary cut off: it has no
        header and no body, and starts where the parent's header ended, before the newline that
        went to the grandparent (Dovecot places it there; HEADER.FIELDS then reads that newline)."""
        child = self._append(parent, parent.header_end)
        child.header_end = parent.header_end
        child.header_cut = True
        child.is_text = True
        return child

    def _close_to(self, part: MessagePart, stop: MessagePart | None, position: int) -> MessagePart:
        """End ``part`` and its ancestors below ``stop`` at ``position``; the part left open."""
        current = part
        while current is not stop:
            current.end = current.header_end if current.header_cut else position
            if current.parent is None:
                return current
            current = current.parent
        return current

    def _forget_after(self, boundary: _Boundary) -> None:
        """A boundary line closes inner multiparts; ``--b--`` closes its own too."""
        index = next(i for i, known in enumerate(self.boundaries) if known is boundary)
        del self.boundaries[index + (0 if boundary.closed else 1) :]

    # -- boundaries --

    def _boundary_at(self, pos: int) -> _Boundary | None:
        """The open boundary that the line at ``pos`` starts with (``--`` + longest prefix match)."""
        data, end = self.data, self.end
        if end - pos < 2 or data[pos] != 0x2D or data[pos + 1] != 0x2D:
            return None
        if self.total_parts >= MAX_TOTAL_PARTS:
            return None  # Dovecot stops looking for boundaries once a message has this many parts
        text_start = pos + 2
        line_end = data.find(b"\n", text_start, end)
        trailing_dashes = False
        if line_end >= 0:
            size = line_end - text_start
            if size > 0 and data[line_end - 1] == 0x0D:
                size -= 1
            trailing_dashes = size > 2 and data[text_start + size - 2 : text_start + size] == b"--"
        else:
            size = min(end - text_start, _BOUNDARY_LINE_SCAN)
        candidate = data[text_start : text_start + size]
        best: _Boundary | None = None
        for known in reversed(self.boundaries):
            length = len(known.text)
            longer = best is None or len(best.text) < length
            if length <= size and longer and candidate.startswith(known.text):
                best = known
                # "foo--" is boundary "foo" closing, or a boundary "foo--": either is exact
                if length == size or (trailing_dashes and length == size - 2):
                    break
        if best is not None:
            after = text_start + len(best.text)
            best.closed = data[after : after + 2] == b"--"
        return best

    def _candidate_line(self, search: int, stop: int) -> int:
        """The first line start in ``search``..``stop`` (after an LF) that starts with ``--`` and
        an open boundary; -1 if none. Each boundary's next occurrence is remembered, so a boundary
        that appears only at the end is not searched for again after every inner part."""
        nearest = -1
        for boundary in self.boundaries:
            searched_from, found = self._next_seen.get(boundary, (-1, -1))
            if searched_from < 0 or searched_from > search or -1 < found < search - 1:
                found = self.data.find(b"\n--" + boundary.text, search - 1 if search else 0, self.end)
                self._next_seen[boundary] = (search, found)
            if found >= 0 and (nearest < 0 or found < nearest):
                nearest = found
        if nearest < 0 or nearest + 1 >= stop:
            return -1
        return nearest + 1

    def _next_boundary(self, pos: int) -> tuple[int, _Boundary, int | None] | None:
        """The next boundary line from ``pos`` (a line start): (where the body before it ends, the
        boundary, where the line after it starts or None at the end of data)."""
        data, end = self.data, self.end
        if self.total_parts >= MAX_TOTAL_PARTS:
            return None
        found = self._boundary_at(pos)
        line_start = token_start = pos
        search = pos + 1
        while found is None:
            token_start = self._candidate_line(search, end)
            if token_start < 0:
                return None
            found = self._boundary_at(token_start)
            newline = token_start - 1
            line_start = newline - 1 if newline > pos and data[newline - 1] == 0x0D else newline
            search = token_start + 1
        token_end = token_start + 2 + len(found.text) + (2 if found.closed else 0)
        newline = data.find(b"\n", token_end, end)
        return line_start, found, (None if newline < 0 else newline + 1)

    # -- headers --

    def _header(self, part: MessagePart, pos: int) -> tuple[int, int]:
        """Read ``part``'s header from ``pos``, set its flags and ``header_end``: (next state, where
        its body is scanned from)."""
        data, end = self.data, self.end
        blank = empty_line_at_or_after(data, pos, end)
        stop = end if blank < 0 else blank
        cut = self._foreign_boundary_line(part, pos, stop) if self.boundaries else -1
        if cut >= 0:
            stop = cut
        part.fields = list(fields_named(data, pos, stop, _STRUCTURE_FIELDS, content=True))
        seen_content_type, boundary = self._header_flags(part)
        if cut >= 0:
            return self._end_at_boundary(part, cut, seen_content_type, opens_multipart=False)
        if blank < 0:
            part.header_end = end
            return self._finish_header(part, seen_content_type, opens_multipart=False), end
        opens_multipart = False
        if boundary is not None and part.is_mime:
            if part.depth + 1 >= MAX_NESTED_PARTS:
                part.is_multipart = part.is_digest = False
                part.demoted = True
            else:
                self.boundaries.append(_Boundary(part, boundary))
                opens_multipart = True
        body = blank + (2 if data[blank] == 0x0D else 1)
        if self.boundaries and body < end:
            foreign = self._boundary_at(body)
            if foreign is not None and foreign.part is not part:
                return self._end_at_boundary(part, body, seen_content_type, opens_multipart)
        part.header_end = body
        return self._finish_header(part, seen_content_type, opens_multipart), body

    def _foreign_boundary_line(self, part: MessagePart, pos: int, stop: int) -> int:
        """The first line start in ``pos``..``stop`` that is an enclosing multipart's boundary."""
        if self.total_parts >= MAX_TOTAL_PARTS:
            return -1
        found = self._boundary_at(pos) if stop - pos >= 2 else None
        if found is not None and found.part is not part:
            return pos
        search = pos + 1
        while True:
            line = self._candidate_line(search, stop)
            if line < 0:
                return -1
            found = self._boundary_at(line)
            if found is not None and found.part is not part:
                return line
            search = line + 1

    def _end_at_boundary(
        self, part: MessagePart, line: int, seen_content_type: bool, opens_multipart: bool
    ) -> tuple[int, int]:
        """The header ends at a boundary line: the newline before it belongs to the parent's body."""
        newline = 0
        if line > part.start:
            newline = 2 if line - 2 >= part.start and self.data[line - 2] == 0x0D else 1
        part.header_end = line - newline
        part.header_cut = newline > 0
        return self._finish_header(part, seen_content_type, opens_multipart), line

    def _header_flags(self, part: MessagePart) -> tuple[bool, bytes | None]:
        """MIME-Version and the first Content-Type: (Content-Type seen, boundary of a multipart)."""
        seen_content_type = False
        boundary = None
        for found in part.fields:
            name = found.lookup_name
            if len(name) != 12:
                continue
            if name == b"MIME-VERSION":
                part.is_mime = True
            elif name == b"CONTENT-TYPE":
                part.is_mime = True
                if not seen_content_type:
                    seen_content_type = True
                    boundary = self._content_type_flags(part, found.value)
        return seen_content_type, boundary

    def _content_type_flags(self, part: MessagePart, value: bytes) -> bytes | None:
        """Set the type flags from Content-Type; the boundary of a multipart, if any."""
        tokens = Tokens(value)
        tokens.skip_lwsp()
        text = bytearray()
        ret = tokens.content_type(text)
        lowered = bytes(text).lower()
        if lowered == b"message/rfc822":
            part.is_rfc822 = True
        elif lowered[:4] == b"text" and (len(lowered) == 4 or lowered[4:5] == b"/"):
            part.is_text = True
        elif lowered.startswith(b"multipart/"):
            part.is_multipart = True
            part.is_digest = lowered[10:] == b"digest"
        if ret < 0 or not part.is_multipart:
            return None
        for key, parameter in _rfc2231_parameters(tokens):
            if key.lower() == b"boundary":
                return parameter[:BOUNDARY_MAX]
        return None

    def _finish_header(self, part: MessagePart, seen_content_type: bool, opens_multipart: bool) -> int:
        if not part.is_mime:
            part.is_text = part.is_multipart = part.is_digest = part.is_rfc822 = False
        if not seen_content_type or not part.is_mime:
            if part.parent is not None and part.parent.is_digest:
                part.is_rfc822 = True
            else:
                part.is_text = True
        if opens_multipart:
            return _AFTER_BOUNDARY
        if part.is_rfc822:
            if part.depth + 1 < MAX_NESTED_PARTS and self.total_parts < MAX_TOTAL_PARTS:
                return _RFC822
            part.is_rfc822 = False
            part.demoted = True
        return _AFTER_BOUNDARY if self.boundaries else _TO_EOF


_AFTER_BOUNDARY = 1
"""Body continues up to the next boundary line (or end of data)."""
_RFC822 = 2
"""Body is a message of its own: parse its header next."""
_TO_EOF = 3
"""No boundaries are open: the body runs to the end."""


def parse_message(data: MessageData) -> MessagePart:
    """The part tree of ``data``. Never raises: any bytes give some tree, as they do in Dovecot."""
    return _MimeParser(data).parse()


# -- content headers (message-part-data.c) -------------------------------------------------------


@dataclass(slots=True)
class ContentFields:
    """What a part's Content-* fields say, as BODYSTRUCTURE reports it (None: absent)."""

    type: bytes | None = None
    subtype: bytes | None = None
    parameters: list[tuple[bytes, bytes]] = field(default_factory=list)
    id: bytes | None = None
    description: bytes | None = None
    transfer_encoding: bytes | None = None
    md5: bytes | None = None
    disposition: bytes | None = None
    disposition_parameters: list[tuple[bytes, bytes]] | None = None
    language: list[bytes] | None = None
    location: bytes | None = None


def content_fields(part: MessagePart) -> ContentFields:
    """The part's Content-* fields; all absent when the part is not MIME (Dovecot ignores them)."""
    content = ContentFields()
    if not part.is_mime:
        return content
    for found in part.fields:
        name = found.lookup_name
        if name.startswith(b"CONTENT-"):
            _content_field(content, name[8:], found.value)
    return content


def _content_field(content: ContentFields, name: bytes, value: bytes) -> None:
    if name == b"TYPE" and content.type is None:
        _content_type(content, value)
    elif name == b"TRANSFER-ENCODING" and content.transfer_encoding is None:
        content.transfer_encoding = _transfer_encoding(value)
    elif name == b"ID" and content.id is None:
        content.id = header_value(value)
    elif name == b"MD5" and content.md5 is None:
        content.md5 = header_value(value)
    elif name == b"DESCRIPTION" and content.description is None:
        content.description = header_value(value)
    elif name == b"LOCATION" and content.location is None:
        content.location = header_value(value)
    elif name == b"LANGUAGE" and content.language is None:
        content.language = _languages(value)
    elif name == b"DISPOSITION" and not content.disposition_parameters:
        _disposition(content, value)


def _content_type(content: ContentFields, value: bytes) -> None:
    tokens = Tokens(value)
    tokens.skip_lwsp()
    text = bytearray()
    ret = tokens.content_type(text)
    kind, _slash, subtype = bytes(text).partition(b"/")
    content.type, content.subtype = kind, subtype
    if ret >= 0:
        content.parameters = _rfc2231_parameters(tokens)


def _transfer_encoding(value: bytes) -> bytes | None:
    tokens = Tokens(value)
    tokens.skip_lwsp()
    text = bytearray()
    if tokens.mime_token(text) >= 0 and tokens.skip_lwsp() == 0 and text:
        return bytes(text)
    return None


def _disposition(content: ContentFields, value: bytes) -> None:
    tokens = Tokens(value)
    tokens.skip_lwsp()
    text = bytearray()
    if tokens.mime_token(text) < 0:
        return
    content.disposition = bytes(text)
    content.disposition_parameters = _rfc2231_parameters(tokens)


def _languages(value: bytes) -> list[bytes] | None:
    tokens = Tokens(value)
    tokens.skip_lwsp()
    languages: list[bytes] = []
    while True:
        text = bytearray()
        if tokens.atom(text) < 0:
            break
        languages.append(bytes(text))
        if tokens.peek() != 0x2C:
            break
        tokens.pos += 1
        tokens.skip_lwsp()
    return languages or None


# -- ENVELOPE (message-part-data.c, imap-envelope.c) ---------------------------------------------


@dataclass(slots=True)
class Envelope:
    """ENVELOPE's fields: the last Date/Subject/In-Reply-To/Message-ID, all addresses of each kind
    (keyed by the lower-case field name: "from", "sender", "reply-to", "to", "cc", "bcc")."""

    date: bytes | None = None
    subject: bytes | None = None
    in_reply_to: bytes | None = None
    message_id: bytes | None = None
    addresses: dict[str, list[Address]] = field(default_factory=dict)


def envelope_of(fields: Sequence[HeaderField]) -> Envelope:
    """The envelope of a header (Dovecot reads every instance: strings keep the last, addresses add up)."""
    envelope = Envelope()
    for found in fields:
        name = found.lookup_name
        kind = _ENVELOPE_ADDRESSES.get(name)
        if kind is not None:
            envelope.addresses.setdefault(kind, []).extend(parse_addresses(found.value))
        elif name in _ENVELOPE_STRINGS:
            setattr(envelope, _ENVELOPE_STRINGS[name], header_value(found.value))
    return envelope


def render_envelope(envelope: Envelope) -> bytes:
    """The ENVELOPE list's inside (no outer parentheses), as Dovecot writes it: Sender and
    Reply-To default to From; subject and display names cleaned for humans, the rest as they are."""
    addresses = envelope.addresses
    from_list = addresses.get("from")
    return b" ".join(
        [
            response.nstring_nolf(envelope.date),
            response.NIL if envelope.subject is None else response.string_for_humans(envelope.subject),
            _address_list(from_list),
            _address_list(addresses.get("sender") or from_list),
            _address_list(addresses.get("reply-to") or from_list),
            _address_list(addresses.get("to")),
            _address_list(addresses.get("cc")),
            _address_list(addresses.get("bcc")),
            response.nstring_nolf(envelope.in_reply_to),
            response.nstring_nolf(envelope.message_id),
        ]
    )


def _address_list(addresses: list[Address] | None) -> bytes:
    if not addresses:
        return response.NIL
    return b"(" + b"".join(_address(address) for address in addresses) + b")"


def _address(address: Address) -> bytes:
    name = response.NIL if address.name is None else response.string_for_humans(address.name)
    return b"(%s %s %s %s)" % (
        name,
        response.nstring(address.route),
        response.nstring(address.mailbox),
        response.nstring(address.domain),
    )


# -- BODY / BODYSTRUCTURE (imap-bodystructure.c) -------------------------------------------------


def render_bodystructure(data: MessageData, part: MessagePart, extended: bool) -> bytes:
    """``part`` as BODYSTRUCTURE (``extended``) or BODY, without the outer parentheses.

    Type, subtype and parameters keep the case the header gave them. (Dovecot rewrites a plain
    US-ASCII text message to its fixed lower-case form only when it has cached that fact while
    answering other items of the same FETCH; asked for BODYSTRUCTURE alone it writes this.)
    """
    out = bytearray()
    _write_part(data, part, extended, out)
    return bytes(out)


def _write_part(data: MessageData, part: MessagePart, extended: bool, out: bytearray) -> None:
    content = content_fields(part)
    if part.is_multipart:
        _write_multipart(data, part, content, extended, out)
    else:
        _write_leaf(data, part, content, extended, out)


def _write_children(data: MessageData, part: MessagePart, extended: bool, out: bytearray) -> None:
    for child in part.children:
        out += b"("
        _write_part(data, child, extended, out)
        out += b")"


def _write_multipart(
    data: MessageData, part: MessagePart, content: ContentFields, extended: bool, out: bytearray
) -> None:
    if part.children:
        _write_children(data, part, extended, out)
    else:
        out += _EMPTY_BODYSTRUCTURE if extended else _EMPTY_BODY
    out += b" " + response.string(content.subtype or b"")
    if extended:
        out += b" " + _parameters(content.parameters, default_charset=False)
        _write_common_extensions(content, out)


def _write_leaf(
    data: MessageData, part: MessagePart, content: ContentFields, extended: bool, out: bytearray
) -> None:
    if part.is_rfc822:
        out += b'"message" "rfc822"'
        text = False
    elif part.demoted:
        out += b'"application" "octet-stream"'
        text = False
    elif content.type is None:
        out += b'"text" "plain"'
        text = True
    else:
        text = content.type.lower() == b"text"
        out += response.string(content.type) + b" " + response.string(content.subtype or b"")
    body = range_size(data, part.header_end, part.end)
    out += b" " + _parameters(content.parameters, default_charset=text)
    out += b" " + response.nstring_nolf(content.id)
    out += b" " + response.nstring_nolf(content.description)
    encoding = content.transfer_encoding
    out += b" " + (b'"7bit"' if encoding is None else response.string(encoding))
    out += b" %d" % body.virtual
    if text:
        out += b" %d" % body.lines
    elif part.is_rfc822 and part.children:
        child = part.children[0]
        out += b" (" + render_envelope(envelope_of(child.fields)) + b") ("
        _write_part(data, child, extended, out)
        out += b") %d" % body.lines
    if extended:
        out += b" " + response.nstring_nolf(content.md5)
        _write_common_extensions(content, out)


def _parameters(parameters: list[tuple[bytes, bytes]], default_charset: bool) -> bytes:
    if not parameters and not default_charset:
        return response.NIL
    items = [response.string(name) + b" " + response.string(value) for name, value in parameters]
    if default_charset and not any(name.lower() == b"charset" for name, _value in parameters):
        items.append(_DEFAULT_CHARSET)
    return b"(" + b" ".join(items) + b")"


def _write_common_extensions(content: ContentFields, out: bytearray) -> None:
    if content.disposition is None:
        out += b" NIL"
    else:
        parameters = _parameters(content.disposition_parameters or [], default_charset=False)
        out += b" (" + response.string(content.disposition) + b" " + parameters + b")"
    if content.language is None:
        out += b" NIL"
    else:
        out += b" (" + b" ".join(response.string(language) for language in content.language) + b")"
    out += b" " + response.nstring_nolf(content.location)


def walk(part: MessagePart, visit: Callable[[MessagePart], None]) -> None:
    """Call ``visit`` on ``part`` and every part below it, depth first (tests and tools use it)."""
    stack = [part]
    while stack:
        current = stack.pop()
        visit(current)
        stack.extend(reversed(current.children))
