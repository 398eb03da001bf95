"""Which DNS records a mail domain should publish, computed as data.

The writers (:mod:`.bind`, :mod:`.tinydns`) only format; every decision about what to publish is
made here, once, so both output formats always say the same thing.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from mailtoaster.dns.types import MX, IPAddress, RRType
from mailtoaster.keys.names import check_dns_name, validate_domain
from mailtoaster.keys.store import StoredKey

DEFAULT_TTL = 3600
MAX_TTL = 2**31 - 1
"""RFC 2181 §8: a TTL is an unsigned 32-bit number whose top bit must be zero."""
DEFAULT_MX_PREFERENCE = 10
SPF_MAX_DNS_MECHANISMS = 10
"""RFC 7208 §4.6.4: at most 10 mechanisms and modifiers that cause DNS lookups."""

RecordData: TypeAlias = str | MX | IPAddress
"""TXT text, an MX, or an A/AAAA address."""

_T = TypeVar("_T")

_MAILBOX_LOCAL = re.compile(r"^[A-Za-z0-9._%+=-]+$")
"""Local parts safe inside a DMARC URI list without escaping (``,``, ``!`` and ``;`` are special)."""


class SpfAll(enum.StrEnum):
    """What SPF says about hosts not listed: ``~all`` (softfail) or ``-all`` (fail)."""

    SOFTFAIL = "softfail"
    FAIL = "fail"

    @property
    def mechanism(self) -> str:
        return "~all" if self is SpfAll.SOFTFAIL else "-all"


class DmarcPolicy(enum.StrEnum):
    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


@dataclass(frozen=True)
class DnsRecord:
    """One resource record: absolute owner name (lower case, no trailing dot), type, TTL, data."""

    name: str
    rrtype: RRType
    ttl: int
    data: RecordData
    purpose: str = field(default="", compare=False)
    """One line saying why the record exists; the writers print it as a comment."""


@dataclass(frozen=True)
class DomainPlan:
    """Everything that decides a domain's records; build it with :func:`make_plan` to validate it."""

    domain: str
    ips: tuple[IPAddress, ...] = ()
    includes: tuple[str, ...] = ()
    spf_all: SpfAll = SpfAll.SOFTFAIL
    spf_mx: bool | None = None
    """Put ``mx`` in SPF. None means: only when no ``ips`` are given (see :func:`spf_mechanisms`)."""
    sender_id: bool = False
    dmarc_policy: DmarcPolicy = DmarcPolicy.QUARANTINE
    dmarc_rua: str | None = None
    mx_host: str = ""
    """The mail exchanger; ``""`` means ``mail.<domain>``."""
    mx_preference: int = DEFAULT_MX_PREFERENCE
    ttl: int = DEFAULT_TTL

    @property
    def mail_host(self) -> str:
        return self.mx_host or f"mail.{self.domain}"


def make_plan(
    domain: str,
    *,
    ips: Iterable[str | IPAddress] = (),
    includes: Iterable[str] = (),
    spf_all: SpfAll | str = SpfAll.SOFTFAIL,
    spf_mx: bool | None = None,
    sender_id: bool = False,
    dmarc_policy: DmarcPolicy | str = DmarcPolicy.QUARANTINE,
    dmarc_rua: str | None = None,
    mx_host: str | None = None,
    ttl: int = DEFAULT_TTL,
) -> DomainPlan:
    """Validate and normalise the inputs; ValueError with a one-line reason for anything wrong."""
    plan = DomainPlan(
        domain=validate_domain(domain),
        ips=_unique(parse_ip(ip) for ip in ips),
        includes=_unique(check_dns_name(name, "include domain", allow_underscore=True) for name in includes),
        spf_all=_choice(SpfAll, spf_all, "SPF 'all' result"),
        spf_mx=spf_mx,
        sender_id=sender_id,
        dmarc_policy=_choice(DmarcPolicy, dmarc_policy, "DMARC policy"),
        dmarc_rua=validate_mailbox(dmarc_rua) if dmarc_rua is not None else None,
        mx_host=check_dns_name(mx_host, "mail host", min_labels=2) if mx_host else "",
        ttl=validate_ttl(ttl),
    )
    lookups = len(plan.includes) + (1 if "mx" in spf_mechanisms(plan) else 0)
    if lookups > SPF_MAX_DNS_MECHANISMS:
        raise ValueError(
            f"SPF record would need {lookups} DNS lookups; RFC 7208 allows at most {SPF_MAX_DNS_MECHANISMS}"
        )
    return plan


_E = TypeVar("_E", bound=enum.StrEnum)


