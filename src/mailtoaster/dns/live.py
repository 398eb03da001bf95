"""The real resolver: dnspython's asyncio stub resolver behind the :class:`Resolver` interface.

It asks recursive servers (the system's, or ones named with ``--nameserver``), bounds every lookup by
one timeout, turns every DNS outcome into a :class:`DnsStatus` instead of an exception, converts the
records into mailtoaster's plain shapes and keeps a small TTL-respecting cache of its own (dnspython's
cache is off, so there is one cache with one policy).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailtoaster.dns.cache import AnswerCache, CacheKey
from mailtoaster.dns.types import Answer, DnsStatus, RRType
from mailtoaster.dns.zone import convert_rdata

DEFAULT_PORT = 53
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"

DEFAULT_NEGATIVE_TTL = 60
"""Seconds to remember NXDOMAIN / no-data when the response carries no SOA to say how long."""
MAX_NEGATIVE_TTL = 3 * 3600
"""Cap on negative caching (RFC 2308 §5 suggests one to three hours)."""
MAX_POSITIVE_TTL = 24 * 3600
"""Cap on positive caching, so a long-running server notices changed records within a day."""

EDNS_PAYLOAD = 1232
"""The DNS Flag Day 2020 UDP size: big enough for most TXT answers, small enough not to fragment."""
_GRACE = 0.5
"""Slack on top of dnspython's own lifetime for the asyncio backstop timeout (see :meth:`_resolve`)."""


def check_timeout(seconds: float) -> float:
    """A usable time bound: positive and finite (NaN bounds nothing; infinity lets a lookup of a
    silent server run for ever). ValueError otherwise."""
    if not 0 < seconds < math.inf:  # NaN fails this too
        raise ValueError("must be a positive, finite number of seconds")
    return seconds


class ResolverConfigError(Exception):
    """The system resolver configuration cannot be read or names no nameserver."""


class InvalidName(ValueError):
    """A name that cannot be put in a DNS query (label too long, name too long, empty label, bad IDNA)."""


def parse_nameserver(text: str) -> tuple[str, int]:
    """Parse ``HOST``, ``HOST:PORT``, ``[V6]``, ``[V6]:PORT`` or a bare IPv6 address into ``(address, port)``.

    HOST must be an IP address: a nameserver given by name would need DNS to find DNS. A bare IPv6
    address always means port 53 (``::1:53`` is an address); put it in brackets to give a port.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty nameserver; expected HOST[:PORT] with HOST an IP address")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid nameserver {text!r}: expected [IPV6] or [IPV6]:PORT")
        return _checked_address(host, text, version=6), _parse_port(rest[1:], text) if rest else DEFAULT_PORT
    if text.count(":") > 1:
        return _checked_address(text, text, version=6), DEFAULT_PORT
    host, sep, port = text.partition(":")
    return _checked_address(host, text, version=4), _parse_port(port, text) if sep else DEFAULT_PORT


def _checked_address(host: str, text: str, *, version: int) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if version == 6:
            raise ValueError(f"invalid nameserver {text!r}: {host!r} is not an IPv6 address") from None
        raise ValueError(
            f"invalid nameserver {text!r}: give an IP address, not a host name "
            "(finding the nameserver's address would itself need DNS)"
        ) from None
    if address.version != version:
        raise ValueError(f"invalid nameserver {text!r}: put IPv6 addresses in brackets to give a port")
    return str(address)


def _parse_port(port: str, text: str) -> int:
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid nameserver {text!r}: port must be a number from 1 to 65535")
    return int(port)


def to_dns_name(name: str) -> dns.name.Name:
    """Turn a caller's host name into an absolute :class:`dns.name.Name`, label by label.

    Labels are taken literally (no master-file escapes: a backslash in an SPF macro expansion is a
    backslash); non-ASCII labels are IDNA-encoded. ``""`` and ``"."`` are the root.
    """
    text = name[:-1] if name.endswith(".") else name
    if not text:
        return dns.name.root
    labels = [_encode_label(label) for label in text.split(".")]
    try:
        return dns.name.Name([*labels, b""])
    except dns.name.EmptyLabel:
        raise InvalidName("empty label") from None
    except dns.name.LabelTooLong:
        raise InvalidName("label longer than 63 octets") from None
    except dns.name.NameTooLong:
        raise InvalidName("name longer than 255 octets") from None


def _encode_label(label: str) -> bytes:
    if label.isascii():
        return label.encode("ascii")
    try:
        return dns.name.IDNA_DEFAULT.encode(label)
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise InvalidName(f"label {label!r} cannot be IDNA-encoded ({exc})") from None


def cache_key(qname: dns.name.Name, rrtype: RRType) -> CacheKey:
    return qname.canonicalize().to_text(omit_final_dot=True), rrtype


class LiveResolver:
    """Asks real recursive DNS servers; the :class:`Resolver` used outside tests.

    ``nameservers`` are ``(address, port)`` pairs (IPv4 or IPv6 addresses); None means the system's
    configuration from ``resolv_conf``, and :class:`ResolverConfigError` if that cannot be read.
    Every lookup returns within about ``timeout`` seconds. Answers are cached by (name, type) for
    their TTL, negative ones for the SOA's negative TTL; SERVFAIL and timeouts are never cached.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] | None = None,
        *,
        timeout: float = 5.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        resolv_conf: str = DEFAULT_RESOLV_CONF,
    ) -> None:
        try:
            self.timeout = check_timeout(timeout)
        except ValueError as exc:
            raise ValueError(f"DNS timeout {exc}") from None
        self.cache = AnswerCache(cache_size, clock)
        self._resolver = _make_resolver(nameservers, timeout, resolv_conf)

    @property
    def nameservers(self) -> tuple[tuple[str, int], ...]:
        """The ``(address, port)`` pairs asked, in order."""
        resolver = self._resolver
        return tuple(
            (ns.answer_nameserver(), ns.answer_port())
            if isinstance(ns, dns.nameserver.Nameserver)
            else (ns, resolver.nameserver_ports.get(ns, resolver.port))
            for ns in resolver.nameservers
        )

    async def lookup(self, name: str, rrtype: RRType) -> Answer:
        try:
            qname = to_dns_name(name)
        except InvalidName as exc:
            # SPF (RFC 7208 §4.3, §5) treats a name that cannot exist like one that does not: NXDOMAIN.
            return Answer(name, rrtype, DnsStatus.NXDOMAIN, detail=f"invalid domain name {name!r}: {exc}")
        key = cache_key(qname, rrtype)
        cached = self.cache.get(key)
        if cached is not None:
            return cached if cached.name == name else dataclasses.replace(cached, name=name)
        answer, cache_ttl = await self._resolve(name, qname, rrtype)
        self.cache.put(key, answer, cache_ttl)
        return answer

    async def _resolve(self, name: str, qname: dns.name.Name, rrtype: RRType) -> tuple[Answer, float]:
        """One uncached lookup: the answer and how long it may be cached (0: not at all).

        dnspython's ``lifetime`` bounds the whole resolution; the asyncio timeout around it is only a
        backstop so that no bug or clock jump in the layers below can make a lookup hang.
        """
        try:
            async with asyncio.timeout(self.timeout + _GRACE):
                result = await self._resolver.resolve(
                    qname, rrtype.value, search=False, raise_on_no_answer=False, lifetime=self.timeout
                )
        except (dns.exception.Timeout, TimeoutError):
            detail = f"no answer within {self.timeout:g} s from {_servers_text(self.nameservers)}"
            return Answer(name, rrtype, DnsStatus.TIMEOUT, detail=detail), 0
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[dns.name.Name, dns.message.Message] = exc.kwargs.get("responses") or {}
            ttl = _negative_ttl(responses.values())
            return Answer(name, rrtype, DnsStatus.NXDOMAIN, ttl=ttl), ttl
        except dns.resolver.NoNameservers as exc:
            return Answer(name, rrtype, DnsStatus.SERVFAIL, detail=_errors_text(exc.kwargs["errors"])), 0
        except dns.exception.DNSException as exc:
            return Answer(name, rrtype, DnsStatus.SERVFAIL, detail=f"{type(exc).__name__}: {exc}"), 0
        return _from_dnspython(name, rrtype, result)


