"""One message's way from the end of DATA to its mailboxes and the queue.

Inbound mail (from clients that may not relay) is checked — SPF, Sender ID, DomainKeys, DKIM, ADSP,
DMARC, ARC — judged by the client's rules (:mod:`mailtoaster.pipeline.decide`), then by the content
filters (the spam filter, :mod:`mailtoaster.pipeline.spamfilter`), which may decide per local mailbox;
outbound mail (relay clients, authenticated users) is signed instead. Local recipients get the message
in their Maildir (Junk when it is spam and they quarantine), remote ones through the durable queue. The reply
is ``250`` only after every copy is on disk: an accepted message is never lost, and a failure before
that point is a ``451`` so the client keeps its copy and tries again.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from mailtoaster.dns import Resolver
from mailtoaster.message import Message
from mailtoaster.pipeline.decide import InboundVerdict, decide_inbound
from mailtoaster.pipeline.headers import TraceInfo, fold, kept_header_section, protocol_name, received_field
from mailtoaster.policy import DEFAULT_BAD_MIME_TYPES, ClientPolicy, find_forbidden_attachment
from mailtoaster.queue.spool import new_queue_id
from mailtoaster.verify import Envelope, VerifyReport, verify_message

log = logging.getLogger("mailtoaster.smtp")


@dataclass(frozen=True)
class Expansion:
    """Where one accepted local recipient's copies go."""

    mailboxes: tuple[str, ...]
    forwards: tuple[str, ...]


@dataclass(frozen=True)
class Submission:
    """A complete message and everything known about how it arrived."""

    client_ip: str
    client_name: str
    """The EHLO/HELO argument."""
    mail_from: str
    recipients: tuple[str, ...]
    policy: ClientPolicy
    authenticated_as: str | None
    tls: bool
    extended: bool
    spool: Path | bytes
    """The message: its spool file, or the message itself when it was small enough to keep in memory."""
    size: int
    expansions: Mapping[str, Expansion] | None = None
    """Local recipients as resolved at RCPT (every other recipient is remote); None: ask the
    mailboxes here."""

    @property
    def in_memory(self) -> bool:
        """A small message, which SMTP kept in memory (``smtp.data.IN_MEMORY_LIMIT``): its work is
        done on the event loop, a large one's in a worker thread (see :func:`on_loop_if_small`)."""
        return isinstance(self.spool, bytes)

    @property
    def outbound(self) -> bool:
        """Sent by someone allowed to relay: signed, not judged."""
        return self.policy.relay or self.authenticated_as is not None


@dataclass(frozen=True)
class Content:
    """A message to store without copying it: new header lines, then the spool file from ``offset``
    (the original header section is replaced by ``prefix``'s last part when fields were removed)."""

    prefix: bytes
    source: Path | bytes | None = None
    """The spool file, or a small message's bytes."""
    offset: int = 0

    def below(self, fields: bytes) -> Content:
        """The same message with ``fields`` added on top."""
        return Content(fields + self.prefix, self.source, self.offset)

    def open(self) -> BinaryIO:
        """The part after ``prefix``, positioned at ``offset``; the caller closes it."""
        if self.source is None:
            return io.BytesIO(b"")
        source = self.source
        handle: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")
        handle.seek(self.offset)
        return handle


class Mailboxes(Protocol):
    """Local delivery, as the server wires it to the directory and Maildir++ store."""

    def is_local(self, address: str) -> bool: ...

    def expand(self, address: str) -> tuple[list[str], list[str]]:
        """(local mailbox addresses, external forward addresses) for one accepted local recipient."""
        ...

    def deliver(self, mailbox: str, content: Content, *, spam: bool) -> None:
        """Into the mailbox's INBOX, or its Junk folder when ``spam`` and the user quarantines."""
        ...


class Outbound(Protocol):
    def enqueue(self, content: Content, sender: str, recipients: Sequence[str]) -> str:
        """Durably queued when it returns; the queue id."""
        ...


@dataclass(frozen=True)
class MailboxVerdict:
    """What a content filter says about one local mailbox's copy alone (its user's own threshold)."""

    fields: bytes = b""
    """Header fields for that copy only, each ending CRLF."""
    spam: bool = False
    """Deliver that copy to Junk (when its user quarantines)."""


