"""Where to deliver a domain's mail: MX lookup (RFC 5321 §5.1), null MX (RFC 7505), loop detection.

The result is either the ordered addresses to try or a :class:`RouteFailure` saying why there are
none and whether that is worth retrying:

==========================================  ==========  ========
situation                                   result      status
==========================================  ==========  ========
DNS failure (SERVFAIL, timeout)             temporary   4.4.3
the domain does not exist (NXDOMAIN)        permanent   5.1.2
null MX ``0 .``                             permanent   5.1.10
no MX, and no A/AAAA at the domain          permanent   5.4.4
MX hosts exist but none has an address      temporary   4.4.4
the best remaining MX is this server        permanent   5.4.6
==========================================  ==========  ========

"MX hosts without addresses" is retried rather than bounced: it is usually a DNS change in progress,
and the queue lifetime bounds the wait anyway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass
from itertools import groupby

from mailtoaster.dns.types import MX, Answer, DnsStatus, IPAddress, Resolver, RRType
from mailtoaster.queue.types import DeliveryConfig, DeliveryResult, Smarthost


@dataclass(frozen=True)
class Destination:
    """One address to try: the host name it came from (for TLS SNI, logs and DSNs) and where to connect."""

    host: str
    address: IPAddress
    port: int

    @property
    def relay(self) -> str:
        return f"{self.host}[{self.address}]:{self.port}"


@dataclass(frozen=True)
class RouteFailure:
    result: DeliveryResult
    status: str
    text: str


@dataclass(frozen=True)
class _Host:
    preference: int
    name: str


@dataclass(frozen=True)
class _Resolved:
    host: _Host
    addresses: tuple[IPAddress, ...]
    temporary_error: str = ""


def _temporary(status: str, text: str) -> RouteFailure:
    return RouteFailure(DeliveryResult.TEMPORARY, status, text)


def _permanent(status: str, text: str) -> RouteFailure:
    return RouteFailure(DeliveryResult.PERMANENT, status, text)


def _dns_error(answer: Answer) -> str:
    detail = f": {answer.detail}" if answer.detail else ""
    return f"DNS lookup of {answer.name} {answer.rrtype} failed ({answer.status.value}){detail}"


def address_literal(domain: str) -> IPAddress | None:
    """The address of an RFC 5321 address literal domain (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``)."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inside = domain[1:-1]
    if inside.lower().startswith("ipv6:"):
        inside = inside[5:]
    try:
        return ipaddress.ip_address(inside)
    except ValueError:
        return None


def ascii_domain(domain: str) -> str | None:
    """The domain in the form DNS is asked for (IDNA ``xn--`` labels), or None if it cannot be."""
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


async def resolve_addresses(resolver: Resolver, name: str) -> tuple[tuple[IPAddress, ...], str]:
    """A then AAAA addresses of ``name``; the second item describes a DNS failure, if any."""
    answers = await asyncio.gather(resolver.lookup(name, RRType.A), resolver.lookup(name, RRType.AAAA))
    addresses = tuple(address for answer in answers for address in answer.addresses())
    failures = [_dns_error(answer) for answer in answers if answer.status.is_temporary_error]
    return addresses, "; ".join(failures)


def order_mx(records: list[MX], rng: random.Random) -> list[_Host]:
    """Lowest preference first; hosts of equal preference in random order (RFC 5321 §5.1)."""
    ordered: list[_Host] = []
    by_preference = sorted(records, key=lambda mx: mx.preference)
    for preference, group in groupby(by_preference, key=lambda mx: mx.preference):
        names = list(dict.fromkeys(mx.exchange.lower() for mx in group))
        rng.shuffle(names)
        ordered.extend(_Host(preference, name) for name in names)
    return ordered


async def _mx_hosts(
    domain: str, resolver: Resolver, rng: random.Random
) -> tuple[list[_Host], bool] | RouteFailure:
    """The MX hosts in the order to try, and whether they are the implicit MX (the domain itself)."""
    answer = await resolver.lookup(domain, RRType.MX)
    if answer.status.is_temporary_error:
        return _temporary("4.4.3", _dns_error(answer))
    if answer.status is DnsStatus.NXDOMAIN:
        return _permanent("5.1.2", f"domain {domain} does not exist")
    records = answer.mx_records()
    usable = [mx for mx in records if mx.exchange]
    if records and not usable:
        return _permanent("5.1.10", f"domain {domain} does not accept mail (null MX, RFC 7505)")
    if not usable:
        return [_Host(0, domain)], True  # no MX: the domain itself is the implicit MX (RFC 5321 §5.1)
    return order_mx(usable, rng), False


