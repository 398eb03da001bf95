"""A message parsed once, for every check to read.

Header fields keep their raw bytes (folding, spacing and line endings untouched) because signature
canonicalisation needs them; the unfolded, decoded value is derived on demand. Nothing here
interprets MIME: the body is kept as the bytes after the blank line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

_FIELD_PATTERN = rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:[^\n]*+(?:\n[ \t][^\n]*+)*+(?:\n|\Z)"
_FIELD = re.compile(rb"(" + _FIELD_PATTERN + rb")")
"""One whole field (group 1): name (group 2), colon, value and its continuation lines (which start
with a space or tab). Possessive, so a failed match never backtracks."""
_FIELDS = re.compile(rb"(?:" + _FIELD_PATTERN.replace(b"(", b"(?:", 1) + rb")*+")
"""The run of whole fields at the start of a message: where the header section ends, in one match."""


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


@dataclass(frozen=True)
class Message:
    headers: tuple[Header, ...]
    body: bytes
    defects: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, raw: bytes) -> Message:
        """Split ``raw`` into header fields and body. Never raises: oddities are listed in ``defects``.

        A line that is neither a field nor a continuation ends the header section (it is kept as the
        first line of the body), as most MTAs do.
        """
        header_section = _FIELDS.match(raw)
        position = header_section.end() if header_section else 0
        headers = [
            Header(name.decode("ascii"), whole, name.lower().decode("ascii"))
            for whole, name in _FIELD.findall(raw, 0, position)
        ]
        defects: list[str] = []
        if raw.startswith(b"\r\n", position):
            body_start = position + 2
        elif raw.startswith(b"\n", position) or position == len(raw):
            body_start = min(position + 1, len(raw))
        else:
            line_end = raw.find(b"\n", position)
            line = raw[position : line_end + 1 if line_end >= 0 else len(raw)]
            defects.append(f"header section ended by a line that is not a field: {line[:40]!r}")
            body_start = position
        return cls(tuple(headers), raw[body_start:], tuple(defects))

    def get_all(self, name: str) -> list[Header]:
        return [h for h in self.headers if h.is_named(name)]

    def get(self, name: str) -> Header | None:
        """The first (topmost) field of that name, or None."""
        found = self.get_all(name)
        return found[0] if found else None
