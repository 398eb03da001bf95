"""check_host() of RFC 7208 §4, with the processing limits of §4.6.4.

One :class:`_Evaluation` holds the state that spans include and redirect (the lookup counters, the
include chain), so the limits apply to the whole check as the RFC requires.
"""

from __future__ import annotations

import enum
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mailtoaster.auth.spf.macro import (
    MacroContext,
    MacroSyntaxError,
    expand,
    parse_domain_spec,
    parse_macro_string,
    truncate_domain,
)
from mailtoaster.auth.spf.record import (
    DNS_MECHANISMS,
    Directive,
    Mechanism,
    Qualifier,
    SpfRecord,
    SpfSyntaxError,
    is_spf1_record,
    parse_record,
)
from mailtoaster.dns import Answer, DnsStatus, IPAddress, Resolver, RRType

MAX_DNS_MECHANISMS = 10
MAX_VOID_LOOKUPS = 2
MAX_MX_NAMES = 10
MAX_PTR_NAMES = 10


class SpfResult(enum.StrEnum):
    """The result keywords of RFC 7208 §2.6 (also RFC 4406's for Sender ID)."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


_QUALIFIER_RESULT = {
    Qualifier.PASS: SpfResult.PASS,
    Qualifier.FAIL: SpfResult.FAIL,
    Qualifier.SOFTFAIL: SpfResult.SOFTFAIL,
    Qualifier.NEUTRAL: SpfResult.NEUTRAL,
}


class _Abort(Exception):
    """Stops the evaluation with a temperror or permerror from anywhere inside it."""

    def __init__(self, result: SpfResult, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


@dataclass(frozen=True)
class RecordChoice:
    """The record chosen at a domain, or why there is none usable."""

    text: str | None
    prefix_length: int = 0
    problem: str = ""
    """Non-empty with a permerror cause (several records, say)."""


RecordSelector = Callable[[Sequence[bytes]], RecordChoice]


def select_spf1(texts: Sequence[bytes]) -> RecordChoice:
    """RFC 7208 §4.5: the TXT records that begin ``v=spf1``; more than one is a permerror."""
    candidates = [t for t in texts if is_spf1_record(t.decode("latin-1"))]
    if not candidates:
        return RecordChoice(None)
    if len(candidates) > 1:
        return RecordChoice(None, problem="more than one v=spf1 record")
    return RecordChoice(candidates[0].decode("latin-1"), prefix_length=6)


@dataclass(frozen=True)
class SpfOptions:
    receiver: str = "unknown"
    """This server's name: the ``r`` macro and the Received-SPF receiver."""
    default_explanation: str = "See https://www.open-spf.org/Why?s=%{s};i=%{i};r=%{r}"
    """Used for a fail when the record gives no usable ``exp=`` (macro-expanded)."""
    timestamp: Callable[[], int] = field(default=lambda: int(time.time()))
    record_selector: RecordSelector = select_spf1


@dataclass(frozen=True)
class SpfOutcome:
    """Everything a report, a header or a policy decision needs to know about one check."""

    result: SpfResult
    domain: str
    """The domain check_host() started from."""
    sender: str
    """The identity checked, ``postmaster@`` added where it had no local part."""
    ip: IPAddress
    helo: str
    identity: str = "mailfrom"
    """``mailfrom`` or ``helo`` (RFC 7208 §2.3, §2.4); Sender ID also uses ``pra``."""
    record: str | None = None
    """The top-level record used, if one was found."""
    mechanism: str | None = None
    """The term that decided the result (``default`` when none matched)."""
    explanation: str | None = None
    """For ``fail`` only: the expanded ``exp=`` text or the default explanation."""
    reason: str = ""
    """Why, in a sentence: the matched term, or the error."""
    dns_lookups: int = 0
    void_lookups: int = 0
    records_used: tuple[tuple[str, str], ...] = ()
    """(domain, record) for every SPF record the evaluation read, in order: the top one first, then
    those reached through include and redirect."""


