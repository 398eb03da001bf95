"""iprev (RFC 8601 §3): the client's reverse DNS name, confirmed by a forward lookup.

The confirmed name goes into the ``Received`` field (``from helo (name [ip])``) and the
``iprev=`` clause of Authentication-Results. Results: ``pass`` (a PTR name maps back to the address),
``fail`` (names exist but none maps back, or no PTR record), ``temperror`` (DNS trouble),
``permerror`` (the PTR answer is unusable).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import authres

from mailtoaster.dns import DnsStatus, IPAddress, Resolver, RRType

MAX_PTR_NAMES = 10
"""Names of one PTR answer that are tried (RFC 7208 §4.6.4 uses the same bound for its ptr check)."""


class IprevResult(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True)
class IprevOutcome:
    result: IprevResult
    ip: IPAddress
    name: str | None = None
    """The first PTR name whose A/AAAA records include the address (``pass`` only)."""
    reason: str = ""


async def check_iprev(resolver: Resolver, ip: IPAddress) -> IprevOutcome:
    answer = await resolver.lookup(ip.reverse_pointer, RRType.PTR)
    if answer.status.is_temporary_error:
        return IprevOutcome(IprevResult.TEMPERROR, ip, reason=f"PTR lookup failed: {answer.status.name}")
    if answer.status is not DnsStatus.NOERROR or not answer.names():
        return IprevOutcome(IprevResult.FAIL, ip, reason="no PTR record")
    rrtype = RRType.A if ip.version == 4 else RRType.AAAA
    temporary = False
    for name in answer.names()[:MAX_PTR_NAMES]:
        forward = await resolver.lookup(name, rrtype)
        if ip in forward.addresses():
            return IprevOutcome(IprevResult.PASS, ip, name.rstrip("."), reason=f"{name} confirms {ip}")
        temporary = temporary or forward.status.is_temporary_error
    if temporary:
        return IprevOutcome(IprevResult.TEMPERROR, ip, reason="forward lookup of the PTR names failed")
    return IprevOutcome(IprevResult.FAIL, ip, reason="no PTR name maps back to the address")


def iprev_result(outcome: IprevOutcome) -> authres.IPRevAuthenticationResult:
    """The ``iprev=`` clause: ``iprev=pass policy.iprev=192.0.2.1 (mail.example.com)``."""
    return authres.IPRevAuthenticationResult(
        result=outcome.result.value,
        result_comment=outcome.name or outcome.reason or None,
        policy_iprev=str(outcome.ip),
    )
