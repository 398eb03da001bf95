"""Sender ID (RFC 4406, with the PRA of RFC 4407): SPF's evaluation with scoped ``spf2.0`` records.

The evaluation itself is SPF's check_host(); what Sender ID changes is which record a domain's TXT
records yield for a scope (:func:`scoped_selector`) and which identity is checked: the PRA from the
message headers (scope ``pra``) or the MAIL FROM (scope ``mfrom``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mailtoaster.auth.pra import PraResult, find_pra
from mailtoaster.auth.spf import (
    RecordChoice,
    RecordSelector,
    SpfOptions,
    SpfOutcome,
    SpfResult,
    check_host,
    identity_of,
    select_spf1,
)
from mailtoaster.dns import IPAddress, Resolver
from mailtoaster.message import Message

_SPF2_VERSION = re.compile(r"^spf2\.0/([^ ]*)(?: |$)", re.I)


class Scope(enum.StrEnum):
    MFROM = "mfrom"
    PRA = "pra"


def record_scopes(text: str) -> tuple[frozenset[str], int] | None:
    """For an ``spf2.0/<scopes>`` record: its scopes (lower case) and the version section's length;
    None for anything else. ``v=spf1`` is not handled here."""
    match = _SPF2_VERSION.match(text)
    if match is None:
        return None
    scopes = frozenset(scope.strip().lower() for scope in match.group(1).split(","))
    return scopes, len("spf2.0/") + len(match.group(1))


def scoped_selector(scope: Scope) -> RecordSelector:
    """RFC 4406 §4.4: keep the records for the scope; ``spf2.0`` records covering it are preferred
    over ``v=spf1`` ones (which cover both scopes); more than one remaining is a permerror."""

    def select(texts: Sequence[bytes]) -> RecordChoice:
        decoded = [t.decode("latin-1") for t in texts]
        scoped: list[tuple[str, int]] = []
        for text in decoded:
            found = record_scopes(text)
            if found is not None and scope.value in found[0]:
                scoped.append((text, found[1]))
        if len(scoped) > 1:
            return RecordChoice(None, problem=f"more than one spf2.0 record for scope {scope}")
        if scoped:
            return RecordChoice(scoped[0][0], prefix_length=scoped[0][1])
        return select_spf1(texts)

    return select


def select_spf1_then_mfrom(texts: Sequence[bytes]) -> RecordChoice:
    """Lenient SPF: ``v=spf1`` when there is one, else an ``spf2.0`` record with the mfrom scope
    (what Mail::SPF::Iterator does for domains that only ever published Sender ID records)."""
    choice = select_spf1(texts)
    if choice.text is not None or choice.problem:
        return choice
    return scoped_selector(Scope.MFROM)(texts)


@dataclass(frozen=True)
class SenderIdOutcome:
    scope: Scope
    result: SpfResult
    identity: str
    """The address checked: the PRA, or the MAIL FROM (postmaster@helo for the null sender)."""
    spf: SpfOutcome | None
    """The underlying evaluation; None when no identity could be determined."""
    pra: PraResult | None = None
    reason: str = ""


async def check_mfrom(
    resolver: Resolver, ip: IPAddress, mail_from: str, helo: str, options: SpfOptions | None = None
) -> SenderIdOutcome:
    """The RFC 4406 check of the MAIL FROM identity (scope ``mfrom``)."""
    options = replace(options or SpfOptions(), record_selector=scoped_selector(Scope.MFROM))
    identity, sender, domain = identity_of(mail_from, helo)
    outcome = await check_host(resolver, ip, domain, sender, helo, identity=identity, options=options)
    return SenderIdOutcome(Scope.MFROM, outcome.result, sender, outcome, reason=outcome.reason)


async def check_pra(
    resolver: Resolver, ip: IPAddress, message: Message, helo: str, options: SpfOptions | None = None
) -> SenderIdOutcome:
    """The RFC 4406 check of the message's Purported Responsible Address (scope ``pra``).

    A message from which RFC 4407 finds no PRA gets ``permerror`` (RFC 4406 §4.1: the message is
    ill-formed for Sender ID)."""
    pra = find_pra(message)
    if pra.address is None:
        return SenderIdOutcome(Scope.PRA, SpfResult.PERMERROR, "", None, pra, reason=pra.reason or "no PRA")
    options = replace(options or SpfOptions(), record_selector=scoped_selector(Scope.PRA))
    outcome = await check_host(
        resolver, ip, pra.domain or "", pra.address, helo, identity="pra", options=options
    )
    return SenderIdOutcome(Scope.PRA, outcome.result, pra.address, outcome, pra, outcome.reason)
