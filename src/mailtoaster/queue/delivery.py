"""One delivery attempt of a queued message: route each domain's recipients, run the SMTP transactions.

Recipients are grouped by domain (or all go in one transaction to the smarthost). For each domain the
addresses from :func:`~mailtoaster.queue.routing.find_destinations` are tried in order until a server
accepts the transaction; a failure before the transaction (no connection, greeting refused, TLS
required but not offered...) moves on to the next address. Up to :data:`DOMAINS_IN_PARALLEL` domains
are delivered at once. Only pending recipients are attempted: a recipient delivered by an earlier
attempt is never sent the message again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

from mailtoaster.dns.types import Resolver
from mailtoaster.queue.address import InvalidAddressError, check_address, domain_of
from mailtoaster.queue.routing import Destination, RouteFailure, find_destinations
from mailtoaster.queue.session import Credentials, Envelope, TlsPolicy, TransactionResult, run_transaction
from mailtoaster.queue.spool import QueueEntry
from mailtoaster.queue.types import DeliveryConfig, DeliveryResult, RecipientOutcome, local_diagnostic

DOMAINS_IN_PARALLEL = 4


class MessageUnreadableError(Exception):
    """The queued message file cannot be read, or grew past the size limit after the check.

    Not an ``OSError`` on purpose: the SMTP session code treats those as network failures."""


class _MessageLoader:
    """Reads the message file once, in a worker thread, and only when a server has accepted recipients."""

    def __init__(self, path: Path, limit: int) -> None:
        self._path = path
        self._limit = limit
        self._data: bytes | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> bytes:
        async with self._lock:
            if self._data is None:
                self._data = await asyncio.to_thread(self._read)
            return self._data

    def _read(self) -> bytes:
        try:
            with self._path.open("rb") as stream:
                data = stream.read(self._limit + 1)
        except OSError as exc:
            raise MessageUnreadableError(f"cannot read {self._path}: {exc.strerror or exc}") from exc
        if len(data) > self._limit:
            raise MessageUnreadableError(f"{self._path} is larger than {self._limit} bytes")
        return data


def _failed(
    recipients: Sequence[str], result: DeliveryResult, status: str, text: str
) -> list[RecipientOutcome]:
    return [RecipientOutcome(r, result, status, local_diagnostic(text)) for r in recipients]


def _check_envelope(sender: str, recipients: Sequence[str]) -> tuple[list[str], list[RecipientOutcome]]:
    """Split the recipients into those that may be sent and outcomes for those that may not."""
    try:
        check_address(sender, role="sender", allow_null=True)
    except InvalidAddressError as exc:
        return [], _failed(recipients, DeliveryResult.PERMANENT, "5.1.7", str(exc))
    valid: list[str] = []
    refused: list[RecipientOutcome] = []
    for recipient in recipients:
        try:
            valid.append(check_address(recipient))
        except InvalidAddressError as exc:
            refused.extend(_failed([recipient], DeliveryResult.PERMANENT, "5.1.3", str(exc)))
    return valid, refused


def _group_by_destination(recipients: Sequence[str], config: DeliveryConfig) -> dict[str, list[str]]:
    if config.smarthost is not None:
        return {config.smarthost.host: list(recipients)} if recipients else {}
    groups: dict[str, list[str]] = {}
    for recipient in recipients:
        groups.setdefault(domain_of(recipient), []).append(recipient)
    return groups


def _tls_policy(config: DeliveryConfig) -> tuple[TlsPolicy, Credentials | None]:
    smarthost = config.smarthost
    if smarthost is not None and smarthost.username is not None and smarthost.password is not None:
        policy = TlsPolicy.VERIFIED if smarthost.verify_certificate else TlsPolicy.REQUIRED
        return policy, Credentials(smarthost.username, smarthost.password)
    return (TlsPolicy.REQUIRED if config.require_tls else TlsPolicy.OPPORTUNISTIC), None


class _Attempt:
    """What every transaction of one attempt shares."""

    def __init__(self, sender: str, size: int, load: _MessageLoader, config: DeliveryConfig) -> None:
        self.sender = sender
        self.size = size
        self.load = load
        self.config = config
        self.tls, self.credentials = _tls_policy(config)
        self.ca_file = config.smarthost.ca_file if config.smarthost else None

    async def at(self, destination: Destination, recipients: tuple[str, ...]) -> TransactionResult:
        """One transaction; after a failed opportunistic TLS handshake, once more in plaintext."""
        envelope = Envelope(self.sender, recipients, self.size)
        result = await self._run(destination, envelope, self.tls)
        if result.tls_failed and self.tls is TlsPolicy.OPPORTUNISTIC:
            result = await self._run(destination, envelope, TlsPolicy.NONE)
        return result

    async def _run(self, destination: Destination, envelope: Envelope, tls: TlsPolicy) -> TransactionResult:
        return await run_transaction(
            destination,
            envelope,
            self.load,
            self.config,
            tls=tls,
            credentials=self.credentials,
            ca_file=self.ca_file,
        )


async def _deliver_to(
    domain: str, recipients: list[str], attempt: _Attempt, resolver: Resolver, rng: random.Random
) -> list[RecipientOutcome]:
    route = await find_destinations(domain, resolver, attempt.config, rng)
    if isinstance(route, RouteFailure):
        return _failed(recipients, route.result, route.status, route.text)
    decided: dict[str, RecipientOutcome] = {}
    remaining = tuple(recipients)
    for destination in route:
        result = await attempt.at(destination, remaining)
        decided.update((outcome.recipient, outcome) for outcome in result.outcomes)
        remaining = tuple(r for r in remaining if decided[r].result is DeliveryResult.TEMPORARY)
        if not result.try_next or not remaining:
            break
    return [decided[r] for r in recipients]


async def deliver(
    entry: QueueEntry,
    message_path: Path,
    resolver: Resolver,
    config: DeliveryConfig,
    *,
    rng: random.Random | None = None,
) -> list[RecipientOutcome]:
    """Try to deliver ``entry``'s pending recipients once; one outcome per pending recipient, in order.

    Never raises for anything a remote server, the network or DNS does; a missing or unreadable
    message file raises ``OSError`` or :class:`MessageUnreadableError` (the runner counts either as
    a temporary failure).
    """
    pending = [r.address for r in entry.pending]
    sendable, outcomes = _check_envelope(entry.sender, pending)
    size = message_path.stat().st_size
    if size > config.max_message_size:
        text = f"message of {size} bytes exceeds the outbound limit of {config.max_message_size}"
        return _failed(pending, DeliveryResult.PERMANENT, "5.3.4", text)
    attempt = _Attempt(entry.sender, size, _MessageLoader(message_path, config.max_message_size), config)
    limit = asyncio.Semaphore(DOMAINS_IN_PARALLEL)
    chooser = rng or random.Random()

    async def one_domain(domain: str, recipients: list[str]) -> list[RecipientOutcome]:
        async with limit:
            return await _deliver_to(domain, recipients, attempt, resolver, chooser)

    groups = _group_by_destination(sendable, config)
    results = await asyncio.gather(*(one_domain(domain, group) for domain, group in groups.items()))
    outcomes.extend(outcome for result in results for outcome in result)
    by_recipient = {outcome.recipient: outcome for outcome in outcomes}
    return [by_recipient[r] for r in pending]