NO_MAILBOX_VERDICT = MailboxVerdict()


@dataclass(frozen=True)
class FilterVerdict:
    """What a content filter says about an inbound message."""

    fields: bytes = b""
    """Header fields to add on top of the delivered copies (``X-Spam-Status: ...``), each ending CRLF."""
    spam: bool = False
    """Deliver to Junk (for users who quarantine)."""
    reply: str | None = None
    """Refuse the message with this reply instead (``554 5.7.1 ...``); None accepts it."""
    mailboxes: Mapping[str, MailboxVerdict] = field(default_factory=dict)
    """Per local mailbox: fields and a spam vote for that copy only, on top of the ones above."""
    removes: tuple[str, ...] = ()
    """Incoming header fields to remove, by lower-case name prefix (``x-spam-``): the fields the filter
    writes itself, so that no copy forged by the sender stands next to (or instead of) its own."""
    note: str = ""
    """Words for the message's log line (``spam=yes score=7.3``)."""

    def for_mailbox(self, mailbox: str) -> MailboxVerdict:
        """The fields and spam vote for one local mailbox's copy: the message's and its own."""
        own = self.mailboxes.get(mailbox, NO_MAILBOX_VERDICT)
        return MailboxVerdict(self.fields + own.fields, self.spam or own.spam)


class ContentFilter(Protocol):
    """A stage after the authentication checks (the spam filter plugs in here)."""

    async def check(
        self,
        message: Message,
        submission: Submission,
        report: VerifyReport | None,
        mailboxes: Sequence[str],
    ) -> FilterVerdict:
        """``mailboxes`` are the local mailboxes that get a copy (aliases expanded)."""
        ...


class Signer(Protocol):
    def signature_fields(self, message: Message, policy: ClientPolicy) -> bytes:
        """DKIM (and DomainKeys) fields to put on top of ``message``; empty when nothing signs."""
        ...


class Responder(Protocol):
    """Answers a message automatically once its copies are stored (the reflector, ``docs/reflector.md``)."""

    async def respond(
        self, message: Message, submission: Submission, report: VerifyReport | None, queue_id: str
    ) -> None:
        """Raises when an answer that is owed could not be stored: the client gets ``451`` and retries."""
        ...


@dataclass(frozen=True)
class PipelineSettings:
    hostname: str
    authserv_id: str
    dmarc_reject: bool = False
    dmarc_quarantine: bool = True


