"""Reading one whole IMAP command off the wire: its lines and the literals between them, within limits.

An IMAP command is one line, unless it ends in a literal announcement: ``{n}`` (synchronizing: the
server answers ``+ ...`` before the client sends the n octets) or ``{n+}`` (LITERAL+, RFC 7888: the
octets follow at once). After the literal the command line goes on, and may announce another one.
:func:`read_command` collects all of it into a :class:`RawCommand` that :mod:`.parser` turns into a
typed command.

Memory stays bounded whatever the client claims (:class:`ReadLimits`; defaults in brackets):

* A line (one segment between literals, CRLF excluded) is at most ``max_line`` octets [64 KiB]. A longer
  one is read and thrown away up to its CRLF, in pieces, and the command is refused ``BAD``. If the
  thrown-away line announced a literal, that literal is handled as an over-big one (below), so the
  connection stays in step with the client.
* A literal in any command but APPEND is at most ``max_literal`` octets [64 KiB]; the lines and literals
  held in memory for one command at most ``max_command`` [256 KiB].
* In APPEND, one literal (the message) may be larger, up to ``append_limit`` [50 MiB, the APPENDLIMIT to
  advertise, RFC 7889]. Given ``open_spool``, it is streamed in ``chunk_size`` pieces into the file that
  ``open_spool(size)`` returns and handed over as a :class:`SpooledLiteral`; without it, it is held in
  memory. The caller owns the file of a command that was read (:meth:`RawCommand.close`); the reader
  closes it when the command is refused.
* An over-big *synchronizing* literal is refused at once: no ``+`` goes out, so the client sends nothing
  more for the command, and the answer is ``NO [TOOBIG]`` for APPEND, ``BAD [TOOBIG]`` otherwise.
* An over-big *non-synchronizing* literal is already on its way. RFC 7888 §4 lets the server either read
  it or close the connection; the reader reads and discards it (in pieces, never held) and then the rest
  of the command, and refuses the command as above, as long as everything discarded for the command
  stays within ``max_discard`` [100 MiB]. Beyond that, reading would let a client keep us busy for as
  long as it likes, so :class:`MustDisconnect` says to send ``* BYE [TOOBIG]`` and close.
* End of input anywhere raises :class:`ClientGone`, the caller's cue to close quietly.

The stream's own buffer limit (``asyncio.StreamReader(limit=...)``, 64 KiB by default) caps a line as
well: the effective line limit is the smaller of the two.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Protocol

CRLF = b"\r\n"
_LITERAL_MARKER = re.compile(rb"\{([0-9]+)(\+?)\}\Z")
_MAX_MARKER_DIGITS = 20
_TOO_BIG_TO_COUNT = 1 << 64
"""The size we take for a literal announced with more digits than any real size has."""
TAG = re.compile(rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+")
"""A tag: ASTRING-CHARs except ``+`` (RFC 3501 §9)."""
_APPEND = re.compile(rb"[^ ]+ APPEND ", re.IGNORECASE)
_CANNOT_STORE = "Cannot store the message now"
_TAIL_KEPT = 32
"""Octets kept from the end of a line that is thrown away: enough to see a literal announcement."""


@dataclass(frozen=True)
class ReadLimits:
    """How much of a command the server is willing to read (see the module docstring)."""

    max_line: int = 64 * 1024
    max_literal: int = 64 * 1024
    max_command: int = 256 * 1024
    append_limit: int = 50 * 1024 * 1024
    max_discard: int = 100 * 1024 * 1024
    chunk_size: int = 64 * 1024


DEFAULT_LIMITS = ReadLimits()


class LineStream(Protocol):
    """What the reader needs from the connection; :class:`asyncio.StreamReader` has it."""

    async def readuntil(self, separator: bytes = b"\n", /) -> bytes: ...

    async def readexactly(self, n: int, /) -> bytes: ...


@dataclass(frozen=True)
class SpooledLiteral:
    """An APPEND literal streamed into a file from ``open_spool``: ``size`` octets written from where
    the file stood when it was handed over (seek back before reading it)."""

    size: int
    file: IO[bytes]


Literal = bytes | SpooledLiteral


@dataclass(frozen=True)
class RawCommand:
    """One command as read: ``lines`` without their CRLF, and the ``literals`` between them.

    Every line but the last ends with the announcement (``{n}`` or ``{n+}``) of the literal that follows
    it, so ``len(lines) == len(literals) + 1``.
    """

    lines: tuple[bytes, ...]
    literals: tuple[Literal, ...] = ()

    @property
    def tag(self) -> str | None:
        """The tag, when the first line starts with a valid one (for error answers)."""
        return tag_of(self.lines[0])

    def close(self) -> None:
        """Close the files of spooled literals (once the command has been carried out or refused)."""
        for literal in self.literals:
            if isinstance(literal, SpooledLiteral):
                literal.file.close()

    @classmethod
    def from_bytes(cls, data: bytes) -> RawCommand:
        """The command ``data`` holds as a client would send it (lines with CRLF, literals inline,
        ending with CRLF); for tests and tools. Raises ValueError when it is not one whole command."""
        lines: list[bytes] = []
        literals: list[Literal] = []
        position = 0
        while True:
            end = data.find(CRLF, position)
            if end < 0:
                raise ValueError("a command line must end with CRLF")
            line = data[position:end]
            lines.append(line)
            position = end + 2
            marker = literal_marker(line)
            if marker is None:
                break
            size = marker[0]
            if position + size > len(data):
                raise ValueError(f"a literal of {size} octets is cut short")
            literals.append(data[position : position + size])
            position += size
        if position != len(data):
            raise ValueError("data goes on after the end of the command")
        return cls(tuple(lines), tuple(literals))


class ReadError(Exception):
    """Base of what :func:`read_command` raises instead of returning a command."""


class ClientGone(ReadError):
    """The input ended. ``mid_command`` tells a client vanishing in the middle of a command from one
    that simply closed between commands; either way there is nobody to answer."""

    def __init__(self, mid_command: bool) -> None:
        super().__init__("client closed the connection" + (" in mid-command" if mid_command else ""))
        self.mid_command = mid_command


class CommandRejected(ReadError):
    """The command was not accepted; everything the client sent for it has been consumed, so the
    connection can go on once :attr:`response` is sent."""

    def __init__(self, tag: str | None, status: str, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.tag = tag
        self.status = status
        self.code = code
        self.text = text

    @property
    def response(self) -> bytes:
        """The line to send: ``<tag> BAD|NO [CODE] text`` (``*`` when no tag could be read)."""
        code = f"[{self.code}] " if self.code else ""
        return f"{self.tag or '*'} {self.status} {code}{self.text}\r\n".encode()


class MustDisconnect(ReadError):
    """The client sent (or announced) more than may be read; send :attr:`response` and close."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    @property
    def response(self) -> bytes:
        return f"* BYE [TOOBIG] {self.text}\r\n".encode()


