"""The DATA phase as a sink that streams the message to a file, fed whatever the socket delivers.

The message never has to fit in memory: each piece is checked and written as it arrives, and nothing
longer than one line (plus the piece in hand) is ever held. A message that breaks a rule is read to its
end (RFC 5321 §4.2.5: the reply comes after the final dot) and then refused, with nothing kept:

* a bare CR or LF anywhere (SMTP smuggling: a ``<LF>.<LF>`` that another server takes for the end of
  data would split one transaction into two; refused as Postfix's ``smtpd_forbid_bare_newline`` does);
* a line over the length limit (RFC 5321 §4.5.3.1.6: 998 octets plus CRLF; a leading transparency
  dot does not count);
* more octets than the size limit (RFC 1870), counted on the wire.

The checks run on whole runs of lines at once (counts and a split, in C) rather than line by line
in Python: a 3 KB message is some sixty lines, and per-line work showed in profiles.
"""

from __future__ import annotations

import enum
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

IN_MEMORY_LIMIT = 128 * 1024
"""Messages up to this size are kept in memory while received; larger ones go to a spool file."""

END_OF_DATA = b".\r\n"
_END_AFTER_A_LINE = b"\r\n" + END_OF_DATA


class DataProblem(enum.Enum):
    NONE = "none"
    BARE_NEWLINE = "bare-newline"
    LINE_TOO_LONG = "line-too-long"
    TOO_BIG = "too-big"
    WRITE_FAILED = "write-failed"


@dataclass(frozen=True)
class DataRefusal:
    reply: str


REFUSALS = {
    DataProblem.BARE_NEWLINE: DataRefusal(
        "550 5.5.2 Error: bare <CR> or <LF> in message data is not allowed"
    ),
    DataProblem.LINE_TOO_LONG: DataRefusal(
        "550 5.6.0 Error: a line is longer than 998 octets (RFC 5321 4.5.3.1.6)"
    ),
    DataProblem.TOO_BIG: DataRefusal("552 5.3.4 Error: message exceeds the fixed maximum message size"),
    DataProblem.WRITE_FAILED: DataRefusal("451 4.3.0 Error: cannot store the message now, try again later"),
}


class Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


