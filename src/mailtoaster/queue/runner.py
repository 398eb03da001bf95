"""The queue runner: delivers what is due, applies the retry schedule, bounces what failed.

For each attempt the runner (1) calls :func:`~mailtoaster.queue.delivery.deliver` for the pending
recipients, (2) records the outcomes durably — delivered recipients are marked before anything else,
so a crash cannot make them be sent again — together with the next attempt time or, once the queue
lifetime is over, a bounce of every recipient still pending, (3) hands a DSN for the newly bounced
recipients to the ``bounce`` callback and records that it did, and (4) removes the entry once
nothing is left to do. A crash between (2) and (3) sends the DSN at the next run: a sender may get a
bounce twice, never zero times.

Every attempt logs one line per group of recipients with the same result, on the
``mailtoaster.queue`` logger, for example::

    queue id=0614a3b2c1d00-7f3a9c21e4 from=<a@example.org> to=<b@example.net>,<c@example.net>
    relay=mx.example.net[192.0.2.7]:25 tls=yes result=deferred status=4.7.1 delay=312s attempt=2
    reply="smtp; 451 4.7.1 greylisted, try again later"
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from itertools import groupby

from mailtoaster.dns.types import Resolver
from mailtoaster.queue.delivery import deliver
from mailtoaster.queue.dsn import FailedRecipient, build_dsn, read_header_section
from mailtoaster.queue.schedule import DEFAULT_POLICY, RetryPolicy, next_attempt_time, retry_delay
from mailtoaster.queue.spool import (
    Clock,
    EntryNotFoundError,
    Queue,
    QueueEntry,
    QueueError,
    Recipient,
    RecipientState,
)
from mailtoaster.queue.types import DeliveryConfig, DeliveryResult, RecipientOutcome, local_diagnostic

log = logging.getLogger("mailtoaster.queue")

BounceSender = Callable[[bytes, str], Awaitable[None]]
"""``bounce(dsn_bytes, original_sender)``: the server decides where a bounce goes (local delivery or
the queue, with the null sender)."""
DEFAULT_CONCURRENCY = 8
DEFAULT_SCAN_INTERVAL = 60.0
EXPIRED_STATUS = "4.4.7"
"""RFC 3463 "delivery time expired": used when a message expires before any attempt said more."""

_STATE_OF_RESULT = {
    DeliveryResult.DELIVERED: RecipientState.DELIVERED,
    DeliveryResult.PERMANENT: RecipientState.BOUNCED,
    DeliveryResult.TEMPORARY: RecipientState.PENDING,
}


def apply_outcomes(entry: QueueEntry, outcomes: Sequence[RecipientOutcome]) -> QueueEntry:
    """``entry`` with each outcome's recipient moved to its new state and its last reply recorded."""
    by_recipient = {outcome.recipient: outcome for outcome in outcomes}

    def updated(recipient: Recipient) -> Recipient:
        outcome = by_recipient.get(recipient.address)
        if outcome is None or recipient.state is not RecipientState.PENDING:
            return recipient
        return replace(
            recipient,
            state=_STATE_OF_RESULT[outcome.result],
            status=outcome.status,
            diagnostic=outcome.diagnostic,
            remote_mta=outcome.remote_mta,
        )

    return replace(entry, recipients=tuple(updated(r) for r in entry.recipients))


def expire(entry: QueueEntry) -> QueueEntry:
    """Bounce every pending recipient of an entry whose queue lifetime is over."""

    def expired(recipient: Recipient) -> Recipient:
        if recipient.state is not RecipientState.PENDING:
            return recipient
        status = recipient.status if recipient.status.startswith("4.") else EXPIRED_STATUS
        diagnostic = recipient.diagnostic or local_diagnostic("delivery time expired")
        return replace(recipient, state=RecipientState.BOUNCED, status=status, diagnostic=diagnostic)

    return replace(entry, recipients=tuple(expired(r) for r in entry.recipients))


def schedule_after_attempt(entry: QueueEntry, now: float, policy: RetryPolicy) -> QueueEntry:
    """Count the attempt; set the next one, or bounce what is pending if the lifetime is over."""
    attempted = replace(entry, attempts=entry.attempts + 1)
    if not attempted.pending:
        return attempted
    next_time = next_attempt_time(attempted.attempts, attempted.created, now, policy)
    if next_time is None:
        return expire(attempted)
    return replace(attempted, next_attempt=next_time)


def _relay_of(outcome: RecipientOutcome) -> str:
    return outcome.relay or "none"