class Pipeline:
    def __init__(
        self,
        settings: PipelineSettings,
        *,
        resolver: Resolver,
        mailboxes: Mailboxes,
        outbound: Outbound,
        signer: Signer,
        queued: Callable[[], None] = lambda: None,
        filters: Sequence[ContentFilter] = (),
        responder: Responder | None = None,
    ) -> None:
        self._settings = settings
        self._resolver = resolver
        self._mailboxes = mailboxes
        self._outbound = outbound
        self._signer = signer
        self._queued = queued
        """Called (in the event loop) after something was queued: wakes the queue runner."""
        self._filters = tuple(filters)
        self._responder = responder

    async def process(self, submission: Submission) -> str:
        started = time.monotonic()
        queue_id = new_queue_id(time.time())
        message = await _read_message(submission)
        report, verdict = (None, None) if submission.outbound else await self._judge(submission, message)
        if verdict is not None and verdict.decision.action != "accept":
            reply = verdict.decision.reply
            _log_transaction(submission, queue_id, report, verdict, reply, started)
            return reply
        route = self._route(submission)
        filtered = await self._filter(message, submission, report, route[0])
        if filtered.reply is not None:
            _log_transaction(submission, queue_id, report, verdict, filtered.reply, started, filtered.note)
            return filtered.reply
        try:
            await self._store(submission, queue_id, message, report, verdict, filtered, route)
            if self._responder is not None:
                await self._responder.respond(message, submission, report, queue_id)
        except Exception:
            log.exception("id=%s delivery failed; the client keeps the message and will retry", queue_id)
            reply = "451 4.3.0 Temporary failure storing the message, please try again later"
        else:
            reply = f"250 2.0.0 Ok: queued as {queue_id}"
        _log_transaction(submission, queue_id, report, verdict, reply, started, filtered.note)
        return reply

    async def _judge(self, submission: Submission, message: Message) -> tuple[VerifyReport, InboundVerdict]:
        envelope = Envelope(ip_address(submission.client_ip), submission.client_name, submission.mail_from)
        report = await verify_message(
            message, envelope, self._resolver, self._settings.authserv_id, reverse_dns=True
        )
        policy = submission.policy
        forbidden = None
        if policy.bad_mime_types or policy.bad_loader_types:
            forbidden = await asyncio.to_thread(_forbidden_attachment, submission, policy)
        verdict = decide_inbound(
            report,
            policy,
            dmarc_reject=self._settings.dmarc_reject,
            dmarc_quarantine=self._settings.dmarc_quarantine,
            forbidden_attachment=forbidden,
        )
        return report, verdict

    async def _store(
        self,
        submission: Submission,
        queue_id: str,
        message: Message,
        report: VerifyReport | None,
        verdict: InboundVerdict | None,
        filtered: FilterVerdict,
        route: tuple[list[str], list[str]],
    ) -> None:
        mailboxes, remote = route
        header_section = sum(len(header.raw) for header in message.headers)
        if report is not None:
            headers = kept_header_section(message, self._settings.authserv_id, removes=filtered.removes)
            results = fold(report.received_spf) + fold(report.authentication_results)
        else:
            headers = b"".join(header.raw for header in message.headers)
            results = b""
        reverse_name = report.iprev.name if report is not None and report.iprev is not None else None
        trace = self._trace(submission, queue_id, reverse_name) + results
        original = Content(headers, submission.spool, header_section)
        quarantine = (verdict is not None and verdict.quarantine) or _trusted_spam_flag(submission, message)
        small = submission.in_memory
        for mailbox in mailboxes:
            copy = filtered.for_mailbox(mailbox)
            content = original.below(trace + copy.fields)
            await on_loop_if_small(
                small, self._mailboxes.deliver, mailbox, content, spam=copy.spam or quarantine
            )
        if remote:
            signatures = b""
            if submission.outbound:
                sign = self._signer.signature_fields
                signatures = await asyncio.to_thread(sign, message, submission.policy)
            content = original.below(signatures + trace)
            await on_loop_if_small(small, self._outbound.enqueue, content, submission.mail_from, remote)
            self._queued()

    async def _filter(
        self, message: Message, submission: Submission, report: VerifyReport | None, mailboxes: list[str]
    ) -> FilterVerdict:
        """Every filter in turn, for inbound mail only; their fields add up, one spam vote is enough,
        the first refusal wins."""
        if submission.outbound or not self._filters:
            return FilterVerdict()
        combined = FilterVerdict()
        for content_filter in self._filters:
            found = await content_filter.check(message, submission, report, mailboxes)
            if found.reply is not None:
                return found
            combined = _combined(combined, found)
        return combined

    def _route(self, submission: Submission) -> tuple[list[str], list[str]]:
        """(local mailboxes, remote addresses), aliases expanded, each once."""
        mailboxes: dict[str, None] = {}
        remote: dict[str, None] = {}
        for recipient in submission.recipients:
            expansion = self._expansion(submission, recipient)
            if expansion is None:
                remote[recipient] = None
                continue
            mailboxes.update(dict.fromkeys(expansion.mailboxes))
            remote.update(dict.fromkeys(expansion.forwards))
        return list(mailboxes), list(remote)

    def _expansion(self, submission: Submission, recipient: str) -> Expansion | None:
        if submission.expansions is not None:
            return submission.expansions.get(recipient)
        if not self._mailboxes.is_local(recipient):
            return None
        local, forwards = self._mailboxes.expand(recipient)
        return Expansion(tuple(local), tuple(forwards))

    def _trace(self, submission: Submission, queue_id: str, reverse_name: str | None) -> bytes:
        trace = TraceInfo(
            helo=submission.client_name,
            ip=submission.client_ip,
            reverse_name=reverse_name,
            hostname=self._settings.hostname,
            protocol=protocol_name(
                extended=submission.extended,
                tls=submission.tls,
                authenticated=submission.authenticated_as is not None,
            ),
            queue_id=queue_id,
            recipient=submission.recipients[0] if len(submission.recipients) == 1 else None,
            timestamp=time.time(),
        )
        return received_field(trace)