def tag_of(line: bytes) -> str | None:
    """The tag a command line starts with, if it is a valid one."""
    found = TAG.match(line)
    if found is None or line[found.end() : found.end() + 1] not in (b" ", b""):
        return None
    return found.group(0).decode("ascii")


def literal_marker(line: bytes) -> tuple[int, bool] | None:
    """``(size, synchronizing)`` when ``line`` ends by announcing a literal, else None. A size with
    absurdly many digits comes back as a number larger than any limit."""
    found = _LITERAL_MARKER.search(line)
    if found is None:
        return None
    digits = found.group(1)
    size = int(digits) if len(digits) <= _MAX_MARKER_DIGITS else _TOO_BIG_TO_COUNT
    return size, found.group(2) != b"+"


async def read_command(
    stream: LineStream,
    send_continuation: Callable[[], Awaitable[None]],
    limits: ReadLimits = DEFAULT_LIMITS,
    open_spool: Callable[[int], IO[bytes]] | None = None,
) -> RawCommand:
    """Read the next command from ``stream``, literals included.

    ``send_continuation`` is awaited before each synchronizing literal is read (it should send
    ``+ Ready for literal data\\r\\n`` and drain). Raises :class:`CommandRejected` (answer and go on),
    :class:`MustDisconnect` (answer and close) or :class:`ClientGone` (close).
    """
    return await _CommandReader(stream, send_continuation, limits, open_spool).read()


