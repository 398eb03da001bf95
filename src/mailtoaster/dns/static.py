"""A resolver that answers from records held in memory: the engine behind the zone-file resolver and
the test-suite drivers (which also need to simulate timeouts, something a zone file cannot say)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from mailtoaster.dns.types import Answer, DnsStatus, Rdata, RRType, normalise_name

MAX_CNAME_CHAIN = 8


class StaticResolver:
    """Answers like a recursive resolver would from a fixed set of records.

    CNAMEs are followed (as a recursive server does) up to :data:`MAX_CNAME_CHAIN` links; a loop or a
    longer chain is SERVFAIL. ``timeouts`` maps a name to the record types that still answer: every
    other type at that name times out. With ``empty_non_terminals`` a name that exists only as the
    parent of other names answers "no data" rather than NXDOMAIN, as DNS does (RFC 8020).
    """

    def __init__(
        self,
        records: Mapping[tuple[str, RRType], Iterable[Rdata]] | None = None,
        *,
        ttl: int = 3600,
        timeouts: Mapping[str, Iterable[RRType]] | None = None,
        empty_non_terminals: bool = True,
    ) -> None:
        self._records: dict[tuple[str, RRType], list[Rdata]] = defaultdict(list)
        self._names: set[str] = set()
        self._ttl = ttl
        self._timeouts: dict[str, frozenset[RRType]] = {}
        self._empty_non_terminals = empty_non_terminals
        for (name, rrtype), rdatas in (records or {}).items():
            for rdata in rdatas:
                self.add(name, rrtype, rdata)
        for name, answering in (timeouts or {}).items():
            self.add_timeout(name, answering)

    def add(self, name: str, rrtype: RRType, rdata: Rdata) -> None:
        key = normalise_name(name)
        self._records[(key, rrtype)].append(rdata)
        self._names.add(key)

    def add_timeout(self, name: str, answering: Iterable[RRType] = ()) -> None:
        key = normalise_name(name)
        self._timeouts[key] = frozenset(answering)
        self._names.add(key)

    def _name_exists(self, key: str) -> bool:
        if key in self._names:
            return True
        if not self._empty_non_terminals:
            return False
        suffix = "." + key
        return any(existing.endswith(suffix) for existing in self._names)

    async def lookup(self, name: str, rrtype: RRType) -> Answer:
        return self.lookup_sync(name, rrtype)

    def lookup_sync(self, name: str, rrtype: RRType) -> Answer:
        key = normalise_name(name)
        for _ in range(MAX_CNAME_CHAIN + 1):
            if key in self._timeouts and rrtype not in self._timeouts[key]:
                return Answer(name, rrtype, DnsStatus.TIMEOUT, detail=f"query for {key} {rrtype} timed out")
            found = self._records.get((key, rrtype))
            if found:
                return Answer(name, rrtype, DnsStatus.NOERROR, tuple(found), self._ttl)
            alias = self._records.get((key, RRType.CNAME))
            if alias and rrtype is not RRType.CNAME:
                key = normalise_name(str(alias[0]))
                continue
            status = DnsStatus.NODATA if self._name_exists(key) else DnsStatus.NXDOMAIN
            return Answer(name, rrtype, status, ttl=self._ttl)
        return Answer(name, rrtype, DnsStatus.SERVFAIL, detail=f"CNAME chain from {name} too long or looping")
