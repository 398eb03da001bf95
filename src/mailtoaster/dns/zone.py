"""A resolver that answers from a standard BIND master file, for tests and offline use.

The file is read with dnspython's zone parser. Names may be absolute anywhere in the file, so one file
can hold records for several unrelated domains (the way ``mailtoaster dns records --format bind``
writes them); ``$ORIGIN`` and relative names work as usual.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone

from mailtoaster.dns.static import StaticResolver
from mailtoaster.dns.types import MX, Rdata, RRType


class ZoneFileError(ValueError):
    """The zone file cannot be read or does not parse; the message names the file and the problem."""


_SUPPORTED = {t.value for t in RRType}


def _to_rdata(rrtype: RRType, rdata: dns.rdata.Rdata) -> Rdata:
    text_name = getattr(rdata, "target", None) or getattr(rdata, "exchange", None)
    if rrtype in (RRType.A, RRType.AAAA):
        return ipaddress.ip_address(rdata.address)  # type: ignore[attr-defined]
    if rrtype is RRType.MX:
        return MX(rdata.preference, text_name.to_text(omit_final_dot=True) if text_name else "")  # type: ignore[attr-defined]
    if rrtype in (RRType.TXT, RRType.SPF):
        return tuple(rdata.strings)  # type: ignore[attr-defined]
    assert text_name is not None
    return str(text_name.to_text(omit_final_dot=True))


def parse_zone_text(text: str, source: str = "<zone>") -> StaticResolver:
    """Build a resolver from master-file text; ``source`` names the file in error messages."""
    try:
        zone = dns.zone.from_text(
            text, origin=dns.name.root, relativize=False, check_origin=False, filename=source
        )
    except dns.exception.DNSException as exc:
        raise ZoneFileError(f"{source}: {exc}") from exc
    resolver = StaticResolver()
    for name, node in zone.nodes.items():
        owner = name.to_text(omit_final_dot=True)
        for rdataset in node.rdatasets:
            if rdataset.rdclass != dns.rdataclass.IN:
                continue
            type_text = dns.rdatatype.to_text(rdataset.rdtype)
            if type_text not in _SUPPORTED:
                continue
            rrtype = RRType(type_text)
            for rdata in rdataset:
                resolver.add(owner, rrtype, _to_rdata(rrtype, rdata))
    return resolver


def load_zone_file(path: str | Path) -> StaticResolver:
    """Read a BIND master file into a resolver; raises :class:`ZoneFileError` with a one-line reason."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ZoneFileError(f"cannot read zone file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    return parse_zone_text(text, str(path))
