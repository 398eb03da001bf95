"""The reflector as a pipeline stage: a message to ``check-auth@`` is answered with its report.

The pipeline calls :meth:`Reflector.respond` once the message's other copies are stored, before the
client gets its ``250``; the answer is durably delivered or queued by then, and a failure to store it
is a ``451`` (the client retries), so a report is never lost without a trace. Every answer sent and
every one withheld gets a log line on ``mailtoaster.reflector``.

What is reported depends on where the message came from:

* **inbound** (a client that may not relay): the :class:`~mailtoaster.verify.VerifyReport` the
  pipeline already made for it, exactly what decided its fate;
* **outbound** (an authenticated user or a relay client, such as ``mailtoaster selftest``): such mail
  is signed, not judged, so the reflector signs it as it would leave and checks it as a receiving
  server would see it: arriving from the address this server sends from (its hostname's, or the
  smarthost's, in DNS), with our hostname as HELO. That is the end-to-end check of the domain's
  records and keys a postmaster wants.

The spam filter scores the message with that report (the global filter; ``[spam] required``), so the
summary's ``SpamAssassin check`` is what inbound mail would get. The answer is signed like any
outbound mail (DKIM with every key of the reflector's domain, DomainKeys as configured) and goes to a
local mailbox directly or to the queue with the null sender.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mailtoaster.dns import IPAddress, Resolver, RRType
from mailtoaster.message import Message
from mailtoaster.pipeline.process import Content, Mailboxes, Outbound, Signer, Submission, spooled_bytes
from mailtoaster.pipeline.spamfilter import BAYES_UNAVAILABLE, TOO_BIG
from mailtoaster.policy import ClientPolicy
from mailtoaster.queue import parse_smarthost
from mailtoaster.reflector.addresses import ReflectorAddress, ReflectorRecipients
from mailtoaster.reflector.reply import build_reply, message_id_of, printable, report_body
from mailtoaster.reflector.suppress import RATE_LIMIT_FILE, ReportRateLimit, suppression_reason
from mailtoaster.spam import SpamFilter, SpamScore, TokenStoreUnavailable
from mailtoaster.verify import Envelope, VerifyReport, render_text, verify_message

if TYPE_CHECKING:  # the server imports this module
    from mailtoaster.server.app import MailServer

log = logging.getLogger("mailtoaster.reflector")

INTRO_WIDTH = 76
REPLY_POLICY = ClientPolicy()
"""The answer is our own mail: signed by ``[signing]`` alone, no client's DKSIGN rule applies."""


@dataclass(frozen=True)
class ReflectorSetup:
    hostname: str
    """Our name: the answer's Message-ID, and the HELO of outbound mail checked as sent."""
    authserv_id: str
    sending_host: str
    """The host whose address outbound mail leaves from: our hostname, or the smarthost."""
    spam_required: float = 5.0
    spam_max_size: int = 512_000


@dataclass(frozen=True)
class Checked:
    """The report on a message, and the message as it was checked (signed, for outbound mail)."""

    report: VerifyReport
    message: Message
    how: tuple[str, ...]
    """Lines for the introduction: where the message came from and how it was checked."""


@dataclass(frozen=True)
class Answer:
    """What every report about one message shares."""

    queue_id: str
    mail_from: str
    checked: Checked
    text: str
    """The summary and the details (:func:`mailtoaster.verify.render_text`)."""
    spam: SpamScore | None


