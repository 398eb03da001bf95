"""A message parsed once, for every check to read.

Header fields keep their raw bytes (folding, spacing and line endings untouched) because signature
canonicalisation needs them; the unfolded, decoded value is derived on demand. Nothing here
interprets MIME: the body is kept as the octets after the blank line.

The body is held one of two ways. :meth:`Message.parse` keeps it in memory and returns an
:class:`InMemoryMessage`, whose ``body`` is bytes. :meth:`Message.from_file` keeps a small body in
memory the same way, and leaves a large one where it is: a :class:`FileBody` that reads the file again
in chunks each time it is iterated. Code that hashes a body takes ``message.body_source`` (either
kind); only an :class:`InMemoryMessage` has ``body``, so reading a 50 MB spool file into memory by
accident is a type error, not a surprise in production.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, Self, TypeVar

_FIELD_PATTERN = rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:[^\n]*+(?:\n[ \t][^\n]*+)*+(?:\n|\Z)"
_FIELD = re.compile(rb"(" + _FIELD_PATTERN + rb")")
"""One whole field (group 1): name (group 2), colon, value and its continuation lines (which start
with a space or tab). Possessive, so a failed match never backtracks."""
_FIELDS = re.compile(rb"(?:" + _FIELD_PATTERN.replace(b"(", b"(?:", 1) + rb")*+")
"""The run of whole fields at the start of a message: where the header section ends, in one match."""

MAX_HEADER_SECTION = 1 << 20
""":meth:`Message.from_file` reads at most this many octets looking for the end of the header section."""
DEFAULT_IN_MEMORY_LIMIT = 1 << 20
"""Bodies up to this size are read into memory by :meth:`Message.from_file`; larger ones stay on disk."""
CHUNK_SIZE = 1 << 16


class Header(NamedTuple):
    """One header field. A named tuple rather than a dataclass: a message makes one per field, and
    verification parses every message, so construction cost shows (about half a dataclass's)."""

    name: str
    """The field name as written (compare with :meth:`is_named`)."""
    raw: bytes
    """The whole field: name, colon, value and every folded line, with the line endings as received."""
    lower_name: str
    """The name in lower case: signature checks compare names many times."""

    @classmethod
    def of(cls, name: str, raw: bytes) -> Header:
        return cls(name, raw, name.lower())

    def is_named(self, name: str) -> bool:
        return self.lower_name == name.lower()

    @property
    def raw_value(self) -> bytes:
        return self.raw.split(b":", 1)[1]

    @property
    def value(self) -> str:
        """Unfolded value without leading/trailing white space; non-UTF-8 octets survive as U+FFFD."""
        unfolded = re.sub(rb"\r?\n(?=[ \t])", b"", self.raw_value).strip()
        return unfolded.decode("utf-8", errors="replace")


class MessageFileError(OSError):
    """A message file changed under us: its body ended before the size recorded when it was parsed."""


@dataclass(frozen=True, eq=False)
class FileBody:
    """A body left on disk: ``size`` octets of ``path`` from ``offset``.

    It holds no data: every :meth:`chunks` call opens the file and reads it again, so a pass holds one
    chunk at a time and another pass (another signature) costs a re-read from the page cache, not
    memory. Equality is identity: the DKIM engine memoises body digests per object, and must never
    take one parsed message's digest for another's, even one at the same path.
    """

    path: Path
    offset: int
    size: int

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The body in order, in pieces of at most ``chunk_size`` octets (none for an empty body)."""
        remaining = self.size
        with self.path.open("rb") as file:
            file.seek(self.offset)
            while remaining > 0:
                chunk = file.read(min(chunk_size, remaining))
                if not chunk:
                    raise MessageFileError(f"{self.path}: the body ended {remaining} octets early")
                remaining -= len(chunk)
                yield chunk


T = TypeVar("T")

Body = bytes | FileBody
"""A body in memory, or where it is on disk."""


async def body_work(body: Body, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``: inline for a body in memory (microseconds), in a worker thread for one on
    disk, whose hashing reads the file and may take a good part of a second — the event loop must not
    wait for it (other connections would)."""
    if isinstance(body, FileBody):
        return await asyncio.to_thread(function, *args)
    return function(*args)


def body_chunks(body: Body, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Either kind of body, in pieces of at most ``chunk_size`` octets."""
    if isinstance(body, FileBody):
        yield from body.chunks(chunk_size)
        return
    for start in range(0, len(body), chunk_size):
        yield body[start : start + chunk_size]


class _Split(NamedTuple):
    """Where a message's header section ends: its fields, the body's first octet, what was odd."""

    headers: tuple[Header, ...]
    header_end: int
    """Where the run of fields ends (the blank line, or the line that is not a field)."""
    body_start: int
    defects: tuple[str, ...]


@dataclass(frozen=True)
class Message:
    """Header fields and a body of either kind: what every check reads.

    Has no ``body`` attribute on purpose (see the module docstring): hash ``body_source`` through
    :func:`body_chunks` or the canonicalisation functions, which keep in-memory bodies on their fast
    path and stream file-backed ones.
    """

    headers: tuple[Header, ...]
    body_source: Body
    defects: tuple[str, ...] = field(default=())

    @staticmethod
    def parse(raw: bytes) -> InMemoryMessage:
        """Split ``raw`` into header fields and body. Never raises: oddities are listed in ``defects``.

        A line that is neither a field nor a continuation ends the header section (it is kept as the
        first line of the body), as most MTAs do.
        """
        headers, _, body_start, defects = _split(raw)
        return InMemoryMessage(headers, raw[body_start:], defects)

    @staticmethod
    def from_file(
        path: Path,
        *,
        in_memory_limit: int = DEFAULT_IN_MEMORY_LIMIT,
        header_limit: int = MAX_HEADER_SECTION,
    ) -> Message:
        """The message in ``path``, as :meth:`parse` would see the file's contents, read with bounded memory.

        At most ``header_limit`` octets are read to find the header section; a section that has not
        ended by then is cut there (a defect says so, and the rest is the body), as :meth:`parse` cuts
        at a line that is not a field. A body of at most ``in_memory_limit`` octets is read into an
        :class:`InMemoryMessage`; a larger one becomes a :class:`FileBody`, so the result is typed
        :class:`Message`: narrow it with ``isinstance`` before reading ``.body``. Garbage never
        raises; a file that cannot be opened raises ``OSError``.
        """
        with path.open("rb") as file:
            prefix = file.read(header_limit + 1)
            if len(prefix) <= header_limit:
                split, size = _split(prefix), len(prefix)
            else:
                split, size = _split_bounded(prefix[:header_limit]), os.fstat(file.fileno()).st_size
            body_size = max(0, size - split.body_start)
            if body_size > in_memory_limit:
                return Message(split.headers, FileBody(path, split.body_start, body_size), split.defects)
            if split.body_start + body_size <= len(prefix):
                body = prefix[split.body_start : split.body_start + body_size]
            else:
                file.seek(split.body_start)
                body = file.read(body_size)
        return InMemoryMessage(split.headers, body, split.defects)

    @property
    def body_size(self) -> int:
        source = self.body_source
        return source.size if isinstance(source, FileBody) else len(source)

    def body_chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The body in pieces of at most ``chunk_size`` octets, from memory or from the file."""
        return body_chunks(self.body_source, chunk_size)

    def with_fields_on_top(self, raw_fields: bytes) -> Self:
        """This message with the header fields in ``raw_fields`` (each ending in a line break) added
        above the others: what a signer that puts its field on top hands to the next signer."""
        return replace(self, headers=_fields(raw_fields, len(raw_fields)) + self.headers)

    def get_all(self, name: str) -> list[Header]:
        return [h for h in self.headers if h.is_named(name)]

    def get(self, name: str) -> Header | None:
        """The first (topmost) field of that name, or None."""
        found = self.get_all(name)
        return found[0] if found else None


@dataclass(frozen=True)
class InMemoryMessage(Message):
    """A message whose body is bytes in memory: what :meth:`Message.parse` returns."""

    body_source: bytes

    @property
    def body(self) -> bytes:
        return self.body_source


def _fields(data: bytes, end: int) -> tuple[Header, ...]:
    return tuple(
        Header(name.decode("ascii"), whole, name.lower().decode("ascii"))
        for whole, name in _FIELD.findall(data, 0, end)
    )


def _split(raw: bytes) -> _Split:
    """Where the header section of ``raw`` ends, as :meth:`Message.parse` reads it."""
    header_section = _FIELDS.match(raw)
    position = header_section.end() if header_section else 0
    headers = _fields(raw, position)
    defects: tuple[str, ...] = ()
    if raw.startswith(b"\r\n", position):
        body_start = position + 2
    elif raw.startswith(b"\n", position) or position == len(raw):
        body_start = min(position + 1, len(raw))
    else:
        line_end = raw.find(b"\n", position)
        line = raw[position : line_end + 1 if line_end >= 0 else len(raw)]
        defects = (f"header section ended by a line that is not a field: {line[:40]!r}",)
        body_start = position
    return _Split(headers, position, body_start, defects)


def _split_bounded(prefix: bytes) -> _Split:
    """:func:`_split` of a file's first octets when the file goes on past them.

    Only whole lines are looked at. If the header section ends among them, the split is exactly what
    :func:`_split` gives for the whole file (a field's end and the line after it are decided by
    octets already read). Otherwise the section is cut: the fields before the last whole one are the
    header, and the body starts at that last field (it may have continuation lines not yet read).
    """
    whole_lines = prefix[: prefix.rfind(b"\n") + 1]
    split = _split(whole_lines)
    if split.header_end < len(whole_lines):
        return split
    starts = [match.start() for match in _FIELD.finditer(whole_lines)]
    cut = starts[-1] if starts else 0
    defect = f"header section longer than {len(prefix)} octets: the rest is taken as the body"
    return _Split(_fields(whole_lines, cut), cut, cut, (defect,))