def _make_resolver(
    nameservers: Sequence[tuple[str, int]] | None, timeout: float, resolv_conf: str
) -> dns.asyncresolver.Resolver:
    if nameservers is None:
        try:
            resolver = dns.asyncresolver.Resolver(filename=resolv_conf, configure=True)
        except dns.resolver.NoResolverConfiguration as exc:
            raise ResolverConfigError(
                f"cannot use the system DNS configuration ({resolv_conf}: {exc}); "
                "name a server with --nameserver"
            ) from exc
    else:
        if not nameservers:
            raise ValueError("no nameservers given")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
    resolver.cache = None
    resolver.lifetime = timeout
    # Per-attempt timeout: keep resolv.conf's (default 2 s) so a second server still gets a turn,
    # but never longer than the whole lookup may take.
    resolver.timeout = min(resolver.timeout, timeout)
    resolver.use_edns(0, 0, EDNS_PAYLOAD)
    return resolver


def _from_dnspython(name: str, rrtype: RRType, result: dns.resolver.Answer) -> tuple[Answer, float]:
    chain = result.chaining_result
    if result.rrset is None:
        ttl = min([_negative_ttl([result.response]), *(rrset.ttl for rrset in chain.cnames)])
        return Answer(name, rrtype, DnsStatus.NODATA, ttl=ttl), ttl
    records = tuple(convert_rdata(rdata) for rdata in result.rrset)
    ttl = chain.minimum_ttl
    return Answer(name, rrtype, DnsStatus.NOERROR, records, ttl), min(ttl, MAX_POSITIVE_TTL)


def _negative_ttl(responses: Iterable[dns.message.Message]) -> int:
    """RFC 2308 §5: the lesser of the SOA record's TTL and its MINIMUM field, capped; a default if no SOA."""
    for response in responses:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                minimum: int = rrset[0].minimum
                return min(rrset.ttl, minimum, MAX_NEGATIVE_TTL)
    return DEFAULT_NEGATIVE_TTL


def _servers_text(servers: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{host}@{port}" for host, port in servers) or "no nameserver"


def _errors_text(errors: Iterable[tuple[Any, ...]]) -> str:
    """What each server did, from dnspython's ``(server, tcp, port, error, response)`` error list."""
    texts: list[str] = []
    for server, tcp, _port, error, _response in errors:
        where = str(server).removeprefix("Do53:") + (" over TCP" if tcp else "")
        what = f"answered {error}" if isinstance(error, str) else f"failed: {type(error).__name__}: {error}"
        text = f"{where} {what}"
        if text not in texts:
            texts.append(text)
    return "; ".join(texts) or "no nameserver answered"
