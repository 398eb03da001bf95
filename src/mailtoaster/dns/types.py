"""The vocabulary every DNS user in mailtoaster shares.

A lookup never raises for a DNS outcome: it returns an :class:`Answer` whose :class:`DnsStatus` keeps
NXDOMAIN, "no data", SERVFAIL and timeout apart, because the protocols built on top treat them
differently (SPF counts NXDOMAIN and no-data as *void* lookups but turns SERVFAIL and timeouts into
``temperror``).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class RRType(enum.StrEnum):
    """The record types mail authentication looks up."""

    A = "A"
    AAAA = "AAAA"
    MX = "MX"
    TXT = "TXT"
    SPF = "SPF"
    PTR = "PTR"
    CNAME = "CNAME"


class DnsStatus(enum.Enum):
    NOERROR = "noerror"
    """The name exists and records of the type were returned."""
    NODATA = "nodata"
    """The name exists but has no records of the type."""
    NXDOMAIN = "nxdomain"
    """The name does not exist."""
    SERVFAIL = "servfail"
    """The server failed (or refused) to answer."""
    TIMEOUT = "timeout"
    """No answer arrived within the query's time bound."""

    @property
    def is_temporary_error(self) -> bool:
        return self in (DnsStatus.SERVFAIL, DnsStatus.TIMEOUT)

    @property
    def is_void(self) -> bool:
        """True for the two outcomes RFC 7208 §4.6.4 calls a void lookup."""
        return self in (DnsStatus.NXDOMAIN, DnsStatus.NODATA)


@dataclass(frozen=True)
class MX:
    preference: int
    exchange: str
    """Host name without the trailing dot; ``""`` is the RFC 7505 null MX (``.``)."""


Rdata: TypeAlias = IPAddress | MX | tuple[bytes, ...] | str
"""One record's data: an address (A/AAAA), an :class:`MX`, the character-strings of a TXT/SPF
record (kept as bytes: records may legally hold any octet), or a host name (PTR/CNAME), always
without the trailing dot."""


@dataclass(frozen=True)
class Answer:
    name: str
    rrtype: RRType
    status: DnsStatus
    records: tuple[Rdata, ...] = ()
    ttl: int = 0
    detail: str = ""
    """Human-readable reason for an error status (which server, what went wrong)."""

    @property
    def ok(self) -> bool:
        return self.status is DnsStatus.NOERROR

    def addresses(self) -> list[IPAddress]:
        return [r for r in self.records if isinstance(r, ipaddress.IPv4Address | ipaddress.IPv6Address)]

    def mx_records(self) -> list[MX]:
        return [r for r in self.records if isinstance(r, MX)]

    def texts(self) -> list[bytes]:
        """TXT/SPF records, each one's character-strings joined with nothing in between (RFC 7208 §3.3)."""
        return [b"".join(r) for r in self.records if isinstance(r, tuple)]

    def names(self) -> list[str]:
        return [r for r in self.records if isinstance(r, str)]


@dataclass(frozen=True)
class Question:
    name: str
    rrtype: RRType


@runtime_checkable
class Resolver(Protocol):
    """What every check receives: one asynchronous lookup with a bounded time."""

    async def lookup(self, name: str, rrtype: RRType) -> Answer:
        """Look up ``name`` (absolute, with or without the trailing dot). Never raises for DNS outcomes."""
        ...


@dataclass
class LookupLog:
    """Records every question asked through a :class:`RecordingResolver` (for reports and tests)."""

    questions: list[Question] = field(default_factory=list)


class RecordingResolver:
    """Wraps a resolver and remembers what was asked: the ``verify`` report shows the lookups made."""

    def __init__(self, inner: Resolver) -> None:
        self.inner = inner
        self.log = LookupLog()

    async def lookup(self, name: str, rrtype: RRType) -> Answer:
        self.log.questions.append(Question(name, rrtype))
        return await self.inner.lookup(name, rrtype)


def normalise_name(name: str) -> str:
    """Lower-case a host name and drop the trailing dot: the form every resolver keys on."""
    return name.rstrip(".").lower() if name != "." else ""
