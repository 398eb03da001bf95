"""The DNS lookups an SPF record costs, counted through every include and redirect (RFC 7208 §4.6.4).

:func:`check_host` stops at the first term that matches, so how many lookups one evaluation spends
depends on the client. A domain owner needs the worst case instead — every DNS-querying term of the
record and of every record it reaches — because a client matching only the last term pays for all of
them. :func:`count_lookups` walks the record tree once, without a client, and says what a receiver
would run into: more than 10 DNS-querying terms, more than 2 void lookups, includes that lead
nowhere. Terms whose domain holds macros depend on the client and are counted but not followed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailtoaster.auth.spf.evaluate import RecordSelector, select_spf1
from mailtoaster.auth.spf.record import DNS_MECHANISMS, Directive, Mechanism, SpfSyntaxError, parse_record
from mailtoaster.dns import Resolver, RRType

MAX_RECORDS_WALKED = 50
"""Stop after reading this many records: a tree this size is far over the limit already, and a
hostile one must not keep the walk going."""


@dataclass(frozen=True)
class LookupCount:
    """What the record tree of one domain costs and where it breaks."""

    domain: str
    dns_terms: int = 0
    """``include``, ``a``, ``mx``, ``ptr``, ``exists`` and a followed ``redirect``, across the tree."""
    void_terms: tuple[str, ...] = ()
    """``<domain>: <term>`` for each term whose lookup found nothing (NXDOMAIN or no data)."""
    records: tuple[tuple[str, str], ...] = ()
    """(domain, record) for every SPF record read, the top one first."""
    problems: tuple[str, ...] = ()
    """What makes check_host fail for some client: an include with no record, a syntax error in an
    included record, a loop, a DNS failure."""
    unexpanded: tuple[str, ...] = ()
    """Terms with macros: counted, not followed (their target depends on the client)."""


@dataclass
class _Walk:
    resolver: Resolver
    selector: RecordSelector
    dns_terms: int = 0
    void_terms: list[str] = field(default_factory=list)
    records: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unexpanded: list[str] = field(default_factory=list)

    async def record(self, domain: str, chain: tuple[str, ...]) -> None:
        if len(self.records) >= MAX_RECORDS_WALKED:
            self.problems.append(f"stopped after {MAX_RECORDS_WALKED} records")
            return
        answer = await self.resolver.lookup(domain, RRType.TXT)
        if answer.status.is_temporary_error:
            self.problems.append(f"{domain}: DNS {answer.status.value} looking up its SPF record")
            return
        choice = self.selector(answer.texts())
        if choice.problem or choice.text is None:
            self.problems.append(f"{domain}: {choice.problem or 'no SPF record'}")
            return
        self.records.append((domain, choice.text))
        try:
            parsed = parse_record(choice.text, choice.prefix_length)
        except SpfSyntaxError as exc:
            self.problems.append(f"{domain}: {exc}")
            return
        for directive in parsed.directives:
            await self.term(directive, domain, chain)
        has_all = any(d.mechanism is Mechanism.ALL for d in parsed.directives)
        if parsed.redirect is not None and not has_all:  # with "all" present, redirect is never reached
            self.dns_terms += 1
            target = self.target(parsed.redirect, domain, f"redirect={parsed.redirect}")
            if target is not None:
                await self.follow(target, chain, "redirect")

    async def term(self, directive: Directive, domain: str, chain: tuple[str, ...]) -> None:
        if directive.mechanism not in DNS_MECHANISMS:
            return
        self.dns_terms += 1
        spec = directive.domain_spec
        target = domain if spec is None else self.target(spec, domain, directive.text)
        if target is None or directive.mechanism is Mechanism.PTR:
            return  # ptr looks up the client's address, which a walk without a client cannot
        if directive.mechanism is Mechanism.INCLUDE:
            await self.follow(target, chain, "include")
        elif await self.is_void(directive.mechanism, target, domain):
            self.void_terms.append(f"{domain}: {directive.text}")

    def target(self, spec: str, domain: str, text: str) -> str | None:
        if "%" in spec:
            self.unexpanded.append(f"{domain}: {text}")
            return None
        return spec.rstrip(".").lower()

    async def follow(self, target: str, chain: tuple[str, ...], how: str) -> None:
        if target in chain:
            self.problems.append(f"{how} loop through {target}")
            return
        await self.record(target, (*chain, target))

    async def is_void(self, mechanism: Mechanism, target: str, domain: str) -> bool:
        """Whether the term's lookup finds nothing; ``a`` is void only when neither family answers
        (which family a receiver asks depends on the client)."""
        types = {Mechanism.A: (RRType.A, RRType.AAAA), Mechanism.MX: (RRType.MX,)}.get(mechanism, (RRType.A,))
        statuses = [(await self.resolver.lookup(target, rrtype)).status for rrtype in types]
        failed = [status for status in statuses if status.is_temporary_error]
        if failed:
            self.problems.append(f"{domain}: DNS {failed[0].value} looking up {target} for {mechanism}")
            return False
        return all(status.is_void for status in statuses)


async def count_lookups(
    resolver: Resolver, domain: str, selector: RecordSelector = select_spf1
) -> LookupCount:
    """Walk ``domain``'s SPF record and everything it includes or redirects to; never raises for
    anything DNS or the records hold."""
    walk = _Walk(resolver, selector)
    top = domain.rstrip(".").lower()
    await walk.record(top, (top,))
    return LookupCount(
        top,
        walk.dns_terms,
        tuple(walk.void_terms),
        tuple(walk.records),
        tuple(walk.problems),
        tuple(walk.unexpanded),
    )
