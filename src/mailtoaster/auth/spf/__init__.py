"""SPF (RFC 7208): evaluate the MAIL FROM or HELO identity of a client, and describe the result.

``check_spf`` is what a receiving server calls; ``check_host`` is the RFC's function, exposed for
Sender ID and for tests.
"""

from __future__ import annotations

from mailtoaster.auth.spf.evaluate import (
    RecordChoice,
    RecordSelector,
    SpfOptions,
    SpfOutcome,
    SpfResult,
    check_host,
    select_spf1,
    valid_domain,
)
from mailtoaster.auth.spf.header import describe, received_spf
from mailtoaster.auth.spf.lookups import LookupCount, count_lookups
from mailtoaster.auth.spf.record import SpfRecord, SpfSyntaxError, parse_record
from mailtoaster.dns import IPAddress, Resolver

__all__ = [
    "LookupCount",
    "RecordChoice",
    "RecordSelector",
    "SpfOptions",
    "SpfOutcome",
    "SpfRecord",
    "SpfResult",
    "SpfSyntaxError",
    "check_helo",
    "check_host",
    "check_spf",
    "count_lookups",
    "describe",
    "identity_of",
    "parse_record",
    "received_spf",
    "select_spf1",
    "valid_domain",
]


def identity_of(mail_from: str, helo: str) -> tuple[str, str, str]:
    """(identity, sender, domain) for an envelope (RFC 7208 §2.3, §2.4, §4.3).

    The null reverse-path checks the HELO identity as ``postmaster@<helo>``; a MAIL FROM without a
    local part gets ``postmaster``; one without ``@`` at all is taken as a bare domain.
    """
    if not mail_from:
        return "helo", f"postmaster@{helo}", helo
    local, at, domain = mail_from.rpartition("@")
    if not at:
        local, domain = "", mail_from
    return "mailfrom", f"{local or 'postmaster'}@{domain}", domain


async def check_spf(
    resolver: Resolver, ip: IPAddress, mail_from: str, helo: str, options: SpfOptions | None = None
) -> SpfOutcome:
    """The check a receiving server runs for one transaction's MAIL FROM (or HELO, for ``<>``)."""
    identity, sender, domain = identity_of(mail_from, helo)
    return await check_host(resolver, ip, domain, sender, helo, identity=identity, options=options)


async def check_helo(
    resolver: Resolver, ip: IPAddress, helo: str, options: SpfOptions | None = None
) -> SpfOutcome:
    """The optional HELO check of RFC 7208 §2.3."""
    return await check_host(resolver, ip, helo, f"postmaster@{helo}", helo, identity="helo", options=options)
