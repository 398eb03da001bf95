"""One DNS layer for every check: an async :class:`Resolver` with a real (dnspython) implementation
and a zone-file one for tests and offline use. Protocol code only ever sees the interface."""

from mailtoaster.dns.static import StaticResolver
from mailtoaster.dns.types import (
    MX,
    Answer,
    DnsStatus,
    IPAddress,
    Question,
    Rdata,
    RecordingResolver,
    Resolver,
    RRType,
    normalise_name,
)
from mailtoaster.dns.zone import ZoneFileError, load_zone_file, parse_zone_text

__all__ = [
    "MX",
    "Answer",
    "DnsStatus",
    "IPAddress",
    "Question",
    "RRType",
    "Rdata",
    "RecordingResolver",
    "Resolver",
    "StaticResolver",
    "ZoneFileError",
    "load_zone_file",
    "normalise_name",
    "parse_zone_text",
]