async def read_line(stream: LineStream, limits: ReadLimits = DEFAULT_LIMITS) -> bytes:
    """One line without its CRLF and without literal handling: an AUTHENTICATE response, IDLE's
    ``DONE``. A line over the limit is discarded and raises :class:`CommandRejected` (untagged BAD)."""

    async def no_continuation() -> None:
        raise AssertionError("read_line never reads literals")

    reader = _CommandReader(stream, no_continuation, limits, None)
    try:
        return await reader._line(first=True)
    except _LineTooLong:
        raise CommandRejected(None, "BAD", "Line too long") from None


class _LineTooLong(Exception):
    def __init__(self, head: bytes, tail: bytes) -> None:
        super().__init__("line too long")
        self.head = head
        self.tail = tail


class _CommandReader:
    """The state of reading one command."""

    def __init__(
        self,
        stream: LineStream,
        send_continuation: Callable[[], Awaitable[None]],
        limits: ReadLimits,
        open_spool: Callable[[int], IO[bytes]] | None,
    ) -> None:
        self._stream = stream
        self._send_continuation = send_continuation
        self._limits = limits
        self._open_spool = open_spool
        self._lines: list[bytes] = []
        self._literals: list[Literal] = []
        self._held = 0
        """Octets of this command held in memory (lines and in-memory literals)."""
        self._discarded = 0
        self._tag: str | None = None
        self._is_append = False

    async def read(self) -> RawCommand:
        try:
            return await self._read_all()
        except BaseException:
            for literal in self._literals:
                if isinstance(literal, SpooledLiteral):
                    literal.file.close()
            raise

    async def _read_all(self) -> RawCommand:
        while True:
            line = await self._next_line()
            self._lines.append(line)
            marker = literal_marker(line)
            if marker is None:
                return RawCommand(tuple(self._lines), tuple(self._literals))
            self._literals.append(await self._read_literal(*marker))

    async def _next_line(self) -> bytes:
        first = not self._lines
        try:
            line = await self._line(first)
        except _LineTooLong as too_long:
            if first:
                self._tag = tag_of(too_long.head)
            await self._skip_rest(literal_marker(too_long.tail))
            raise CommandRejected(self._tag, "BAD", "Command line too long") from None
        if first:
            self._tag = tag_of(line)
            self._is_append = _APPEND.match(line) is not None
        self._held += len(line)
        if self._held > self._limits.max_command:
            await self._skip_rest(literal_marker(line))
            raise CommandRejected(self._tag, "BAD", "Command too long")
        return line

    async def _line(self, first: bool) -> bytes:
        """A line without CRLF; raises :class:`_LineTooLong` once an overlong one has been consumed."""
        try:
            line = await self._stream.readuntil(CRLF)
        except asyncio.IncompleteReadError as error:
            raise ClientGone(mid_command=bool(error.partial) or not first) from None
        except asyncio.LimitOverrunError as error:
            head = await self._consume(error.consumed)
            raise _LineTooLong(head[:_TAIL_KEPT], await self._discard_line(head[-_TAIL_KEPT:])) from None
        if len(line) - len(CRLF) > self._limits.max_line:
            raise _LineTooLong(line[:_TAIL_KEPT], line[-_TAIL_KEPT - 2 : -2])
        return line[:-2]

    async def _discard_line(self, tail: bytes) -> bytes:
        """Throw the rest of an overlong line away; the last octets before its CRLF."""
        while True:
            try:
                piece = await self._stream.readuntil(CRLF)
            except asyncio.IncompleteReadError:
                raise ClientGone(mid_command=True) from None
            except asyncio.LimitOverrunError as error:
                piece = await self._consume(error.consumed)
                tail = (tail + piece)[-_TAIL_KEPT:]
                continue
            self._count_discarded(len(piece))
            return (tail + piece[:-2])[-_TAIL_KEPT:]

    async def _consume(self, count: int) -> bytes:
        """Read ``count`` octets that are already buffered, counting them as discarded."""
        self._count_discarded(count)
        try:
            return await self._stream.readexactly(count)
        except asyncio.IncompleteReadError:
            raise ClientGone(mid_command=True) from None

    async def _read_literal(self, size: int, synchronizing: bool) -> Literal:
        spool = self._is_append and size > self._limits.max_literal
        problem = self._literal_problem(size, spool)
        if problem is not None:
            await self._refuse_literal(size, synchronizing, problem, "TOOBIG")
        file = None
        if spool and self._open_spool is not None:
            try:
                file = self._open_spool(size)
            except OSError:
                await self._refuse_literal(size, synchronizing, _CANNOT_STORE, "UNAVAILABLE")
        if synchronizing:
            await self._send_continuation()
        if file is not None:
            return await self._spool(size, file)
        data = await self._read_exactly(size)
        if not spool:
            self._held += size
        return data

    def _literal_problem(self, size: int, spool: bool) -> str | None:
        """Why a literal of ``size`` octets cannot be taken (None when it can)."""
        if spool and any(isinstance(literal, SpooledLiteral) for literal in self._literals):
            return "Only one message per APPEND"
        allowed = self._limits.append_limit if spool else self._limits.max_literal
        if size > allowed:
            return f"Literal larger than {allowed} octets"
        if not spool and self._held + size > self._limits.max_command:
            return "Command too long"
        return None

    async def _refuse_literal(self, size: int, synchronizing: bool, text: str, code: str) -> None:
        """Consume what the client sends regardless (nothing, for a synchronizing literal: it waits for
        a ``+`` that does not come), then refuse: NO for APPEND (RFC 7889), BAD otherwise."""
        if not synchronizing:
            await self._discard(size)
            await self._skip_rest(await self._next_marker_discarding())
        raise CommandRejected(self._tag, "NO" if self._is_append else "BAD", text, code)

    async def _spool(self, size: int, file: IO[bytes]) -> SpooledLiteral:
        literal = SpooledLiteral(size, file)
        self._literals.append(literal)  # closed with the others if reading fails from here on
        remaining = size
        while remaining:
            chunk = await self._read_exactly(min(remaining, self._limits.chunk_size))
            remaining -= len(chunk)
            try:
                file.write(chunk)
            except OSError:
                await self._refuse_literal(remaining, False, _CANNOT_STORE, "UNAVAILABLE")
        self._literals.pop()
        return literal

    async def _skip_rest(self, marker: tuple[int, bool] | None) -> None:
        """Consume the rest of a command being refused, given the last line's literal announcement. A
        synchronizing literal ends it: without our ``+`` the client sends nothing more."""
        while marker is not None:
            size, synchronizing = marker
            if synchronizing:
                return
            await self._discard(size)
            marker = await self._next_marker_discarding()

    async def _next_marker_discarding(self) -> tuple[int, bool] | None:
        """Throw the next line away; its literal announcement, if any."""
        try:
            line = await self._line(first=False)
        except _LineTooLong as too_long:
            return literal_marker(too_long.tail)
        self._count_discarded(len(line))
        return literal_marker(line)

    async def _discard(self, size: int) -> None:
        self._count_discarded(size)
        remaining = size
        while remaining:
            remaining -= len(await self._read_exactly(min(remaining, self._limits.chunk_size)))

    def _count_discarded(self, size: int) -> None:
        self._discarded += size
        if self._discarded > self._limits.max_discard:
            raise MustDisconnect(f"More than {self._limits.max_discard} octets of a refused command")

    async def _read_exactly(self, size: int) -> bytes:
        try:
            return await self._stream.readexactly(size)
        except asyncio.IncompleteReadError:
            raise ClientGone(mid_command=True) from None
