"""The DATA phase as a line-by-line sink that streams the message to a file.

The message never has to fit in memory: each line is checked and written as it arrives. A message
that breaks a rule is read to its end (RFC 5321 §4.2.5: the reply comes after the final dot) and then
refused, with nothing kept:

* a bare CR or LF anywhere (SMTP smuggling: a ``<LF>.<LF>`` that another server takes for the end of
  data would split one transaction into two; refused as Postfix's ``smtpd_forbid_bare_newline`` does);
* a line over the length limit (RFC 5321 §4.5.3.1.6: 998 octets plus CRLF; a leading transparency
  dot does not count);
* more octets than the size limit (RFC 1870), counted on the wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import IO

END_OF_DATA = b".\r\n"


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


class DataSink:
    """Feed it the lines of the DATA phase (each ending in CRLF, as read with ``readuntil(b"\\r\\n")``)
    and the pieces of over-long lines; it writes the unstuffed message to ``out``."""

    def __init__(self, out: IO[bytes], *, max_size: int, max_line_length: int = 998) -> None:
        self._out = out
        self._max_size = max_size
        self._max_line = max_line_length + 2  # CRLF
        self.received = 0
        """Octets read from the wire so far."""
        self.written = 0
        """Octets of message written to ``out`` (after dot-unstuffing)."""
        self.problem = DataProblem.NONE

    def line(self, line: bytes) -> bool:
        """One whole line, CRLF included. True when it is the end-of-data marker (not written)."""
        if line == END_OF_DATA:
            return True
        self.received += len(line)
        if line.startswith(b"."):
            line = line[1:]
        if self.problem is DataProblem.NONE:
            self.problem = self._check(line)
        if self.problem is DataProblem.NONE:
            try:
                self._out.write(line)
            except OSError:  # disk full, I/O error: keep reading to the dot, then ask for a retry
                self.problem = DataProblem.WRITE_FAILED
            else:
                self.written += len(line)
        return False

    def overlong(self, chunk: bytes) -> None:
        """A piece of a line longer than the reader's buffer: counted, never written."""
        self.received += len(chunk)
        if self.problem is DataProblem.NONE:
            self.problem = DataProblem.LINE_TOO_LONG
        self._check_size()

    def _check(self, line: bytes) -> DataProblem:
        content = line[:-2]
        if b"\n" in content or b"\r" in content:
            return DataProblem.BARE_NEWLINE
        if len(line) > self._max_line:
            return DataProblem.LINE_TOO_LONG
        if self.received > self._max_size:
            return DataProblem.TOO_BIG
        return DataProblem.NONE

    def _check_size(self) -> None:
        if self.received > self._max_size and self.problem is DataProblem.NONE:
            self.problem = DataProblem.TOO_BIG

    @property
    def refusal(self) -> DataRefusal | None:
        return REFUSALS.get(self.problem)