def log_attempt(entry: QueueEntry, outcomes: Sequence[RecipientOutcome], now: float) -> None:
    """One line per group of recipients that share relay, result, status and reply."""

    def key(outcome: RecipientOutcome) -> tuple[str, str, str, str, bool]:
        return (_relay_of(outcome), outcome.result.value, outcome.status, outcome.diagnostic, outcome.tls)

    for (relay, result, status, diagnostic, tls), group in groupby(sorted(outcomes, key=key), key=key):
        recipients = ",".join(f"<{outcome.recipient}>" for outcome in group)
        level = logging.INFO if result != DeliveryResult.PERMANENT else logging.WARNING
        log.log(
            level,
            "queue id=%s from=<%s> to=%s relay=%s tls=%s result=%s status=%s delay=%.0fs attempt=%d "
            'reply="%s"',
            entry.id,
            entry.sender,
            recipients,
            relay,
            "yes" if tls else "no",
            result,
            status,
            entry.age(now),
            entry.attempts + 1,
            diagnostic.replace('"', "'"),
            extra={"queue_id": entry.id, "result": result, "relay": relay},
        )


def _internal_error_outcomes(entry: QueueEntry, exc: BaseException) -> list[RecipientOutcome]:
    text = local_diagnostic(f"internal error: {type(exc).__name__}: {exc}")
    return [RecipientOutcome(r.address, DeliveryResult.TEMPORARY, "4.3.0", text) for r in entry.pending]


def _failed_recipients(entry: QueueEntry) -> list[FailedRecipient]:
    """The DSN lines for the unreported bounces; a 4.x.x status means the lifetime ran out (see
    :func:`expire`), which the human-readable part says."""
    return [
        FailedRecipient(
            r.address,
            r.status,
            r.diagnostic,
            r.remote_mta,
            "delivery time expired" if r.status.startswith("4") else "",
        )
        for r in entry.unreported_bounces
    ]


def _mark_reported(entry: QueueEntry) -> QueueEntry:
    reported = tuple(
        replace(r, reported=True) if r.state is RecipientState.BOUNCED else r for r in entry.recipients
    )
    return replace(entry, recipients=reported)


