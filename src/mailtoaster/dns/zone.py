"""A resolver that answers from a standard BIND master file, for tests and offline use.

The file is read with dnspython's zone parser. Names may be absolute anywhere in the file, so one file
can hold records for several unrelated domains (the way ``mailtoaster dns records --format bind``
writes them); ``$ORIGIN`` and relative names work as usual.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.PTR
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.txtbase
import dns.zone

from mailtoaster.dns.static import StaticResolver
from mailtoaster.dns.types import MX, Rdata, RRType


class ZoneFileError(ValueError):
    """The zone file cannot be read or does not parse; the message names the file and the problem."""


_SUPPORTED = {t.value for t in RRType}


def convert_rdata(rdata: dns.rdata.Rdata) -> Rdata:
    """One dnspython record in mailtoaster's plain shape (the zone file's and the live resolver's)."""
    if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
        return ipaddress.ip_address(rdata.address)
    if isinstance(rdata, dns.rdtypes.ANY.MX.MX):
        return MX(rdata.preference, _host_text(rdata.exchange))
    if isinstance(rdata, dns.rdtypes.txtbase.TXTBase):
        return tuple(rdata.strings)
    if isinstance(rdata, dns.rdtypes.ANY.PTR.PTR | dns.rdtypes.ANY.CNAME.CNAME):
        return _host_text(rdata.target)
    raise TypeError(f"unexpected {dns.rdatatype.to_text(rdata.rdtype)} record")  # only RRType types get here


def _host_text(name: dns.name.Name) -> str:
    """A host name without the trailing dot; the root (a null MX's ``.``) is ``""``."""
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True)


class _AnyApexTransaction(dns.zone.Transaction):
    """A zone transaction that accepts an SOA at any name, not only at the zone's origin.

    A file with absolute names for several domains holds several zone apexes, but dnspython's zone
    (origin ``.``) refuses an SOA anywhere but at the origin. Its only use of
    ``_origin_information`` is that check in ``_add``, so reporting the name being added as the
    effective origin switches the check off and changes nothing else.
    """

    _adding: dns.name.Name | None = None

    def add(self, *args: Any) -> None:
        self._adding = args[0] if args and isinstance(args[0], dns.name.Name) else None
        try:
            super().add(*args)
        finally:
            self._adding = None

    def _origin_information(self) -> tuple[dns.name.Name | None, bool, dns.name.Name | None]:
        origin, relativize, effective = self.zone.origin_information()
        return origin, relativize, self._adding or effective


class _AnyApexZone(dns.zone.Zone):
    def writer(self, replacement: bool = False) -> dns.zone.Transaction:
        txn = _AnyApexTransaction(self, replacement)
        txn._setup_version()  # type: ignore[no-untyped-call]  # as dns.zone.Zone.writer does
        return txn


def parse_master_file(text: str, source: str = "<zone>") -> dns.zone.Zone:
    """Parse BIND master-file text with dnspython: origin ``.``, names kept absolute, SOAs anywhere.

    Raises :class:`ZoneFileError` naming ``source`` (and, for syntax errors, the line).
    """
    try:
        return dns.zone.from_text(
            text,
            origin=dns.name.root,
            relativize=False,
            check_origin=False,
            filename=source,
            zone_factory=_AnyApexZone,
        )
    except dns.exception.DNSException as exc:
        message = str(exc)
        raise ZoneFileError(message if message.startswith(source) else f"{source}: {message}") from exc
    except ValueError as exc:  # dnspython's transaction checks, e.g. a CNAME beside other data
        raise ZoneFileError(f"{source}: {exc}") from exc


def parse_zone_text(text: str, source: str = "<zone>") -> StaticResolver:
    """Build a resolver from master-file text; ``source`` names the file in error messages."""
    zone = parse_master_file(text, source)
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
                resolver.add(owner, rrtype, convert_rdata(rdata))
    return resolver


def load_zone_file(path: str | Path) -> StaticResolver:
    """Read a BIND master file into a resolver; raises :class:`ZoneFileError` with a one-line reason."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ZoneFileError(f"cannot read zone file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    return parse_zone_text(text, str(path))