T = TypeVar("T")


async def on_loop_if_small(small: bool, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A delivery or a queue entry: a small message's on the event loop, a large one's in a worker
    thread. A small one costs a file write, an fsync, a rename and a directory fsync: the loop waits
    for the disk about a millisecond, which costs less than a thread hand-off, whose contention for
    the GIL cost 2 ms of CPU per message in profiles; several worker processes (``[server] workers``)
    keep the disk waits of one from holding up the others. A large one's copying would hold the loop
    for as long as the copy takes."""
    if small:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)


async def _read_message(submission: Submission) -> Message:
    spool = submission.spool
    if isinstance(spool, bytes):
        return Message.parse(spool)
    return await asyncio.to_thread(Message.from_file, spool)


def spooled_bytes(submission: Submission, limit: int = -1) -> bytes:
    """The message's octets (the first ``limit`` of them), from memory or from its spool file."""
    spool = submission.spool
    if isinstance(spool, bytes):
        return spool if limit < 0 else spool[:limit]
    with spool.open("rb") as handle:
        return handle.read(limit)


CONTENT_CHECK_LIMIT = 10 * 1024 * 1024
"""Attachment checks parse the MIME tree in memory, so larger messages skip them (logged)."""


def _forbidden_attachment(submission: Submission, policy: ClientPolicy) -> str | None:
    if submission.size > CONTENT_CHECK_LIMIT:
        log.info("attachment checks skipped: %d octets is over %d", submission.size, CONTENT_CHECK_LIMIT)
        return None
    return find_forbidden_attachment(
        spooled_bytes(submission),
        bad_mime_types=DEFAULT_BAD_MIME_TYPES if policy.bad_mime_types else (),
        loader_types=policy.bad_loader_types,
    )


def _combined(first: FilterVerdict, second: FilterVerdict) -> FilterVerdict:
    """Two accepting filters' verdicts as one: fields in order, any spam vote, every removal."""
    mailboxes = dict(first.mailboxes)
    for mailbox, own in second.mailboxes.items():
        before = mailboxes.get(mailbox, NO_MAILBOX_VERDICT)
        mailboxes[mailbox] = MailboxVerdict(before.fields + own.fields, before.spam or own.spam)
    return FilterVerdict(
        fields=first.fields + second.fields,
        spam=first.spam or second.spam,
        mailboxes=mailboxes,
        removes=first.removes + second.removes,
        note=" ".join(filter(None, (first.note, second.note))),
    )


def _trusted_spam_flag(submission: Submission, message: Message) -> bool:
    """An ``X-Spam-Status: Yes`` written by a relay client (a filtering gateway in front of this
    server, as in the classic maildrop recipe). Never a stranger's: anyone can write the field, and
    mail put into Junk that way would be learned as that user's spam by the nightly sweep."""
    if not submission.policy.relay:
        return False
    status = message.get("X-Spam-Status")
    return status is not None and status.value.lower().startswith("yes")


def _log_transaction(
    submission: Submission,
    queue_id: str,
    report: VerifyReport | None,
    verdict: InboundVerdict | None,
    reply: str,
    started: float,
    note: str = "",
) -> None:
    checks = ""
    if report is not None:
        dkim = ",".join(signature.result.value for signature in report.dkim) or "none"
        checks = (
            f" spf={report.spf.result.value} domainkeys={report.domainkeys.status.name} dkim={dkim}"
            f" dmarc={report.dmarc.result.value} arc={report.arc.result.value}"
        )
    if verdict is not None:
        checks += f" decision={verdict.decision.action}" + (" quarantine" if verdict.quarantine else "")
    if note:
        checks += f" {note}"
    log.info(
        "id=%s client=%s helo=%s auth=%s from=<%s> rcpt=%s size=%d%s reply=%r time=%.3f",
        queue_id,
        submission.client_ip,
        submission.client_name,
        submission.authenticated_as or "-",
        submission.mail_from,
        ",".join(f"<{recipient}>" for recipient in submission.recipients),
        submission.size,
        checks,
        reply,
        time.monotonic() - started,
    )
