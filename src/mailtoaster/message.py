"""A message parsed once, for every check to read.

Header fields keep their raw bytes (folding, spacing and line endings untouched) because signature
canonicalisation needs them; the unfolded, decoded value is derived on demand. Nothing here
interprets MIME: the body is kept as the bytes after the blank line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_LINE = re.compile(rb"[^\n]*\n|[^\n]+$")


@dataclass(frozen=True)
class Header:
    name: str
    """The field name as written (compare with :meth:`is_named`)."""
    raw: bytes
    """The whole field: name, colon, value and every folded line, with the line endings as received."""

    def is_named(self, name: str) -> bool:
        return self.name.lower() == name.lower()

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
        headers: list[Header] = []
        defects: list[str] = []
        current: list[bytes] = []
        current_name = ""
        offset = 0
        body_start = len(raw)
        for match in _LINE.finditer(raw):
            line = match.group(0)
            if line in (b"\r\n", b"\n"):
                body_start = match.end()
                break
            if line[:1] in (b" ", b"\t") and current:
                current.append(line)
                offset = match.end()
                continue
            field_match = _FIELD_NAME.match(line)
            if current:
                headers.append(Header(current_name, b"".join(current)))
                current = []
            if field_match is None:
                defects.append(f"header section ended by a line that is not a field: {line[:40]!r}")
                body_start = match.start()
                break
            current_name = field_match.group(1).decode("ascii")
            current = [line]
            offset = match.end()
        else:
            body_start = len(raw) if not current else offset
        if current:
            headers.append(Header(current_name, b"".join(current)))
        return cls(tuple(headers), raw[body_start:], tuple(defects))

    def get_all(self, name: str) -> list[Header]:
        return [h for h in self.headers if h.is_named(name)]

    def get(self, name: str) -> Header | None:
        """The first (topmost) field of that name, or None."""
        found = self.get_all(name)
        return found[0] if found else None
