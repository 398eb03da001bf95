"""BIND master-file lines (RFC 1035 §5) for computed records: absolute names, one record a line."""

from __future__ import annotations

from collections.abc import Iterable

from mailtoaster.dns.types import MX
from mailtoaster.records.model import DnsRecord, format_records

MAX_CHARACTER_STRING = 255
"""A TXT character-string holds at most 255 octets (RFC 1035 §3.3); longer text is split."""


def absolute(name: str) -> str:
    return name if name.endswith(".") else f"{name}."


def split_character_strings(data: bytes, size: int = MAX_CHARACTER_STRING) -> list[bytes]:
    """Cut ``data`` into pieces of at most ``size`` octets (one empty piece for empty data).

    Receivers join the pieces with nothing in between (RFC 7208 §3.3, RFC 6376 §3.6.2.2), so where
    the cuts fall does not matter.
    """
    return [data[start : start + size] for start in range(0, len(data), size)] or [b""]


def quote_character_string(data: bytes) -> str:
    """A master-file quoted string: ``"`` and ``\\`` backslash-escaped, other non-printable octets
    as ``\\DDD`` (three *decimal* digits, RFC 1035 §5.1)."""
    out = []
    for octet in data:
        char = chr(octet)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= octet <= 0x7E:
            out.append(char)
        else:
            out.append(f"\\{octet:03d}")
    return '"' + "".join(out) + '"'


def rdata_text(record: DnsRecord) -> str:
    data = record.data
    if isinstance(data, MX):
        return f"{data.preference} {absolute(data.exchange) if data.exchange else '.'}"
    if isinstance(data, str):
        pieces = split_character_strings(data.encode("utf-8"))
        return " ".join(quote_character_string(piece) for piece in pieces)
    return str(data)


def bind_line(record: DnsRecord) -> str:
    """``name. TTL IN TYPE rdata``."""
    return f"{absolute(record.name)} {record.ttl} IN {record.rrtype} {rdata_text(record)}"


def format_bind(records: Iterable[DnsRecord], title: str = "") -> str:
    """Master-file text: an optional ``title`` comment, then each record after its purpose comment."""
    return format_records(records, bind_line, ";", title)