class QueueRunner:
    """Runs delivery attempts for a :class:`~mailtoaster.queue.spool.Queue` in one asyncio loop.

    ``clock`` gives the time for schedules, expiry and DSN dates (tests pass a fake one). At most
    ``concurrency`` messages are in delivery at once; the queue is scanned every ``scan_interval``
    seconds, when the earliest retry falls due, and whenever :meth:`wake` is called.
    """

    def __init__(
        self,
        queue: Queue,
        resolver: Resolver,
        config: DeliveryConfig,
        *,
        bounce: BounceSender,
        clock: Clock = time.time,
        concurrency: int = DEFAULT_CONCURRENCY,
        policy: RetryPolicy = DEFAULT_POLICY,
        reporting_mta: str | None = None,
        scan_interval: float = DEFAULT_SCAN_INTERVAL,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1 or scan_interval <= 0:
            raise ValueError("concurrency and scan_interval must be positive")
        self.queue = queue
        self.resolver = resolver
        self.config = config
        self.policy = policy
        self.reporting_mta = reporting_mta or config.helo_name
        self._bounce = bounce
        self._clock = clock
        self._rng = rng or random.Random()
        self._scan_interval = scan_interval
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._next_due = float("inf")

    # -- control --------------------------------------------------------------------------------

    def wake(self) -> None:
        """Scan the queue now (a message was queued, or ``queue flush`` was run)."""
        self._wake.set()

    async def run_once(self) -> int:
        """Start every due entry not already in delivery and wait for those attempts; return how many."""
        started = await self._start_due()
        if started:
            await asyncio.gather(*started, return_exceptions=True)
        return len(started)

    async def run_forever(self) -> None:
        """Deliver until :meth:`stop`; attempts run concurrently with the next scans."""
        self._stopping = False
        while not self._stopping:
            self._wake.clear()
            await self._start_due()
            try:
                async with asyncio.timeout(self._time_until_next_scan()):
                    await self._wake.wait()
            except TimeoutError:
                pass
        await self._finish_in_flight()

    async def stop(self) -> None:
        """Start nothing new, let the attempts in flight finish, then return."""
        self._stopping = True
        self._wake.set()
        await self._finish_in_flight()

    async def _finish_in_flight(self) -> None:
        while self._in_flight:
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    async def _start_due(self) -> list[asyncio.Task[None]]:
        """Scan the queue: start the due entries; remember when the next one falls due."""
        self._next_due = float("inf")
        if self._stopping:
            return []
        try:
            entries = await asyncio.to_thread(self.queue.entries)
        except (QueueError, OSError):
            log.exception("queue scan of %s failed", self.queue.directory)
            return []
        if self._stopping:  # stop() was called during the scan
            return []
        now = self._clock()
        waiting = [e for e in entries if e.id not in self._in_flight]
        self._next_due = min((e.next_attempt for e in waiting if e.next_attempt > now), default=float("inf"))
        due = sorted((e for e in waiting if e.next_attempt <= now), key=lambda e: (e.next_attempt, e.id))
        return [self._start(entry) for entry in due]

    def _start(self, entry: QueueEntry) -> asyncio.Task[None]:
        task = asyncio.create_task(self._attempt_in_slot(entry), name=f"queue-{entry.id}")
        self._in_flight[entry.id] = task
        task.add_done_callback(lambda _: self._in_flight.pop(entry.id, None))
        return task

    def _time_until_next_scan(self) -> float:
        """Until the next scan: the scan interval, or sooner when a known retry falls due. An entry in
        flight is not in ``_next_due``; its retry comes ``first_delay`` or more after it ends, so a
        scan that soon sees it (else a retry shorter than the scan interval would wait for the scan)."""
        wait = min(self._scan_interval, self._next_due - self._clock())
        if self._in_flight:
            wait = min(wait, self.policy.first_delay)
        return max(0.0, wait)

    # -- one attempt ----------------------------------------------------------------------------

    async def _attempt_in_slot(self, entry: QueueEntry) -> None:
        async with self._slots:
            try:
                current = await self._still_due(entry)
                if current is not None:
                    await self.attempt(current)
            except EntryNotFoundError:
                log.info("queue id=%s removed while being delivered (queue delete?)", entry.id)
            except Exception:
                log.exception("queue id=%s attempt failed", entry.id)

    async def _still_due(self, scanned: QueueEntry) -> QueueEntry | None:
        """The entry as it is now, or None when it is gone or no longer due. A scan runs in a thread
        while attempts finish: its copy may predate an attempt that has just recorded its outcome, and
        delivering from it would send to recipients that were just delivered."""
        try:
            current = await asyncio.to_thread(self.queue.get, scanned.id)
        except EntryNotFoundError:
            return None
        return current if current.next_attempt <= self._clock() else None

    async def attempt(self, entry: QueueEntry) -> None:
        """One delivery attempt of ``entry``, then its bounces, then its removal if it is finished."""
        if entry.pending:
            entry = await self._deliver_and_record(entry)
        if entry.unreported_bounces:
            entry = await self._report_bounces(entry)
        if entry.finished:
            await asyncio.to_thread(self.queue.remove, entry.id)
            log.info("queue id=%s removed: every recipient delivered or bounced", entry.id)

    async def _deliver_and_record(self, entry: QueueEntry) -> QueueEntry:
        try:
            path = self.queue.message_path(entry.id)
            outcomes = await deliver(entry, path, self.resolver, self.config, rng=self._rng)
        except Exception as exc:  # a bug or an unreadable file must not lose the message
            log.exception("queue id=%s delivery raised; treated as a temporary failure", entry.id)
            outcomes = _internal_error_outcomes(entry, exc)
        now = self._clock()
        log_attempt(entry, outcomes, now)
        recorded = schedule_after_attempt(apply_outcomes(entry, outcomes), now, self.policy)
        await asyncio.to_thread(self.queue.update, recorded)
        return recorded

    async def _report_bounces(self, entry: QueueEntry) -> QueueEntry:
        """Hand one DSN for the unreported bounces to the callback, then mark them reported."""
        failed = _failed_recipients(entry)
        if entry.sender == "":
            log.warning(
                "queue id=%s from=<> to=%s: no bounce for a message with the null sender; dropped",
                entry.id,
                ",".join(f"<{f.recipient}>" for f in failed),
            )
        elif not await self._send_bounce(entry, failed):
            return await self._retry_bounce_later(entry)
        reported = _mark_reported(entry)
        if not reported.finished:
            await asyncio.to_thread(self.queue.update, reported)
        return reported

    async def _retry_bounce_later(self, entry: QueueEntry) -> QueueEntry:
        if entry.pending:
            return entry  # already saved with its next attempt, which retries the bounce too
        later = replace(entry, next_attempt=self._clock() + retry_delay(1, self.policy))
        await asyncio.to_thread(self.queue.update, later)
        return later

    async def _send_bounce(self, entry: QueueEntry, failed: list[FailedRecipient]) -> bool:
        """Build the DSN and await the callback; False (and logged) if either fails."""
        recipients = ",".join(f"<{f.recipient}>" for f in failed)
        try:
            headers = await asyncio.to_thread(self._original_headers, entry.id)
            dsn = build_dsn(
                entry, failed, reporting_mta=self.reporting_mta, original_headers=headers, now=self._clock()
            )
            await self._bounce(dsn, entry.sender)
        except Exception:
            log.exception(
                "queue id=%s bounce to <%s> for %s failed; retried later", entry.id, entry.sender, recipients
            )
            return False
        log.info("queue id=%s bounce sent to <%s> for %s", entry.id, entry.sender, recipients)
        return True

    def _original_headers(self, entry_id: str) -> bytes:
        with self.queue.open_message(entry_id) as stream:
            return read_header_section(stream)
