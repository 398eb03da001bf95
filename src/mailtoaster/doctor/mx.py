"""Where the domain's mail goes: its MX records, their addresses, and the reverse DNS of every server
address (forward-confirmed: the PTR name must lead back to the address, which is what receivers that
check reverse DNS test, RFC 8601 §3 ``iprev``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mailtoaster.dns import MX, Answer, DnsStatus, IPAddress, RRType
from mailtoaster.doctor.context import CheckContext, dns_failure
from mailtoaster.doctor.findings import (
    Finding,
    Severity,
    Suggestion,
    error,
    ok,
    suggest,
    suggest_ptr,
    warning,
)
from mailtoaster.records import DnsRecord

MAX_MX_HOSTS = 10
"""More exchangers than this are not checked one by one (RFC 7208 caps SPF's ``mx`` at 10 as well)."""
MAX_PTR_NAMES = 10


@dataclass(frozen=True)
class MailHost:
    """One exchanger and the addresses it resolves to."""

    name: str
    addresses: tuple[IPAddress, ...]


async def check_mx(ctx: CheckContext, answer: Answer) -> tuple[list[Finding], list[MailHost]]:
    """``answer`` is the MX lookup of the domain, already made to see whether the domain exists."""
    if answer.status.is_temporary_error:
        return [dns_failure("mx", answer, f"the MX records of {ctx.domain}")], []
    exchanges = sorted(answer.mx_records(), key=lambda mx: (mx.preference, mx.exchange))
    if not exchanges:
        return [await _no_mx(ctx)], []
    if all(not mx.exchange for mx in exchanges):
        return [_null_mx(ctx)], []
    findings = [ok("mx", f"{ctx.domain} MX {mx_summary(exchanges)}")]
    names = list(dict.fromkeys(mx.exchange for mx in exchanges if mx.exchange))[:MAX_MX_HOSTS]
    results = await asyncio.gather(*(_mail_host(ctx, name) for name in names))
    hosts = [host for finding, host in results if host is not None]
    findings.extend(finding for finding, _ in results)
    return findings, hosts


async def _no_mx(ctx: CheckContext) -> Finding:
    """RFC 5321 §5.1: without MX records the domain's own address receives its mail (implicit MX)."""
    addresses = await _addresses(ctx, ctx.domain)
    suggestions = _planned_mail_records(ctx)
    if isinstance(addresses, Answer):
        return dns_failure("mx", addresses, f"the addresses of {ctx.domain}")
    if addresses:
        shown = ", ".join(str(address) for address in addresses)
        return warning(
            "mx",
            f"{ctx.domain} has no MX record: mail goes to its own address {shown} (implicit MX, "
            "RFC 5321 §5.1); publish an MX record naming the mail server",
            suggestions,
        )
    return error(
        "mx",
        f"{ctx.domain} has no MX record and no address: nobody can send mail to it",
        suggestions,
        hint="" if ctx.ips else "give the mail server's addresses with --ip to get its A/AAAA records",
    )


def _null_mx(ctx: CheckContext) -> Finding:
    return warning(
        "mx",
        f"{ctx.domain} publishes a null MX (RFC 7505): it says it accepts no mail at all; replace it "
        "if this server is to receive the domain's mail",
        _planned_mail_records(ctx),
    )


def _planned_mail_records(ctx: CheckContext) -> list[Suggestion]:
    return ctx.planned_records(ctx.domain, RRType.MX) + _planned_addresses(ctx, ctx.plan.mail_host)


def _planned_addresses(ctx: CheckContext, host: str) -> list[Suggestion]:
    """A/AAAA records giving ``host`` the ``--ip`` addresses, as ``dns records`` writes them."""
    ttl = ctx.plan.ttl
    return [
        suggest(
            DnsRecord(
                host, RRType.A if ip.version == 4 else RRType.AAAA, ttl, ip, "address of the mail server"
            )
        )
        for ip in ctx.ips
    ]


async def _addresses(ctx: CheckContext, name: str) -> list[IPAddress] | Answer:
    """The A and AAAA addresses of ``name``, or the failed answer when a lookup failed."""
    answers = await asyncio.gather(*(ctx.resolver.lookup(name, rrtype) for rrtype in (RRType.A, RRType.AAAA)))
    for answer in answers:
        if answer.status.is_temporary_error:
            return answer
    return [address for answer in answers for address in answer.addresses()]


async def _mail_host(ctx: CheckContext, name: str) -> tuple[Finding, MailHost | None]:
    addresses = await _addresses(ctx, name)
    if isinstance(addresses, Answer):
        return dns_failure("mx.address", addresses, f"the addresses of the MX host {name}"), None
    if not addresses:
        return (
            error(
                "mx.address",
                f"MX host {name} has no A or AAAA record: mail for {ctx.domain} cannot be delivered to it",
                _planned_addresses(ctx, name),
                hint="" if ctx.ips else f"publish the A/AAAA records of {name} (give --ip to see them)",
            ),
            None,
        )
    shown = ", ".join(str(address) for address in addresses)
    return ok("mx.address", f"MX host {name} has address {shown}"), MailHost(name, tuple(addresses))


async def check_reverse_dns(ctx: CheckContext, hosts: list[MailHost]) -> list[Finding]:
    """Forward-confirmed reverse DNS of every ``--ip`` and every MX host address.

    Missing reverse DNS on a sending address (``--ip``) is an error: many receivers refuse mail from
    addresses without it. On an address that only receives mail it is a warning.
    """
    targets: dict[IPAddress, str] = {}
    for host in hosts:
        for address in host.addresses:
            targets.setdefault(address, host.name)
    for ip in ctx.ips:
        targets.setdefault(ip, _host_of(ip, hosts, ctx.plan.mail_host))
    return list(await asyncio.gather(*(_reverse(ctx, ip, name) for ip, name in targets.items())))


def _host_of(ip: IPAddress, hosts: list[MailHost], default: str) -> str:
    return next((host.name for host in hosts if ip in host.addresses), default)


async def _reverse(ctx: CheckContext, ip: IPAddress, expected: str) -> Finding:
    severity = Severity.ERROR if ip in ctx.ips else Severity.WARNING
    role = "sending address" if ip in ctx.ips else "address of MX host " + expected
    answer = await ctx.resolver.lookup(ip.reverse_pointer, RRType.PTR)
    if answer.status.is_temporary_error:
        return dns_failure("ptr", answer, f"the reverse DNS of {ip}")
    names = answer.names()[:MAX_PTR_NAMES]
    if answer.status is not DnsStatus.NOERROR or not names:
        return Finding(
            "ptr",
            severity,
            f"{ip} ({role}) has no reverse DNS (PTR record): many receivers refuse or distrust mail "
            "from such addresses",
            (suggest_ptr(ip, expected, ctx.plan.ttl),),
            hint=f"ask whoever assigned {ip} (hosting provider, ISP) to set its reverse DNS to {expected}",
        )
    confirmed = [name for name in names if await _resolves_to(ctx, name, ip)]
    if confirmed:
        return ok("ptr", f"{ip} -> {confirmed[0]} -> {ip} (forward-confirmed reverse DNS)")
    return await _unconfirmed(ctx, ip, names, expected, severity, role)


async def _resolves_to(ctx: CheckContext, name: str, ip: IPAddress) -> bool:
    rrtype = RRType.A if ip.version == 4 else RRType.AAAA
    answer = await ctx.resolver.lookup(name, rrtype)
    return ip in answer.addresses()


async def _unconfirmed(
    ctx: CheckContext, ip: IPAddress, names: list[str], expected: str, severity: Severity, role: str
) -> Finding:
    """The PTR name does not lead back to the address: either point the PTR at a name that does, or
    give the PTR name the address."""
    suggestions = [suggest_ptr(ip, expected, ctx.plan.ttl)]
    if not await _resolves_to(ctx, expected, ip):
        rrtype = RRType.A if ip.version == 4 else RRType.AAAA
        suggestions.append(
            suggest(DnsRecord(expected, rrtype, ctx.plan.ttl, ip, "address of the mail server"))
        )
    return Finding(
        "ptr",
        severity,
        f"{ip} ({role}) has reverse DNS {', '.join(names)}, which does not resolve back to {ip}: the "
        "reverse DNS is not forward-confirmed",
        tuple(suggestions),
        hint=f"ask whoever assigned {ip} to set its reverse DNS to {expected}, and give that name the "
        "address",
    )


def mx_summary(exchanges: list[MX]) -> str:
    return ", ".join(f"{mx.preference} {mx.exchange or '.'}" for mx in exchanges)
