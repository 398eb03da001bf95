"""tinydns-data lines (djbdns) for computed records.

Line forms used, all from djbdns 1.05's own tinydns-data (no IPv6 patch needed):

* ``'fqdn:text:ttl`` TXT; tinydns-data cuts the text into 127-octet character-strings itself;
* ``@fqdn::host:dist:ttl`` MX; ``host`` contains a dot so it is used as the exchanger's name, and the
  empty ip field means its addresses come from separate lines;
* ``+fqdn:ip:ttl`` A;
* ``:fqdn:28:rdata:ttl`` AAAA, as a generic record with the 16 address octets escaped.

Fields are separated by colons, so a colon inside a field, a backslash and every octet outside
printable ASCII is written as ``\\NNN``, three *octal* digits (the classic ``ip4\\07269.36.226.12``).
Names are written without the trailing dot, which tinydns-data accepts either way.
"""

from __future__ import annotations

from collections.abc import Iterable

from mailtoaster.dns.types import MX, RRType
from mailtoaster.records.model import DnsRecord, format_records

AAAA_TYPE_CODE = 28


def tinydns_escape(data: bytes, *, escape_all: bool = False) -> str:
    """Octal-escape ``:``, ``\\`` and octets outside printable ASCII (``escape_all``: every octet)."""
    out = []
    for octet in data:
        char = chr(octet)
        if escape_all or char in ":\\" or not 0x20 <= octet <= 0x7E:
            out.append(f"\\{octet:03o}")
        else:
            out.append(char)
    return "".join(out)


def tinydns_line(record: DnsRecord) -> str:
    name, ttl, data = record.name.rstrip("."), record.ttl, record.data
    if isinstance(data, MX):
        return f"@{name}::{data.exchange}:{data.preference}:{ttl}"
    if isinstance(data, str):
        return f"'{name}:{tinydns_escape(data.encode('utf-8'))}:{ttl}"
    if record.rrtype is RRType.A:
        return f"+{name}:{data}:{ttl}"
    return f":{name}:{AAAA_TYPE_CODE}:{tinydns_escape(data.packed, escape_all=True)}:{ttl}"


def format_tinydns(records: Iterable[DnsRecord], title: str = "") -> str:
    """Lines for tinydns' ``data`` file, each after a ``#`` comment giving its purpose."""
    return format_records(records, tinydns_line, "#", title)
