"""What every check of one run shares: the domain, the server addresses, the keys, the records the
domain should publish, and a resolver that asks each question once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from mailtoaster.dns import Answer, IPAddress, Resolver, RRType, normalise_name
from mailtoaster.doctor.findings import Finding, Suggestion, error, suggest
from mailtoaster.keys import StoredKey
from mailtoaster.records import DnsRecord, DomainPlan


class OnceResolver:
    """Asks each (name, type) once per run, whatever several checks ask and however they overlap.

    Unlike the live resolver's cache this also keeps timeouts and SERVFAIL for the run: a name that
    does not answer would otherwise cost a full timeout to every check that needs it. Concurrent
    askers of one name share the one query in flight.
    """

    def __init__(self, inner: Resolver) -> None:
        self._inner = inner
        self._answers: dict[tuple[str, RRType], asyncio.Task[Answer]] = {}

    async def lookup(self, name: str, rrtype: RRType) -> Answer:
        key = (normalise_name(name), rrtype)
        if key not in self._answers:
            self._answers[key] = asyncio.ensure_future(self._inner.lookup(name, rrtype))
        return await asyncio.shield(self._answers[key])


@dataclass(frozen=True)
class CheckContext:
    domain: str
    resolver: Resolver
    plan: DomainPlan
    """The inputs of ``dns records``: the suggestions come from it."""
    planned: tuple[DnsRecord, ...]
    """What ``dns records`` prints for the domain: every record the doctor may suggest."""
    ips: tuple[IPAddress, ...] = ()
    """The mail server's addresses (``--ip``): the ones that send, so SPF must list them."""
    keys: tuple[StoredKey, ...] = ()
    keys_dir: Path = field(default_factory=Path)

    def planned_records(self, name: str, rrtype: RRType | None = None) -> list[Suggestion]:
        """The planned records at ``name`` (of ``rrtype``), ready to show."""
        wanted = normalise_name(name)
        return [
            suggest(record)
            for record in self.planned
            if normalise_name(record.name) == wanted and (rrtype is None or record.rrtype is rrtype)
        ]


def dns_failure(check: str, answer: Answer, what: str) -> Finding:
    """A lookup that timed out or failed: nothing can be said about ``what``, and receivers asking the
    same servers cannot read it either, so it is an error."""
    detail = f" ({answer.detail})" if answer.detail else ""
    return error(
        check,
        f"cannot check {what}: DNS {answer.status.value} looking up {answer.name} {answer.rrtype}{detail}",
        hint="make sure the domain's name servers answer; run the check again",
    )