def _is_this_server(resolved: _Resolved, config: DeliveryConfig) -> bool:
    return resolved.host.name == config.helo_name.lower() or any(
        address in config.local_addresses for address in resolved.addresses
    )


def _drop_this_server(hosts: list[_Resolved], config: DeliveryConfig) -> list[_Resolved]:
    """Keep only hosts more preferred than this server: as Postfix does, an MX list in which we appear
    at preference P is cut at P (we are a backup MX, and mail goes to the better ones only)."""
    for resolved in hosts:
        if _is_this_server(resolved, config):
            return [h for h in hosts if h.host.preference < resolved.host.preference]
    return hosts


def _destinations(hosts: list[_Resolved], port: int, limit: int) -> tuple[Destination, ...]:
    found = [Destination(r.host.name, address, port) for r in hosts for address in r.addresses]
    return tuple(found[:limit])


def _no_addresses(domain: str, hosts: list[_Resolved], implicit: bool) -> RouteFailure:
    errors = [r.temporary_error for r in hosts if r.temporary_error]
    if errors:
        return _temporary("4.4.3", "; ".join(errors))
    if implicit:
        return _permanent("5.4.4", f"domain {domain} has no MX and no address records")
    names = ", ".join(r.host.name for r in hosts)
    return _temporary("4.4.4", f"no address records for {names}")


async def _resolve_hosts(hosts: list[_Host], resolver: Resolver) -> list[_Resolved]:
    async def resolve(host: _Host) -> _Resolved:
        literal = address_literal(host.name)
        if literal is not None:
            return _Resolved(host, (literal,))
        addresses, error = await resolve_addresses(resolver, host.name)
        return _Resolved(host, addresses, error)

    return list(await asyncio.gather(*(resolve(host) for host in hosts)))


async def _route(
    domain: str,
    hosts: list[_Host],
    resolver: Resolver,
    config: DeliveryConfig,
    *,
    port: int,
    implicit: bool = False,
) -> tuple[Destination, ...] | RouteFailure:
    """Resolve ``hosts`` (an ordered MX list; ``implicit`` when it is the domain itself, for lack of
    MX records), drop this server and what follows it, and list the addresses to try."""
    resolved = await _resolve_hosts(hosts, resolver)
    with_addresses = [r for r in resolved if r.addresses]
    if not with_addresses:
        return _no_addresses(domain, resolved, implicit)
    remaining = _drop_this_server(with_addresses, config)
    if not remaining:
        return _permanent("5.4.6", f"mail for {domain} loops back to myself")
    return _destinations(remaining, port, config.max_addresses)


def _smarthost_host(smarthost: Smarthost) -> _Host:
    """An IP address becomes an address literal, so it is connected to without a DNS lookup."""
    literal = f"[{smarthost.host}]"
    return _Host(0, literal if address_literal(literal) is not None else smarthost.host.lower())


async def find_destinations(
    domain: str, resolver: Resolver, config: DeliveryConfig, rng: random.Random
) -> tuple[Destination, ...] | RouteFailure:
    """The addresses to try, in order, for mail to ``domain`` (or to the smarthost, if configured)."""
    if config.smarthost is not None:
        host = _smarthost_host(config.smarthost)
        return await _route(host.name, [host], resolver, config, port=config.smarthost.port)
    if address_literal(domain) is not None:
        return await _route(domain, [_Host(0, domain)], resolver, config, port=config.port)
    lookup_name = ascii_domain(domain)
    if lookup_name is None:
        return _permanent("5.1.2", f"{domain!r} is not a valid domain name")
    found = await _mx_hosts(lookup_name, resolver, rng)
    if isinstance(found, RouteFailure):
        return found
    hosts, implicit = found
    return await _route(lookup_name, hosts, resolver, config, port=config.port, implicit=implicit)