class _Evaluation:
    def __init__(
        self, resolver: Resolver, ip: IPAddress, sender: str, helo: str, options: SpfOptions
    ) -> None:
        self.resolver = resolver
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.options = options
        self.timestamp = options.timestamp()
        self.dns_lookups = 0
        self.void_lookups = 0
        self.include_chain: list[str] = []
        self.records_used: list[tuple[str, str]] = []
        self._validated_names: dict[str, str] = {}

    # --- DNS helpers -------------------------------------------------------------------------

    async def query(self, name: str, rrtype: RRType, *, count_void: bool = True) -> Answer:
        answer = await self.resolver.lookup(name, rrtype)
        if answer.status.is_temporary_error:
            raise _Abort(SpfResult.TEMPERROR, f"DNS {answer.status.value} looking up {name} {rrtype}")
        if count_void and answer.status.is_void:
            self.void_lookups += 1
            if self.void_lookups > MAX_VOID_LOOKUPS:
                raise _Abort(
                    SpfResult.PERMERROR, f"more than {MAX_VOID_LOOKUPS} void DNS lookups (RFC 7208 4.6.4)"
                )
        return answer

    def count_dns_term(self, what: str) -> None:
        self.dns_lookups += 1
        if self.dns_lookups > MAX_DNS_MECHANISMS:
            raise _Abort(
                SpfResult.PERMERROR,
                f"more than {MAX_DNS_MECHANISMS} DNS-querying terms (at {what}; RFC 7208 4.6.4)",
            )

    def context(self, domain: str) -> MacroContext:
        return MacroContext(self.sender, domain, self.ip, self.helo, self.options.receiver, self.timestamp)

    async def expand_domain(self, spec: str, domain: str) -> str:
        tokens = parse_domain_spec(spec)
        expanded = await expand(tokens, self.context(domain), lambda: self.validated_name(domain))
        return truncate_domain(expanded.rstrip(".") if expanded != "." else expanded)

    async def validated_name(self, domain: str) -> str:
        """The ``p`` macro (§7.3): a validated name of the client IP, preferring ``domain`` itself,
        then a subdomain of it, then any; ``unknown`` when there is none or DNS fails."""
        if domain not in self._validated_names:
            try:
                names = await self.validated_ptr_names()
            except _Abort:
                names = []
            self._validated_names[domain] = _pick_name(names, domain)
        return self._validated_names[domain]

    async def validated_ptr_names(self) -> list[str]:
        """Forward-confirmed names of the client IP (§5.5): PTR names whose A/AAAA include the IP."""
        answer = await self.resolver.lookup(self.ip.reverse_pointer, RRType.PTR)
        if answer.status is not DnsStatus.NOERROR:
            return []
        rrtype = RRType.A if self.ip.version == 4 else RRType.AAAA
        validated: list[str] = []
        for name in answer.names()[:MAX_PTR_NAMES]:
            forward = await self.resolver.lookup(name, rrtype)
            if self.ip in forward.addresses():
                validated.append(name)
        return validated

    # --- check_host --------------------------------------------------------------------------

    async def check_host(self, domain: str) -> tuple[SpfResult, str, str | None, str | None]:
        """Returns (result, reason, matched term, explanation) for one domain; nested calls share
        this evaluation's counters."""
        if not valid_domain(domain):
            return SpfResult.NONE, f"{domain!r} is not a valid domain name", None, None
        record, reason = await self.fetch_record(domain)
        if record is None:
            return SpfResult.NONE, reason, None, None
        for directive in record.directives:
            if await self.matches(directive, domain):
                result = _QUALIFIER_RESULT[directive.qualifier]
                explanation = await self.explain(record, domain) if result is SpfResult.FAIL else None
                return result, f"matched {directive.text}", directive.text, explanation
        if record.redirect is not None:
            return await self.follow_redirect(record.redirect, domain)
        return SpfResult.NEUTRAL, "no mechanism matched and there is no redirect", "default", None

    async def fetch_record(self, domain: str) -> tuple[SpfRecord | None, str]:
        answer = await self.query(domain, RRType.TXT, count_void=False)
        choice = self.options.record_selector(answer.texts())
        if choice.problem:
            raise _Abort(SpfResult.PERMERROR, f"{domain}: {choice.problem}")
        if choice.text is None:
            return None, f"no SPF record at {domain}"
        self.records_used.append((domain, choice.text))
        try:
            return parse_record(choice.text, choice.prefix_length), ""
        except SpfSyntaxError as exc:
            raise _Abort(SpfResult.PERMERROR, f"{domain}: {exc}") from exc

    async def follow_redirect(self, spec: str, domain: str) -> tuple[SpfResult, str, str | None, str | None]:
        self.count_dns_term(f"redirect={spec}")
        target = await self.expand_domain(spec, domain)
        result, reason, term, explanation = await self.check_host(target)
        if result is SpfResult.NONE:
            raise _Abort(SpfResult.PERMERROR, f"redirect to {target}, which has no SPF record")
        return result, reason, term, explanation

    async def matches(self, directive: Directive, domain: str) -> bool:
        mechanism = directive.mechanism
        if mechanism in DNS_MECHANISMS:
            self.count_dns_term(directive.text)
        if mechanism is Mechanism.ALL:
            return True
        if mechanism in (Mechanism.IP4, Mechanism.IP6):
            assert directive.network is not None
            return self.ip.version == directive.network.version and self.ip in directive.network
        target = (
            domain
            if directive.domain_spec is None
            else await self.expand_domain(directive.domain_spec, domain)
        )
        if mechanism is Mechanism.INCLUDE:
            return await self.match_include(target)
        if mechanism is Mechanism.A:
            return await self.match_addresses(target, directive)
        if mechanism is Mechanism.MX:
            return await self.match_mx(target, directive)
        if mechanism is Mechanism.PTR:
            return await self.match_ptr(target)
        return await self.match_exists(target)

    async def match_include(self, target: str) -> bool:
        if target in self.include_chain:
            raise _Abort(SpfResult.PERMERROR, f"include loop through {target}")
        self.include_chain.append(target)
        try:
            result, reason, _, _ = await self.check_host(target)
        finally:
            self.include_chain.pop()
        if result in (SpfResult.TEMPERROR, SpfResult.PERMERROR):
            raise _Abort(result, f"include:{target}: {reason}")
        if result is SpfResult.NONE:
            raise _Abort(SpfResult.PERMERROR, f"include:{target} has no SPF record")
        return result is SpfResult.PASS

    def _in_network(self, address: IPAddress, directive: Directive) -> bool:
        if address.version != self.ip.version:
            return False
        prefix = directive.cidr4 if address.version == 4 else directive.cidr6
        return self.ip in ipaddress.ip_network(f"{address}/{prefix}", strict=False)

    async def match_addresses(self, target: str, directive: Directive, *, count_void: bool = True) -> bool:
        if not valid_domain(target):
            return False
        rrtype = RRType.A if self.ip.version == 4 else RRType.AAAA
        answer = await self.query(target, rrtype, count_void=count_void)
        return any(self._in_network(address, directive) for address in answer.addresses())

    async def match_mx(self, target: str, directive: Directive) -> bool:
        if not valid_domain(target):
            return False
        answer = await self.query(target, RRType.MX)
        exchanges = [mx.exchange for mx in sorted(answer.mx_records(), key=lambda m: m.preference)]
        if len(exchanges) > MAX_MX_NAMES:
            raise _Abort(
                SpfResult.PERMERROR, f"{target} has more than {MAX_MX_NAMES} MX records (RFC 7208 4.6.4)"
            )
        for exchange in exchanges:
            if exchange and await self.match_addresses(exchange, directive, count_void=False):
                return True
        return False

    async def match_ptr(self, target: str) -> bool:
        wanted = target.lower()
        for name in await self.validated_ptr_names():
            lowered = name.lower()
            if lowered == wanted or lowered.endswith("." + wanted):
                return True
        return False

    async def match_exists(self, target: str) -> bool:
        if not valid_domain(target):
            return False
        answer = await self.query(target, RRType.A)
        return bool(answer.addresses())

    async def explain(self, record: SpfRecord, domain: str) -> str | None:
        """§6.2: the expanded ``exp=`` text; any problem with it falls back to the default."""
        if record.explanation is not None:
            text = await self._explanation_text(record.explanation, domain)
            if text is not None:
                return text
        return await self._expand_text(self.options.default_explanation, domain)

    async def _explanation_text(self, spec: str, domain: str) -> str | None:
        try:
            target = await self.expand_domain(spec, domain)
        except MacroSyntaxError:
            return None
        if not valid_domain(target):
            return None
        answer = await self.resolver.lookup(target, RRType.TXT)
        texts = answer.texts()
        if answer.status is not DnsStatus.NOERROR or len(texts) != 1:
            return None
        try:
            decoded = texts[0].decode("ascii")
        except UnicodeDecodeError:
            return None
        return await self._expand_text(decoded, domain)

    async def _expand_text(self, text: str, domain: str) -> str | None:
        try:
            tokens = parse_macro_string(text, exp_letters=True)
        except MacroSyntaxError:
            return None
        return await expand(tokens, self.context(domain), lambda: self.validated_name(domain))


