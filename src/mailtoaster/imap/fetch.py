"""FETCH data items rendered from a stored message's bytes (RFC 3501 §6.4.5 and §7.4.2).

A :class:`FetchMessage` parses one message once (:func:`~.bodystructure.parse_message`: offsets, no
copies) and then answers any number of items from it: RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE,
RFC822, RFC822.HEADER, RFC822.TEXT and ``BODY[section]<origin.count>`` in all its forms. Maildir
keeps messages with LF line ends; IMAP serves them in CRLF form, so every size, offset and partial
range counts bytes of the CRLF form, and section bytes are converted chunk by chunk as they are sent
(a 50 MB message is never held twice). NUL bytes, which IMAP literals may not carry, are sent as
0x80, as Dovecot does. Output matches Dovecot 2.3 byte for byte (see ``tests/test_imap_fetch.py``).

The command parser (:mod:`.parser`) builds the items with this module's :class:`Section` and
:class:`BodySection`; the session renders with :meth:`FetchMessage.render` or streams with
:meth:`FetchMessage.render_chunks`, and sets ``\\Seen`` itself when :func:`sets_seen` says the items
ask for it (BODY[...] and RFC822 do, BODY.PEEK and RFC822.HEADER do not).
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from mailtoaster.imap import response
from mailtoaster.imap.bodystructure import (
    MessageData,
    MessagePart,
    count,
    count_bare_lf,
    envelope_of,
    field_ranges,
    header_stop,
    parse_message,
    render_bodystructure,
    render_envelope,
)

CHUNK_SIZE = 256 * 1024
"""Bytes converted to CRLF form at a time when a section is streamed."""
MMAP_THRESHOLD = 1 << 20
"""Files at least this large are mapped instead of read (:func:`open_message`)."""

SIMPLE_ATTRIBUTES = frozenset(
    {"RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822", "RFC822.HEADER", "RFC822.TEXT"}
)
"""Message items named by one word (BODY without brackets is the non-extensible BODYSTRUCTURE)."""
SECTION_KINDS = ("", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")
_PART_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_BODY_ATTRIBUTE = re.compile(r"(BODY(?:\.PEEK)?)\[(.*)\](?:<([0-9]+)\.([0-9]+)>)?", re.S | re.I)
_FIELD_LIST = re.compile(
    r'\(\s*((?:[^\s()"]+|"(?:[^"\\]|\\.)*")(?:\s+(?:[^\s()"]+|"(?:[^"\\]|\\.)*"))*)\s*\)', re.S
)
_FIELD = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s()"]+)', re.S)


class FetchSyntaxError(ValueError):
    """A FETCH attribute or section that is not valid IMAP (the session answers BAD)."""


# -- what can be asked for ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """A body section: part numbers (empty for the whole message), a kind, header field names.

    Kinds: ``""`` (the part's content, or the whole message), ``HEADER``, ``HEADER.FIELDS``,
    ``HEADER.FIELDS.NOT``, ``TEXT`` (for the message or a message/rfc822 part) and ``MIME`` (a
    part's own header; needs part numbers). Field names are kept upper-cased, in request order.
    """

    part: tuple[int, ...] = ()
    kind: str = ""
    fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in SECTION_KINDS:
            raise FetchSyntaxError(f"unknown section kind {self.kind!r}")
        if self.kind == "MIME" and not self.part:
            raise FetchSyntaxError("MIME needs a part number")
        if self.kind.startswith("HEADER.FIELDS") and not self.fields:
            raise FetchSyntaxError(f"{self.kind} needs at least one field name")

    def text(self) -> bytes:
        """The section as the response names it, e.g. ``1.2.HEADER.FIELDS (FROM TO)``."""
        numbers = ".".join(str(number) for number in self.part)
        head = f"{numbers}.{self.kind}" if numbers and self.kind else numbers or self.kind
        if not self.fields:
            return head.encode("ascii")
        names = b" ".join(response.astring(name.encode("utf-8")) for name in self.fields)
        return head.encode("ascii") + b" (" + names + b")"


@dataclass(frozen=True, slots=True)
class BodySection:
    """``BODY[section]<origin.count>`` or ``BODY.PEEK[...]``."""

    section: Section = Section()
    partial: tuple[int, int] | None = None
    peek: bool = False

    def name(self) -> bytes:
        """The item name in the response: always BODY (never BODY.PEEK), with ``<origin>``."""
        origin = b"" if self.partial is None else b"<%d>" % self.partial[0]
        return b"BODY[" + self.section.text() + b"]" + origin


FetchAttribute = str | BodySection
"""A message item: one of :data:`SIMPLE_ATTRIBUTES`, or a :class:`BodySection`."""


def parse_section(text: str) -> Section:
    """The section between the brackets, e.g. ``1.2.HEADER.FIELDS (From "To")`` (case-insensitive)."""
    found = _PART_NUMBER.match(text)
    numbers: tuple[int, ...] = ()
    rest = text
    if found is not None:
        numbers = tuple(int(number) for number in found.group().split("."))
        rest = text[found.end() :]
        if rest and not rest.startswith("."):
            raise FetchSyntaxError(f"invalid section {text!r}")
        rest = rest[1:]
    upper = rest.upper()
    if upper.startswith("HEADER.FIELDS.NOT ") or upper.startswith("HEADER.FIELDS "):
        kind, _space, field_text = rest.partition(" ")
        return Section(numbers, kind.upper(), _field_names(field_text))
    if upper not in SECTION_KINDS or upper.startswith("HEADER.FIELDS"):
        raise FetchSyntaxError(f"invalid section {text!r}")
    if upper == "" and found is not None and text.endswith("."):
        raise FetchSyntaxError(f"invalid section {text!r}")
    return Section(numbers, upper)


def _field_names(text: str) -> tuple[str, ...]:
    found = _FIELD_LIST.fullmatch(text.strip())
    if found is None:
        raise FetchSyntaxError(f"invalid header field list {text!r}")
    names = []
    for quoted_name, atom_name in _FIELD.findall(found.group(1)):
        name = re.sub(r"\\(.)", r"\1", quoted_name) if quoted_name else atom_name
        names.append(name.upper())
    return tuple(names)


def parse_attribute(text: str) -> FetchAttribute:
    """One message item as a client writes it: ``RFC822.SIZE``, ``BODY.PEEK[1.MIME]<0.100>``...

    Session items (FLAGS, UID, INTERNALDATE, macros) are not message items: FetchSyntaxError.
    """
    upper = text.upper()
    if upper in SIMPLE_ATTRIBUTES:
        return upper
    found = _BODY_ATTRIBUTE.fullmatch(text)
    if found is None:
        raise FetchSyntaxError(f"unknown FETCH attribute {text!r}")
    partial = None
    if found.group(3) is not None:
        partial = (int(found.group(3)), int(found.group(4)))
    peek = found.group(1).upper() == "BODY.PEEK"
    return BodySection(parse_section(found.group(2)), partial, peek)


def sets_seen(attributes: Iterable[FetchAttribute]) -> bool:
    """Whether fetching ``attributes`` sets ``\\Seen`` (RFC 3501: BODY[...], RFC822, RFC822.TEXT)."""
    for attribute in attributes:
        if isinstance(attribute, BodySection):
            if not attribute.peek:
                return True
        elif attribute in ("RFC822", "RFC822.TEXT"):
            return True
    return False


# -- section content ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Raw:
    """Stored bytes ``start``..``end``, sent in CRLF form."""

    start: int
    end: int


Piece = _Raw | bytes
"""A run of section content: stored bytes to convert, or bytes already in wire form."""


def to_crlf(chunk: bytes) -> bytes:
    """Every LF without a CR before it becomes CRLF (a lone CR stays); NUL becomes 0x80. A chunk without
    any CR (mail stored with LF, the usual case) takes one pass, not four."""
    if b"\r" not in chunk:
        chunk = chunk.replace(b"\n", b"\r\n")
    elif b"\n" in chunk and chunk.count(b"\n") != chunk.count(b"\r\n"):
        chunk = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if b"\0" in chunk:
        chunk = chunk.replace(b"\0", b"\x80")
    return chunk


def _raw_size(data: MessageData, piece: _Raw) -> int:
    """Bytes of ``piece`` in CRLF form (a leading LF counts as bare: sections start at line starts)."""
    if piece.end <= piece.start:
        return 0
    bare = count(data, b"\n", piece.start, piece.end)
    if data.find(b"\r", piece.start, piece.end) >= 0:  # no CR (stored with LF): every LF is bare
        bare -= count(data, b"\r\n", piece.start, piece.end)
    return piece.end - piece.start + bare


def _chunk_ranges(data: MessageData, piece: _Raw, chunk_size: int) -> Iterator[tuple[int, int]]:
    """``piece`` cut into ranges of about ``chunk_size`` that never split a CR from the LF after it
    (so each range converts to CRLF form on its own)."""
    position = piece.start
    while position < piece.end:
        stop = min(piece.end, position + chunk_size)
        while stop < piece.end and data[stop - 1] == 0x0D:
            stop += 1
        yield position, stop
        position = stop


@dataclass(slots=True)
class SectionContent:
    """A section's bytes in wire form, kept as pieces until sent; ``size`` counts the CRLF form."""

    data: MessageData
    pieces: list[Piece]
    size: int

    def chunks(
        self, origin: int = 0, count: int | None = None, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        """The bytes ``origin``..``origin + count`` of the wire form, in chunks."""
        stop = self.size if count is None else min(self.size, origin + count)
        position = 0
        for piece in self.pieces:
            if position >= stop:
                return
            if isinstance(piece, bytes):
                yield from _window(piece, position, origin, stop)
                position += len(piece)
                continue
            for start, end in _chunk_ranges(self.data, piece, chunk_size):
                if origin:
                    before_window = position + _raw_size(self.data, _Raw(start, end))
                    if before_window <= origin:  # counted, not converted
                        position = before_window
                        continue
                chunk = to_crlf(self.data[start:end])
                yield from _window(chunk, position, origin, stop)
                position += len(chunk)
                if position >= stop:
                    return

    def read(self, origin: int = 0, count: int | None = None) -> bytes:
        """:meth:`chunks` joined (for small sections and tests)."""
        return b"".join(self.chunks(origin, count))


def _append_range(pieces: list[Piece], start: int, end: int) -> None:
    """Add stored bytes ``start``..``end``, joined to the previous range when they touch (a header
    of a million matching lines is then one range, converted in chunks)."""
    last = pieces[-1] if pieces else None
    if isinstance(last, _Raw) and last.end == start:
        pieces[-1] = _Raw(last.start, end)
    else:
        pieces.append(_Raw(start, end))


def _window(chunk: bytes, position: int, origin: int, stop: int) -> Iterator[bytes]:
    """The part of ``chunk`` (found at ``position``) inside ``origin``..``stop``."""
    first = max(0, origin - position)
    last = min(len(chunk), stop - position)
    if last > first:
        yield chunk[first:last] if (first, last) != (0, len(chunk)) else chunk


# -- the message ----------------------------------------------------------------------------------


class FetchMessage:
    """One message, parsed once, answering FETCH items. ``data`` is the stored message (LF or CRLF)."""

    def __init__(self, data: MessageData, owned_map: mmap.mmap | None = None) -> None:
        self.data = data
        self._root: MessagePart | None = None
        self._owned_map = owned_map
        self._cache: dict[str, bytes] = {}

    @property
    def root(self) -> MessagePart:
        """The part tree, parsed on first use (``BODY[]``, ``RFC822`` and RFC822.SIZE do without)."""
        if self._root is None:
            self._root = parse_message(self.data)
        return self._root

    # -- lifetime --

    def close(self) -> None:
        """Release the file mapping, if :func:`open_message` made one."""
        if self._owned_map is not None:
            self._owned_map.close()
            self._owned_map = None

    def __enter__(self) -> FetchMessage:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # -- whole-message items --

    @property
    def size(self) -> int:
        """RFC822.SIZE: the message's size in CRLF form."""
        return len(self.data) + count_bare_lf(self.data, 0, len(self.data))

    def envelope(self) -> bytes:
        """ENVELOPE's value, parenthesised."""
        return self._cached("ENVELOPE", lambda: b"(" + render_envelope(envelope_of(self.root.fields)) + b")")

    def bodystructure(self, extended: bool = True) -> bytes:
        """BODYSTRUCTURE's value (``extended``) or BODY's, parenthesised."""
        key = "BODYSTRUCTURE" if extended else "BODY"
        return self._cached(key, lambda: b"(" + render_bodystructure(self.data, self.root, extended) + b")")

    def _cached(self, key: str, make: Callable[[], bytes]) -> bytes:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # -- sections --

    def find_part(self, numbers: Sequence[int]) -> MessagePart | None:
        """The part a section number names (Dovecot's rules: ``1`` of a single-part message is the
        message itself, numbers after a message/rfc822 part go inside it, ``0`` means the first)."""
        part: MessagePart | None = self.root
        for index, number in enumerate(numbers):
            if part is None:
                return None
            more = index + 1 < len(numbers)
            if part.is_multipart:
                position = max(number, 1) - 1
                part = part.children[position] if position < len(part.children) else None
            elif number != 1 or (more and not part.is_rfc822):
                part = None
            if part is not None and part.is_rfc822 and more:
                part = part.children[0] if part.children else None
        return part

    def section(self, section: Section) -> SectionContent:
        """The content of ``section`` (empty when the part does not exist, as in Dovecot)."""
        pieces = self._pieces(section)
        size = sum(
            len(piece) if isinstance(piece, bytes) else _raw_size(self.data, piece) for piece in pieces
        )
        return SectionContent(self.data, pieces, size)

    def _pieces(self, section: Section) -> list[Piece]:
        if not section.part and section.kind == "":
            return [_Raw(0, len(self.data))]  # the whole message: the root part spans all the data
        part = self.root if not section.part else self.find_part(section.part)
        if part is None:
            return []
        kind = section.kind
        if section.part and kind in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"):
            if not part.is_rfc822 or not part.children:
                return []
            part = part.children[0]
        if kind == "":  # the whole message, or a part's content
            return [_Raw(part.header_end if section.part else 0, part.end)]
        if kind in ("HEADER", "MIME"):
            return [_Raw(part.start, part.header_end)]
        if kind == "TEXT":
            return [_Raw(part.header_end, part.end)]
        return self._header_fields(part, section, is_root=not section.part)

    def _header_fields(self, part: MessagePart, section: Section, is_root: bool) -> list[Piece]:
        """HEADER.FIELDS[.NOT]: the header read from the part's start to its empty line (boundaries
        do not stop it, as in Dovecot's header filter), matching fields kept or dropped, in CRLF
        form, then the empty line if the header had one (RFC 3501: a message without a body and
        without an empty line gets none). The message's own HEADER.FIELDS ends a last kept line cut
        off by the end of data, as Dovecot's header cache does; elsewhere it stays so. The kept
        fields stay ranges of the stored bytes, streamed like any section."""
        data = self.data
        stop, saw_empty_line = header_stop(data, part.start, len(data))
        wanted = frozenset(name.encode("utf-8").upper() for name in section.fields)
        matched = field_ranges(data, part.start, stop, wanted)
        pieces: list[Piece] = []
        if section.kind == "HEADER.FIELDS":
            for start, end in matched:
                _append_range(pieces, start, end)
            last = pieces[-1] if pieces else None
            if is_root and isinstance(last, _Raw) and data[last.end - 1] != 0x0A:
                pieces.append(b"\r\n")
        else:
            position = part.start
            for start, end in matched:
                if start > position:
                    pieces.append(_Raw(position, start))
                position = end
            if position < stop:
                pieces.append(_Raw(position, stop))
        if saw_empty_line:
            pieces.append(b"\r\n")
        return pieces

    # -- rendering --

    def render(self, attribute: FetchAttribute) -> bytes:
        """``NAME value`` for one item, e.g. ``RFC822.SIZE 1234`` or ``BODY[1] {5}\\r\\nhello``."""
        return b"".join(self.render_chunks(attribute))

    def render_chunks(self, attribute: FetchAttribute, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """:meth:`render` in chunks, so a large literal is streamed rather than built."""
        if isinstance(attribute, BodySection):
            content = self.section(attribute.section)
            origin, count = attribute.partial or (0, None)
            yield from _literal_chunks(attribute.name(), content, origin, count, chunk_size)
            return
        if attribute == "RFC822.SIZE":
            yield b"RFC822.SIZE %d" % self.size
        elif attribute == "ENVELOPE":
            yield b"ENVELOPE " + self.envelope()
        elif attribute in ("BODY", "BODYSTRUCTURE"):
            yield attribute.encode("ascii") + b" " + self.bodystructure(attribute == "BODYSTRUCTURE")
        elif attribute in _RFC822_SECTIONS:
            content = self.section(_RFC822_SECTIONS[attribute])
            yield from _literal_chunks(attribute.encode("ascii"), content, 0, None, chunk_size)
        else:
            raise FetchSyntaxError(f"not a message FETCH attribute: {attribute!r}")

    def render_all(self, attributes: Iterable[FetchAttribute]) -> bytes:
        """The items joined by spaces: what goes inside ``* n FETCH (...)`` after UID and FLAGS."""
        return b" ".join(self.render(attribute) for attribute in attributes)

    def answer(self, attributes: Sequence[FetchAttribute]) -> FetchAnswer:
        """:meth:`render_all` and whether the session must now set ``\\Seen`` (:func:`sets_seen`)."""
        return FetchAnswer(self.render_all(attributes), sets_seen(attributes))


@dataclass(frozen=True, slots=True)
class FetchAnswer:
    """One message's FETCH items in wire form, and whether fetching them sets ``\\Seen`` (the
    session sets the flag and, as Dovecot does, adds FLAGS to the response when it changed)."""

    items: bytes
    sets_seen: bool


_RFC822_SECTIONS = {
    "RFC822": Section(),
    "RFC822.HEADER": Section(kind="HEADER"),
    "RFC822.TEXT": Section(kind="TEXT"),
}


def _literal_chunks(
    name: bytes, content: SectionContent, origin: int, count: int | None, chunk_size: int
) -> Iterator[bytes]:
    length = max(0, min(content.size, origin + count if count is not None else content.size) - origin)
    yield name + b" {%d}\r\n" % length
    if length:
        yield from content.chunks(origin, count, chunk_size)


def open_message(path: str | os.PathLike[str]) -> FetchMessage:
    """A :class:`FetchMessage` for a stored file: read into memory, or mapped when large (call
    :meth:`FetchMessage.close`, or use it as a context manager, to release the mapping)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return message_from_descriptor(descriptor)
    finally:
        os.close(descriptor)


def message_from_descriptor(descriptor: int) -> FetchMessage:
    """:func:`open_message` for a file already open (the caller closes the descriptor; a mapping outlives
    it). Four system calls for a small file with the open and close: FETCH reads a thousand in a row."""
    size = os.fstat(descriptor).st_size
    if size < MMAP_THRESHOLD:
        return FetchMessage(_read_whole(descriptor, size))
    mapped = mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)
    return FetchMessage(mapped, owned_map=mapped)


def _read_whole(descriptor: int, size: int) -> bytes:
    """The whole file, in one ``read`` when it is ``size`` octets (asking for one more proves the end)."""
    data = os.read(descriptor, size + 1)
    if len(data) == size:
        return data
    chunks = [data]
    while chunk := os.read(descriptor, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)