class Reflector:
    """The :class:`~mailtoaster.pipeline.process.Responder` that answers the reflector's addresses."""

    def __init__(
        self,
        recipients: ReflectorRecipients,
        setup: ReflectorSetup,
        *,
        resolver: Resolver,
        signer: Signer,
        mailboxes: Mailboxes,
        outbound: Outbound,
        rate_limit: ReportRateLimit,
        spam_filter: SpamFilter | None,
        queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.recipients = recipients
        self._setup = setup
        self._resolver = resolver
        self._signer = signer
        self._mailboxes = mailboxes
        self._outbound = outbound
        self._rate_limit = rate_limit
        self._spam_filter = spam_filter
        self._queued = queued

    @classmethod
    def for_server(
        cls,
        server: MailServer,
        *,
        resolver: Resolver,
        signer: Signer,
        outbound: Outbound,
        queued: Callable[[], None],
    ) -> Reflector | None:
        """The reflector of a :class:`~mailtoaster.server.app.MailServer`; None when it is off."""
        config = server.config
        settings = config.reflector
        if not settings.enabled:
            return None
        smarthost = config.queue.smarthost
        setup = ReflectorSetup(
            hostname=server.hostname,
            authserv_id=config.server.authserv_id or server.hostname,
            sending_host=parse_smarthost(smarthost).host if smarthost else server.hostname,
            spam_required=config.spam.required,
            spam_max_size=config.spam.max_size,
        )
        return cls(
            ReflectorRecipients(settings, server.directory),
            setup,
            resolver=resolver,
            signer=signer,
            mailboxes=server.mailboxes,
            outbound=outbound,
            rate_limit=ReportRateLimit(
                Path(server.data_dir) / RATE_LIMIT_FILE, settings.max_per_sender_per_hour
            ),
            spam_filter=server.spam_filter,
            queued=queued,
        )

    # -- the pipeline's call ----------------------------------------------------------------------

    async def respond(
        self, message: Message, submission: Submission, report: VerifyReport | None, queue_id: str
    ) -> None:
        addresses = [found for rcpt in submission.recipients if (found := self.recipients.match(rcpt))]
        if not addresses:
            return
        reason = suppression_reason(message, submission.mail_from)
        if reason is not None:
            _log_withheld(queue_id, submission.mail_from, addresses, reason)
            return
        targets = self._targets(addresses, submission.mail_from, queue_id)
        if not targets:
            return
        checked = await self._checked(message, submission, report)
        spam = await asyncio.to_thread(self._spam_score, submission, checked.report)
        answer = Answer(queue_id, submission.mail_from, checked, render_text(checked.report, spam), spam)
        for target, address in targets:
            await self._answer(answer, address, target)

    def _targets(
        self, addresses: Sequence[ReflectorAddress], mail_from: str, queue_id: str
    ) -> list[tuple[str, ReflectorAddress]]:
        """Each address a report goes to, once, with the reflector address that answers it. A redirect
        target refused at RCPT cannot get here, but the directory may have changed since."""
        targets: dict[str, tuple[str, ReflectorAddress]] = {}
        for address in addresses:
            target = address.redirect or mail_from
            refusal = self.recipients.target_refusal(target, address.recipient) if address.redirect else None
            if refusal is not None:
                _log_withheld(queue_id, mail_from, [address], refusal)
                continue
            targets.setdefault(target.lower(), (target, address))
        return list(targets.values())

    # -- the report -----------------------------------------------------------------------------

    async def _checked(
        self, message: Message, submission: Submission, report: VerifyReport | None
    ) -> Checked:
        if report is not None:
            return Checked(report, message, _inbound_how(submission))
        return await self._as_sent(message, submission)

    async def _as_sent(self, message: Message, submission: Submission) -> Checked:
        """Outbound mail signed as it leaves, then checked as a receiving server would check it."""
        signatures = await asyncio.to_thread(self._signer.signature_fields, message, submission.policy)
        signed = message.with_fields_on_top(signatures)
        sending = await self._sending_address()
        ip = sending if sending is not None else ipaddress.ip_address(submission.client_ip)
        envelope = Envelope(ip, self._setup.hostname, submission.mail_from)
        report = await verify_message(signed, envelope, self._resolver, self._setup.authserv_id)
        return Checked(report, signed, _outbound_how(submission, self._setup, ip, found=sending is not None))

    async def _sending_address(self) -> IPAddress | None:
        """The first address of the host outbound mail leaves from (A, then AAAA), or None."""
        host = self._setup.sending_host
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            pass
        for rrtype in (RRType.A, RRType.AAAA):
            answer = await self._resolver.lookup(host, rrtype)
            if answer.ok and answer.addresses():
                return answer.addresses()[0]
        return None

    def _spam_score(self, submission: Submission, report: VerifyReport) -> SpamScore | None:
        """The spam filter's score as inbound mail would get it (in a worker thread); None when the
        server runs without the filter. An unavailable token store scores without Bayes (and says
        so in the tests) rather than holding the report back."""
        spam_filter, setup = self._spam_filter, self._setup
        if spam_filter is None:
            return None
        if submission.size > setup.spam_max_size:
            return SpamScore(0.0, setup.spam_required, (TOO_BIG,), None)
        data = spooled_bytes(submission, setup.spam_max_size)
        try:
            return spam_filter.score(data, None, report, required=setup.spam_required)
        except TokenStoreUnavailable as error:
            log.warning("reflector: spam filter unavailable, scoring without Bayes: %s", error)
            score = spam_filter.score_without_bayes(data, report, required=setup.spam_required)
            return dataclasses.replace(score, hits=(*score.hits, BAYES_UNAVAILABLE))

    # -- the answer -----------------------------------------------------------------------------

    async def _answer(self, answer: Answer, address: ReflectorAddress, target: str) -> None:
        """One report to ``target``, unless it is over the hourly limit; logged either way."""
        if not await asyncio.to_thread(self._rate_limit.reserve, target):
            limit = f"over [reflector] max_per_sender_per_hour reports to <{target}> in the last hour"
            _log_withheld(answer.queue_id, answer.mail_from, [address], limit)
            return
        try:
            where = await self._send(answer, address, target)
        except BaseException:
            await asyncio.to_thread(self._rate_limit.release, target)
            raise
        if where is None:
            await asyncio.to_thread(self._rate_limit.release, target)
            nowhere = f"<{target}> is an address of a local domain without a mailbox"
            _log_withheld(answer.queue_id, answer.mail_from, [address], nowhere)
            return
        spam = answer.spam
        log.info(
            "id=%s reflector report from=<%s> rcpt=<%s> to=<%s> %s %s: %s",
            answer.queue_id,
            answer.mail_from,
            address.recipient,
            target,
            " ".join(f"{name}={value}" for name, value in answer.checked.report.results().items()),
            f"spam={spam.verdict}" if spam is not None else "spam=off",
            where,
        )

    async def _send(self, answer: Answer, address: ReflectorAddress, target: str) -> str | None:
        """Build, sign and store the answer; where it went (None: nowhere, a local non-address)."""
        checked = answer.checked
        original_headers = b"".join(header.raw for header in checked.message.headers)
        body = report_body(_introduction(self._setup.hostname, checked), answer.text, original_headers)
        reply = build_reply(
            checked.message,
            body=body,
            reflector=address.reflector,
            target=target,
            hostname=self._setup.hostname,
            now=time.time(),
        )
        signatures = await asyncio.to_thread(
            self._signer.signature_fields, Message.parse(reply), REPLY_POLICY
        )
        where, queued = await asyncio.to_thread(self._store, Content(signatures + reply), target)
        if queued:
            self._queued()
        return where

    def _store(self, content: Content, target: str) -> tuple[str | None, bool]:
        """(where the answer went, whether something was queued); in a worker thread."""
        local: list[str] = []
        remote = [target]
        if self._mailboxes.is_local(target):
            local, remote = self._mailboxes.expand(target)
        for mailbox in local:
            self._mailboxes.deliver(mailbox, content, spam=False)
        places = [f"delivered to {mailbox}" for mailbox in local]
        if remote:
            places.append(f"queued as {self._outbound.enqueue(content, '', remote)}")
        return ("; ".join(places) or None), bool(remote)


def _introduction(hostname: str, checked: Checked) -> list[str]:
    subject = checked.message.get("Subject")
    message_id = message_id_of(checked.message)
    return [
        f"This is the authentication reflector of {hostname}, answering your message",
        f"  Subject:    {printable(subject.value) if subject is not None else '(none)'}",
        f"  Message-ID: {message_id or '(none)'}",
        "",
        *checked.how,
    ]


def _inbound_how(submission: Submission) -> tuple[str, ...]:
    return _paragraph(
        f"It arrived from {submission.client_ip} (HELO {submission.client_name or '-'}) with MAIL "
        f"FROM:<{submission.mail_from}>, and was checked as this server checks all inbound mail."
    )


def _outbound_how(
    submission: Submission, setup: ReflectorSetup, ip: IPAddress, *, found: bool
) -> tuple[str, ...]:
    sender = (
        f"the authenticated user {submission.authenticated_as}"
        if submission.authenticated_as is not None
        else f"the relay client {submission.client_ip}"
    )
    source = (
        f"{ip} (the address of {setup.sending_host})"
        if found
        else f"{ip} (the submitting client's: {setup.sending_host} has no address in DNS)"
    )
    return _paragraph(
        f"It was sent by {sender}, so it was signed as this server signs outgoing mail, then "
        f"checked as a receiving server would see it: arriving from {source}, with HELO "
        f"{setup.hostname} and MAIL FROM:<{submission.mail_from}>."
    )


def _paragraph(text: str) -> tuple[str, ...]:
    return tuple(textwrap.wrap(text, INTRO_WIDTH, break_long_words=False, break_on_hyphens=False))


def _log_withheld(queue_id: str, sender: str, addresses: Sequence[ReflectorAddress], reason: str) -> None:
    log.info(
        "id=%s reflector no report from=<%s> rcpt=%s: %s",
        queue_id,
        sender,
        ",".join(f"<{address.recipient}>" for address in addresses),
        reason,
    )