class DataSink:
    """Feed it what the client sends after the 354 (:meth:`feed`, any split); it writes the unstuffed
    message to ``out`` and says where the end-of-data line was."""

    def __init__(self, out: Writer, *, max_size: int, max_line_length: int = 998) -> None:
        self._out = out
        self._max_size = max_size
        self._max_pending = max_line_length + 3  # a transparency dot and CRLF
        self._max_line = max_line_length
        self._pending = b""
        """The start of a line whose CRLF has not arrived yet (at most one line long)."""
        self._at_line_start = True
        """Whether ``_pending`` (or the next piece, when it is empty) starts a line."""
        self.received = 0
        """Octets read from the wire so far."""
        self.written = 0
        """Octets of message written to ``out`` (after dot-unstuffing)."""
        self.problem = DataProblem.NONE

    def feed(self, piece: bytes) -> bytes | None:
        """The next octets from the client. None while the message goes on; at the end-of-data line,
        the octets that came after it (pipelined commands, RFC 2920), which are not the message's."""
        data = self._pending + piece if self._pending else piece
        end = self._end_of_data(data)
        if end is not None:
            self._take_lines(data[:end])
            self._pending = b""
            self._at_line_start = True
            return data[end + len(END_OF_DATA) :]
        complete = data.rfind(b"\r\n") + 2
        if complete >= 2:
            self._take_lines(data[:complete])
            self._at_line_start = True
            data = data[complete:]
        self._pending = data
        if len(data) > self._max_pending:
            self._drop_overlong()
        return None

    def _end_of_data(self, data: bytes) -> int | None:
        """Where the ``.CRLF`` line starts in ``data``, if it is there."""
        if self._at_line_start and data.startswith(END_OF_DATA):
            return 0
        found = data.find(_END_AFTER_A_LINE)
        return None if found < 0 else found + 2

    def _take_lines(self, lines: bytes) -> None:
        """Whole lines, each ending CRLF, the first one starting a line when ``_at_line_start``."""
        if not lines:
            return
        self.received += len(lines)
        if self.problem is DataProblem.NONE:
            self.problem = self._check(lines)
        if self.problem is not DataProblem.NONE:
            return
        if self._at_line_start and lines.startswith(b"."):
            lines = lines[1:]
        lines = lines.replace(b"\r\n.", b"\r\n")
        try:
            self._out.write(lines)
        except OSError:  # disk full, I/O error: keep reading to the dot, then ask for a retry
            self.problem = DataProblem.WRITE_FAILED
        else:
            self.written += len(lines)

    def _drop_overlong(self) -> None:
        """A line longer than any allowed one: counted, never kept. Its last octet stays, in case it
        is the CR of the CRLF that ends it."""
        dropped = len(self._pending) - 1
        self.received += dropped
        self._pending = self._pending[-1:]
        self._at_line_start = False
        if self.problem is DataProblem.NONE:
            self.problem = DataProblem.LINE_TOO_LONG
        self._check_size()

    def _check(self, lines: bytes) -> DataProblem:
        newlines = lines.count(b"\n")
        if newlines != lines.count(b"\r") or newlines != lines.count(b"\r\n"):
            return DataProblem.BARE_NEWLINE
        if self._at_line_start and self._has_overlong_line(lines):
            return DataProblem.LINE_TOO_LONG
        if self.received > self._max_size:
            return DataProblem.TOO_BIG
        return DataProblem.NONE

    def _has_overlong_line(self, lines: bytes) -> bool:
        """Whether one of the lines is longer than allowed, its transparency dot not counted."""
        if len(lines) <= self._max_line + 2:  # one line of at most the limit, and its CRLF
            return False
        longest = max(map(len, lines.split(b"\r\n")))
        if longest <= self._max_line:
            return False
        return any(len(line) > self._max_line + line.startswith(b".") for line in lines.split(b"\r\n"))

    def _check_size(self) -> None:
        if self.received > self._max_size and self.problem is DataProblem.NONE:
            self.problem = DataProblem.TOO_BIG

    @property
    def refusal(self) -> DataRefusal | None:
        return REFUSALS.get(self.problem)


class SpoolBuffer:
    """Where a message goes while it is received: memory up to ``limit`` octets, a spool file in
    ``directory`` beyond (created when the limit is passed, named by process and counter).

    Most mail is a few kilobytes: creating, writing, closing, reading back and unlinking a file for
    each message cost more than the message's own checks in profiles. Neither is durable: the reply
    comes only after the Maildir or queue copy is fsynced."""

    def __init__(self, directory: Path, limit: int) -> None:
        self._directory = directory
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._file: BinaryIO | None = None
        self.path: Path | None = None

    def write(self, data: bytes, /) -> int:
        if self._file is None and self._size + len(data) <= self._limit:
            self._chunks.append(data)
            self._size += len(data)
            return len(data)
        if self._file is None:
            self.path, self._file = new_spool_file(self._directory)
            self._file.write(b"".join(self._chunks))
            self._chunks.clear()
        return self._file.write(data)

    def close(self) -> None:
        """Flush and close the spool file, if there is one."""
        if self._file is not None:
            self._file.close()

    def contents(self) -> Path | bytes:
        """The spool file, or the message itself when it stayed in memory."""
        return self.path if self.path is not None else b"".join(self._chunks)

    def discard(self) -> None:
        self.close()
        self._chunks.clear()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


_spool_names = itertools.count()


def spool_file_prefix(pid: int) -> str:
    """How the names of a process's spool files start: what is left of a dead worker is found by it."""
    return f"in.{pid}."


def new_spool_file(directory: Path) -> tuple[Path, BinaryIO]:
    """A new file for one message: named by process and counter (unique while the process lives; the
    spool is emptied at start, a dead worker's files by the main process), created exclusively,
    readable by this user only. Cheaper than ``tempfile``'s random names, which showed in profiles."""
    while True:
        path = directory / f"{spool_file_prefix(os.getpid())}{next(_spool_names)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        except FileNotFoundError:
            directory.mkdir(parents=True, exist_ok=True)
            continue
        return path, os.fdopen(fd, "wb")
