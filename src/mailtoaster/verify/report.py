"""Run every authentication check on one message and its envelope.

Order follows the data: SPF and Sender ID need only the envelope and headers; DomainKeys, DKIM and
ARC need the key records; ADSP and DMARC decide from the SPF and DKIM results. Checks that do not
depend on each other run concurrently.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import authres

from mailtoaster.auth.adsp import AdspOutcome, adsp_result, check_adsp
from mailtoaster.auth.arc import ArcOutcome, arc_result, validate_arc
from mailtoaster.auth.dkim import DkimVerdict, DkimVerifyOptions, verify_dkim
from mailtoaster.auth.dmarc import DmarcOutcome, check_dmarc, dmarc_result
from mailtoaster.auth.domainkeys import DomainKeysOutcome, domainkeys_result, verify_domainkeys
from mailtoaster.auth.iprev import IprevOutcome, check_iprev, iprev_result
from mailtoaster.auth.results import authentication_results, dkim_results, senderid_result, spf_result
from mailtoaster.auth.senderid import SenderIdOutcome, check_pra
from mailtoaster.auth.spf import SpfOptions, SpfOutcome, check_spf, received_spf
from mailtoaster.dns import IPAddress, Resolver
from mailtoaster.message import Message


@dataclass(frozen=True)
class Envelope:
    ip: IPAddress
    helo: str
    mail_from: str
    """The reverse-path without angle brackets; ``""`` is the null sender."""


@dataclass(frozen=True)
class VerifyReport:
    envelope: Envelope
    authserv_id: str
    spf: SpfOutcome
    senderid: SenderIdOutcome
    domainkeys: DomainKeysOutcome
    dkim: tuple[DkimVerdict, ...]
    adsp: AdspOutcome
    dmarc: DmarcOutcome
    arc: ArcOutcome
    authentication_results: str
    received_spf: str
    defects: tuple[str, ...] = field(default=())
    iprev: IprevOutcome | None = None
    """The client's confirmed reverse DNS name, when asked for (the server does; ``verify`` does not)."""

    @property
    def dkim_result(self) -> str:
        """One word for all signatures: ``pass`` if any passed, else the first one's result."""
        if not self.dkim:
            return "none"
        passing = [verdict for verdict in self.dkim if verdict.passed]
        return (passing or list(self.dkim))[0].result.value

    def results(self) -> dict[str, str]:
        """Check name -> RFC result keyword, in report order."""
        return {
            "spf": self.spf.result.value,
            "senderid": self.senderid.result.value,
            "domainkeys": self.domainkeys.result.value,
            "dkim": self.dkim_result,
            "adsp": self.adsp.result.value,
            "dmarc": self.dmarc.result.value,
            "arc": self.arc.result.value,
        }


async def verify_message(
    message: Message,
    envelope: Envelope,
    resolver: Resolver,
    authserv_id: str,
    dkim_options: DkimVerifyOptions | None = None,
    *,
    reverse_dns: bool = False,
) -> VerifyReport:
    """Every check; with ``reverse_dns`` also iprev (RFC 8601 §3), listed first in Authentication-Results."""
    options = SpfOptions(receiver=authserv_id)
    spf, senderid, domainkeys, dkim, arc, iprev = await asyncio.gather(
        check_spf(resolver, envelope.ip, envelope.mail_from, envelope.helo, options),
        check_pra(resolver, envelope.ip, message, envelope.helo, options),
        verify_domainkeys(message, resolver),
        verify_dkim(message, resolver, dkim_options),
        validate_arc(message, resolver),
        _maybe_iprev(resolver, envelope.ip, reverse_dns),
    )
    adsp, dmarc = await asyncio.gather(
        check_adsp(message, dkim, resolver),
        check_dmarc(message, spf, dkim, resolver),
    )
    results: list[authres.BaseAuthenticationResult] = [
        *([iprev_result(iprev)] if iprev is not None else []),
        spf_result(spf),
        senderid_result(senderid),
        domainkeys_result(domainkeys),
        *dkim_results(dkim),
        adsp_result(adsp),
        dmarc_result(dmarc),
        arc_result(arc, remote_ip=str(envelope.ip)),
    ]
    return VerifyReport(
        envelope=envelope,
        authserv_id=authserv_id,
        spf=spf,
        senderid=senderid,
        domainkeys=domainkeys,
        dkim=tuple(dkim),
        adsp=adsp,
        dmarc=dmarc,
        arc=arc,
        authentication_results=authentication_results(authserv_id, results),
        received_spf="Received-SPF: " + received_spf(spf, authserv_id),
        defects=message.defects,
        iprev=iprev,
    )


async def _maybe_iprev(resolver: Resolver, ip: IPAddress, wanted: bool) -> IprevOutcome | None:
    return await check_iprev(resolver, ip) if wanted else None