def _pick_name(names: list[str], domain: str) -> str:
    lowered = domain.lower()
    for name in names:
        if name.lower() == lowered:
            return name
    for name in names:
        if name.lower().endswith("." + lowered):
            return name
    return names[0] if names else "unknown"


def valid_domain(domain: str) -> bool:
    """§4.3: a multi-label name with labels of 1 to 63 octets and at most 253 octets in all (an
    address literal such as ``[192.0.2.1]`` is not a domain)."""
    name = domain[:-1] if domain.endswith(".") else domain
    if not name or len(name) > 253 or "." not in name or name.startswith("["):
        return False
    return all(0 < len(label) <= 63 for label in name.split("."))


async def check_host(
    resolver: Resolver,
    ip: IPAddress,
    domain: str,
    sender: str,
    helo: str = "",
    *,
    identity: str = "mailfrom",
    options: SpfOptions | None = None,
) -> SpfOutcome:
    """RFC 7208 check_host(<ip>, <domain>, <sender>); never raises for anything DNS or records hold."""
    options = options or SpfOptions()
    ip = _unmap(ip)
    evaluation = _Evaluation(resolver, ip, sender, helo, options)
    try:
        result, reason, term, explanation = await evaluation.check_host(domain)
    except _Abort as abort:
        result, reason, term, explanation = abort.result, abort.reason, None, None
    except MacroSyntaxError as exc:
        result, reason, term, explanation = SpfResult.PERMERROR, str(exc), None, None
    top = evaluation.records_used[0] if evaluation.records_used else None
    return SpfOutcome(
        result=result,
        domain=domain,
        sender=sender,
        ip=ip,
        helo=helo,
        identity=identity,
        record=top[1] if top and top[0] == domain else None,
        mechanism=term,
        explanation=explanation,
        reason=reason,
        dns_lookups=evaluation.dns_lookups,
        void_lookups=evaluation.void_lookups,
        records_used=tuple(evaluation.records_used),
    )


def _unmap(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 client is the IPv4 client it maps (RFC 4291 §2.5.5.2)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