def _choice(kind: type[_E], value: str, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValueError(f"invalid {what} {value!r}: choose one of {allowed}") from None


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


def parse_ip(value: str | IPAddress) -> IPAddress:
    """One IPv4 or IPv6 address (not a network: these are the mail server's own addresses)."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        address = value
    else:
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            raise ValueError(f"invalid IP address {value!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        # "fe80::1%eth0" names an interface of this host; it cannot go in SPF or an AAAA record.
        raise ValueError(f"invalid IP address {value!r}: a scoped address cannot be published")
    return address


def validate_ttl(ttl: int) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL:
        raise ValueError(f"invalid TTL {ttl!r}: must be a whole number of seconds from 0 to {MAX_TTL}")
    return ttl


def validate_mailbox(address: str) -> str:
    """An address for ``rua=mailto:``: ``local@domain`` with no characters DMARC URIs must escape."""
    local, at, domain = address.rpartition("@")
    if not at or not _MAILBOX_LOCAL.fullmatch(local):
        raise ValueError(f"invalid report address {address!r}: expected local-part@domain")
    return f"{local}@{check_dns_name(domain, 'report address domain', min_labels=2)}"


def spf_mechanisms(plan: DomainPlan) -> list[str]:
    """The mechanisms before ``all``: ``[mx] ip4:... ip6:... include:...``.

    ``mx`` is left out when addresses are given: the MX host's A/AAAA records *are* those addresses,
    so ``mx`` would authorise nothing new while spending one of SPF's ten DNS lookups (and failing
    with ``temperror`` whenever that lookup does). Without addresses it is the only way to name the
    server, so it is put in.
    """
    use_mx = plan.spf_mx if plan.spf_mx is not None else not plan.ips
    mechanisms = ["mx"] if use_mx else []
    for ip in sorted(plan.ips, key=lambda ip: ip.version):  # ip4: before ip6:, each in the order given
        mechanisms.append(f"ip{ip.version}:{ip}")
    mechanisms.extend(f"include:{name}" for name in plan.includes)
    return mechanisms


def spf_text(plan: DomainPlan) -> str:
    """``v=spf1 ... ~all`` (RFC 7208)."""
    return " ".join(["v=spf1", *spf_mechanisms(plan), plan.spf_all.mechanism])


def sender_id_text(plan: DomainPlan) -> str:
    """``spf2.0/mfrom,pra ... ~all`` (RFC 4406): the same policy for Sender ID's two identities."""
    return " ".join(["spf2.0/mfrom,pra", *spf_mechanisms(plan), plan.spf_all.mechanism])


def dmarc_text(plan: DomainPlan) -> str:
    """``v=DMARC1; p=<policy>[; rua=mailto:<addr>]`` (RFC 7489 §6.3)."""
    tags = ["v=DMARC1", f"p={plan.dmarc_policy}"]
    if plan.dmarc_rua:
        # RFC 6068 §2: "%" is the only character the accepted addresses hold that a mailto: URI escapes.
        tags.append(f"rua=mailto:{plan.dmarc_rua.replace('%', '%25')}")
    return "; ".join(tags)


DOMAINKEYS_POLICY = "o=-;"
"""RFC 4870 §3.6.2.1 outbound signing policy: ``o=-`` says every message from the domain is signed."""
ADSP_POLICY = "dkim=all"
"""RFC 5617 §4.2.1: every message from the domain carries an author-domain DKIM signature."""


def compute_records(plan: DomainPlan, keys: Sequence[StoredKey] = ()) -> list[DnsRecord]:
    """Every record ``plan.domain`` should publish, in a stable order.

    The "all mail is signed" policies (DomainKeys ``o=-``, ADSP ``dkim=all``) are only published when
    the domain has at least one key: without a key they would be false and tell receivers to distrust
    every message.
    """
    domain, ttl = plan.domain, plan.ttl
    records = [
        DnsRecord(domain, RRType.MX, ttl, MX(plan.mx_preference, plan.mail_host), "mail exchanger"),
        *_address_records(plan),
        DnsRecord(domain, RRType.TXT, ttl, spf_text(plan), "SPF: hosts allowed to send (RFC 7208)"),
    ]
    if plan.sender_id:
        records.append(
            DnsRecord(domain, RRType.TXT, ttl, sender_id_text(plan), "Sender ID: same hosts (RFC 4406)")
        )
    own_keys = [key for key in keys if key.domain == domain]
    if own_keys:
        records.append(
            DnsRecord(
                f"_domainkey.{domain}",
                RRType.TXT,
                ttl,
                DOMAINKEYS_POLICY,
                "DomainKeys policy: all mail is signed (RFC 4870)",
            )
        )
    for key in sorted(own_keys, key=lambda k: k.selector):
        records.append(
            DnsRecord(
                key.record_name,
                RRType.TXT,
                ttl,
                key.dkim_record,
                f"DKIM public key, {key.description}, selector {key.selector} (RFC 6376)",
            )
        )
    if own_keys:
        records.append(
            DnsRecord(
                f"_adsp._domainkey.{domain}",
                RRType.TXT,
                ttl,
                ADSP_POLICY,
                "ADSP: all mail is DKIM-signed (RFC 5617, historic)",
            )
        )
    records.append(
        DnsRecord(f"_dmarc.{domain}", RRType.TXT, ttl, dmarc_text(plan), "DMARC policy (RFC 7489)")
    )
    return records


def _address_records(plan: DomainPlan) -> list[DnsRecord]:
    return [
        DnsRecord(
            plan.mail_host,
            RRType.A if ip.version == 4 else RRType.AAAA,
            plan.ttl,
            ip,
            "address of the mail exchanger",
        )
        for ip in plan.ips
    ]


def format_records(
    records: Iterable[DnsRecord], line: Callable[[DnsRecord], str], comment: str, title: str = ""
) -> str:
    """One line per record, each after a comment giving its purpose (``comment`` is the format's
    comment marker), under an optional ``title`` comment: the layout both writers share."""
    lines = [f"{comment} {title}"] if title else []
    for record in records:
        if record.purpose:
            lines.append(f"{comment} {record.purpose}")
        lines.append(line(record))
    return "\n".join(lines) + "\n"
