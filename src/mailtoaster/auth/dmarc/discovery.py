"""Finding DMARC records and Organizational Domains: the RFC 9989 DNS Tree Walk and the RFC 7489
Public Suffix List method.

Every ``_dmarc`` query of one check goes through one :class:`PolicyFinder`, which asks each name once
and remembers the answers in order, so a report can list exactly what was looked up and the Tree
Walks for the Author Domain and for the authenticated identifiers share their queries.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from mailtoaster.auth.dmarc.record import DmarcRecord, PsdFlag, is_dmarc_record, parse_dmarc_record
from mailtoaster.dns import DnsStatus, Resolver, RRType

__all__ = [
    "MAX_TREE_WALK_QUERIES",
    "PolicyFinder",
    "PolicyLookup",
    "TreeWalk",
    "psl_organizational_domain",
    "tree_walk",
    "tree_walk_targets",
]

MAX_TREE_WALK_QUERIES = 8
"""RFC 9989 §4.10: "Author Domains with more than eight labels do not result in more than eight DNS
queries"."""


@dataclass(frozen=True)
class PolicyLookup:
    """The answer to one ``_dmarc.<domain>`` TXT query, reduced to what DMARC needs."""

    domain: str
    status: DnsStatus
    record: DmarcRecord | None = None
    """The DMARC record, when exactly one TXT record there starts with ``v=DMARC1``."""
    dmarc_records: int = 0
    """How many TXT records there start with ``v=DMARC1`` (more than one: all are discarded)."""
    detail: str = ""

    @property
    def temporary_error(self) -> bool:
        return self.status.is_temporary_error

    @property
    def discarded(self) -> bool:
        return self.dmarc_records > 1

    def describe(self) -> str:
        name = f"_dmarc.{self.domain}"
        if self.temporary_error:
            return f"DNS {self.status.value} looking up {name} TXT"
        if self.discarded:
            return f"{self.dmarc_records} DMARC records at {name}: all discarded"
        return f"DMARC record at {name}" if self.record is not None else f"no DMARC record at {name}"


class PolicyFinder:
    """Queries ``_dmarc`` names for one check, each at most once, and logs them in order."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._answers: dict[str, PolicyLookup] = {}

    @property
    def lookups(self) -> tuple[PolicyLookup, ...]:
        return tuple(self._answers.values())

    async def lookup(self, domain: str) -> PolicyLookup:
        if domain not in self._answers:
            self._answers[domain] = await self._query(domain)
        return self._answers[domain]

    async def _query(self, domain: str) -> PolicyLookup:
        answer = await self._resolver.lookup(f"_dmarc.{domain}", RRType.TXT)
        if answer.status is not DnsStatus.NOERROR:
            return PolicyLookup(domain, answer.status, detail=answer.detail)
        texts = [t.decode("latin-1") for t in answer.texts()]
        candidates = [text for text in texts if is_dmarc_record(text)]
        record = parse_dmarc_record(candidates[0]) if len(candidates) == 1 else None
        return PolicyLookup(domain, answer.status, record, len(candidates))


def tree_walk_targets(domain: str) -> list[str]:
    """The names a Tree Walk starting at ``domain`` queries, in order (RFC 9989 §4.10 steps 3-7).

    The start itself; then, for fewer than eight labels, the parent, or else the last seven labels;
    then one label fewer each time, down to the top-level domain.
    """
    labels = domain.split(".")
    targets = [domain]
    rest = labels[1:] if len(labels) < MAX_TREE_WALK_QUERIES else labels[-(MAX_TREE_WALK_QUERIES - 1) :]
    while rest:
        targets.append(".".join(rest))
        rest = rest[1:]
    return targets


@dataclass(frozen=True)
class TreeWalk:
    """One DNS Tree Walk and the Organizational Domain it determined."""

    start: str
    lookups: tuple[PolicyLookup, ...]
    organizational_domain: str
    error: str = ""
    """Non-empty when a query failed temporarily: the walk is incomplete and decides nothing."""

    @property
    def public_suffix(self) -> PolicyLookup | None:
        """The lookup that found a ``psd=y`` record, if the walk stopped at one."""
        last = self.lookups[-1] if self.lookups else None
        if last is not None and last.record is not None and last.record.psd is PsdFlag.YES:
            return last
        return None

    def lookup_for(self, domain: str) -> PolicyLookup | None:
        return next((lookup for lookup in self.lookups if lookup.domain == domain), None)


async def tree_walk(finder: PolicyFinder, start: str) -> TreeWalk:
    """RFC 9989 §4.10: query up the tree, stopping at a single record with ``psd=y`` or ``psd=n``."""
    lookups: list[PolicyLookup] = []
    for target in tree_walk_targets(start):
        lookup = await finder.lookup(target)
        lookups.append(lookup)
        if lookup.temporary_error:
            return TreeWalk(start, tuple(lookups), start, lookup.describe())
        if lookup.record is not None and lookup.record.psd is not PsdFlag.UNKNOWN:
            break
    return TreeWalk(start, tuple(lookups), _organizational_domain(start, lookups))


def _organizational_domain(start: str, lookups: list[PolicyLookup]) -> str:
    """RFC 9989 §4.10.2: among the names with a record, longest first, ``psd=n`` is the
    Organizational Domain; ``psd=y`` (not at the start) makes it the name one label below; otherwise
    it is the name with the fewest labels; with no record at all, the start itself."""
    found = [(lookup.domain, lookup.record) for lookup in lookups if lookup.record is not None]
    for domain, record in found:
        if record.psd is PsdFlag.NO:
            return domain
        if record.psd is PsdFlag.YES and domain != start:
            return _one_label_below(start, domain)
    return found[-1][0] if found else start


def _one_label_below(start: str, ancestor: str) -> str:
    labels = start.split(".")
    return ".".join(labels[-(ancestor.count(".") + 2) :])


@functools.cache
def _public_suffix_list() -> PublicSuffixList:
    """The list the ``publicsuffixlist`` package ships (no network), ICANN and private sections."""
    return PublicSuffixList()


def psl_organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix that matches the most labels, plus one more label.

    A name that is itself a public suffix (``co.uk``) has no such label; it is taken as its own
    Organizational Domain, so it aligns only with itself.
    """
    suffix: str | None = _public_suffix_list().privatesuffix(domain)
    return suffix or domain
