"""One SMTP transaction with one receiving server, on aiosmtplib, with a result for every recipient.

``MAIL FROM`` and ``RCPT TO`` are sent with ``execute_command`` and the addresses exactly as queued
(aiosmtplib's ``mail()``/``rcpt()`` would re-parse them with ``email.utils.parseaddr``); every address
has passed :func:`~mailtoaster.queue.address.check_address` first. The data goes through
aiosmtplib's ``data()``, which takes one ``bytes`` object: see
:data:`~mailtoaster.queue.types.DEFAULT_MAX_MESSAGE_SIZE` for what that costs and how it is capped.

Failures before the transaction (no connection, greeting or EHLO refused, STARTTLS or AUTH failing,
``MAIL FROM`` answered 4xx) leave every recipient temporary with ``try_next`` set, so the caller moves
on to the next MX address. Replies to ``RCPT`` and to the data are final for this attempt.
"""

from __future__ import annotations

import contextlib
import enum
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiosmtplib

from mailtoaster.queue.routing import Destination, address_literal
from mailtoaster.queue.types import (
    DeliveryConfig,
    DeliveryResult,
    RecipientOutcome,
    SmtpReply,
    local_diagnostic,
)

LoadMessage = Callable[[], Awaitable[bytes]]


class TlsPolicy(enum.Enum):
    NONE = "none"
    """Plaintext (the retry after a failed opportunistic handshake)."""
    OPPORTUNISTIC = "may"
    """STARTTLS when offered, certificate not checked (RFC 7435); plaintext otherwise."""
    REQUIRED = "encrypt"
    """STARTTLS or nothing; certificate not checked."""
    VERIFIED = "verify"
    """STARTTLS or nothing, and the certificate must verify and match the host (smarthost AUTH)."""

    @property
    def mandatory(self) -> bool:
        return self in (TlsPolicy.REQUIRED, TlsPolicy.VERIFIED)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class TransactionResult:
    outcomes: tuple[RecipientOutcome, ...]
    try_next: bool = False
    """A session-level failure: the recipients (all temporary) may be tried at the next address."""
    tls_failed: bool = False
    """The STARTTLS handshake failed: an opportunistic sender may retry this address in plaintext."""


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    size: int


class _SessionFailure(Exception):
    """Ends a session before the transaction: every recipient gets this result."""

    def __init__(
        self, result: DeliveryResult, status: str, diagnostic: str, *, try_next: bool, tls: bool = False
    ) -> None:
        super().__init__(diagnostic)
        self.result = result
        self.status = status
        self.diagnostic = diagnostic
        self.try_next = try_next
        self.tls_failed = tls


def _reply_of(exc: aiosmtplib.SMTPResponseException) -> SmtpReply:
    return SmtpReply(exc.code, exc.message)


def _as_temporary(status: str) -> str:
    return "4" + status[1:]


def _reply_failure(reply: SmtpReply, *, try_next: bool, permanent_allowed: bool = False) -> _SessionFailure:
    """A refusal by the server; before the transaction a 5xx only skips this host unless allowed."""
    if permanent_allowed and reply.result is DeliveryResult.PERMANENT:
        return _SessionFailure(
            DeliveryResult.PERMANENT, reply.enhanced_status, reply.diagnostic, try_next=False
        )
    status = _as_temporary(reply.enhanced_status)
    return _SessionFailure(DeliveryResult.TEMPORARY, status, reply.diagnostic, try_next=try_next)


def _connection_failure(destination: Destination, exc: BaseException, stage: str) -> _SessionFailure:
    status = "4.4.1" if stage == "connect" else "4.4.2"
    text = f"{stage} to {destination.relay}: {str(exc) or type(exc).__name__}"
    return _SessionFailure(DeliveryResult.TEMPORARY, status, local_diagnostic(text), try_next=True)


_NETWORK_ERRORS = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError)
"""Lost connection, no reply in time, socket errors: all temporary."""


def opportunistic_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def verifying_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _tls_name(destination: Destination) -> str:
    """Name for SNI and certificate matching: the MX host name, or the address of a literal."""
    return str(destination.address) if address_literal(destination.host) is not None else destination.host


class _Session:
    """The steps of one session, each raising :class:`_SessionFailure` when the session cannot go on."""

    def __init__(self, destination: Destination, config: DeliveryConfig) -> None:
        self.destination = destination
        self.config = config
        self.smtp = aiosmtplib.SMTP(
            hostname=str(destination.address),
            port=destination.port,
            local_hostname=config.helo_name,
            timeout=config.command_timeout,
            start_tls=False,
            validate_certs=False,
        )
        self.tls = False

    async def connect(self) -> None:
        try:
            await self.smtp.connect(timeout=self.config.connect_timeout)
        except aiosmtplib.SMTPConnectResponseError as exc:
            raise _reply_failure(_reply_of(exc), try_next=True) from None
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            raise _connection_failure(self.destination, exc, "connect") from None
        await self.greet()

    async def greet(self) -> None:
        """EHLO, or HELO for a server that does not speak ESMTP."""
        try:
            await self.smtp.ehlo()
            return
        except aiosmtplib.SMTPHeloError as exc:
            refusal = exc
        if self.smtp.is_connected:
            try:
                await self.smtp.helo()
                return
            except aiosmtplib.SMTPHeloError as exc:
                refusal = exc
        raise _reply_failure(_reply_of(refusal), try_next=True)

    async def start_tls(self, policy: TlsPolicy, ca_file: str | None) -> None:
        if policy is TlsPolicy.NONE:
            return
        if not self.smtp.supports_extension("starttls"):
            if policy.mandatory:
                text = f"TLS is required, but was not offered by {self.destination.relay}"
                raise _SessionFailure(
                    DeliveryResult.TEMPORARY, "4.7.4", local_diagnostic(text), try_next=True
                )
            return
        context = verifying_context(ca_file) if policy is TlsPolicy.VERIFIED else opportunistic_context()
        try:
            await self.smtp.starttls(tls_context=context, server_hostname=_tls_name(self.destination))
        except aiosmtplib.SMTPResponseException as exc:
            if not policy.mandatory and self.smtp.is_connected:
                return  # STARTTLS refused: opportunistic TLS goes on in plaintext, as Postfix does
            raise _reply_failure(_reply_of(exc), try_next=True) from None
        except (ssl.SSLError, ssl.CertificateError, *_NETWORK_ERRORS, aiosmtplib.SMTPException) as exc:
            text = f"TLS handshake with {self.destination.relay} failed: {exc}"
            raise _SessionFailure(
                DeliveryResult.TEMPORARY, "4.7.5", local_diagnostic(text), try_next=True, tls=True
            ) from None
        self.tls = True
        await self.greet()  # RFC 3207 §4.2: forget the pre-TLS EHLO reply, ask again

    async def authenticate(self, credentials: Credentials) -> None:
        try:
            await self.smtp.login(credentials.username, credentials.password)
        except aiosmtplib.SMTPResponseException as exc:
            raise _reply_failure(_reply_of(exc), try_next=True) from None
        except aiosmtplib.SMTPException as exc:  # no AUTH mechanism in common
            text = f"AUTH with {self.destination.relay} impossible: {exc}"
            raise _SessionFailure(
                DeliveryResult.TEMPORARY, "4.7.0", local_diagnostic(text), try_next=True
            ) from None

    def mail_parameters(self, envelope: Envelope) -> tuple[list[bytes], str]:
        """ESMTP parameters for MAIL FROM and the address encoding; refuses what the server cannot take."""
        parameters: list[bytes] = []
        if self.smtp.supports_extension("size"):
            limit = self.smtp.esmtp_extensions.get("size", "")
            if limit.isdigit() and 0 < int(limit) < envelope.size:
                host = self.destination.host
                text = f"message of {envelope.size} bytes exceeds the size limit of {host} ({limit})"
                raise _SessionFailure(
                    DeliveryResult.PERMANENT, "5.3.4", local_diagnostic(text), try_next=False
                )
            parameters.append(f"SIZE={envelope.size}".encode("ascii"))
        addresses = (envelope.sender, *envelope.recipients)
        if all(address.isascii() for address in addresses):
            return parameters, "ascii"
        if not self.smtp.supports_extension("smtputf8"):
            text = f"{self.destination.host} does not support SMTPUTF8 for a non-ASCII address"
            raise _SessionFailure(DeliveryResult.PERMANENT, "5.6.7", local_diagnostic(text), try_next=False)
        return [*parameters, b"SMTPUTF8"], "utf-8"

    async def mail_from(self, envelope: Envelope) -> str:
        parameters, encoding = self.mail_parameters(envelope)
        reply = await self.command(b"MAIL", b"FROM:<" + envelope.sender.encode(encoding) + b">", *parameters)
        if reply.result is not DeliveryResult.DELIVERED:
            raise _reply_failure(reply, try_next=True, permanent_allowed=True)
        return encoding

    async def rcpt_to(self, recipient: str, encoding: str) -> SmtpReply:
        return await self.command(b"RCPT", b"TO:<" + recipient.encode(encoding) + b">")

    async def command(self, *words: bytes) -> SmtpReply:
        response = await self.smtp.execute_command(*words)
        return SmtpReply(response.code, response.message)

    async def data(self, message: bytes) -> SmtpReply:
        try:
            response = await self.smtp.data(message, timeout=self.config.data_timeout)
        except aiosmtplib.SMTPResponseException as exc:
            return _reply_of(exc)
        return SmtpReply(response.code, response.message)

    async def close(self) -> None:
        if self.smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self.smtp.quit(timeout=min(self.config.command_timeout, 10.0))
        self.smtp.close()


class Transaction:
    """Builds the per-recipient outcomes of one session at one destination."""

    def __init__(self, destination: Destination, envelope: Envelope) -> None:
        self.destination = destination
        self.envelope = envelope
        self.tls = False

    def outcome(
        self, recipient: str, result: DeliveryResult, status: str, diagnostic: str
    ) -> RecipientOutcome:
        remote = self.destination.host if diagnostic.startswith("smtp;") else ""
        return RecipientOutcome(
            recipient, result, status, diagnostic, remote, self.destination.relay, self.tls
        )

    def for_reply(self, recipient: str, reply: SmtpReply) -> RecipientOutcome:
        return self.outcome(recipient, reply.result, reply.enhanced_status, reply.diagnostic)

    def for_all(self, recipients: Sequence[str], failure: _SessionFailure) -> TransactionResult:
        outcomes = tuple(
            self.outcome(r, failure.result, failure.status, failure.diagnostic) for r in recipients
        )
        return TransactionResult(outcomes, try_next=failure.try_next, tls_failed=failure.tls_failed)


async def run_transaction(
    destination: Destination,
    envelope: Envelope,
    load_message: LoadMessage,
    config: DeliveryConfig,
    *,
    tls: TlsPolicy,
    credentials: Credentials | None = None,
    ca_file: str | None = None,
) -> TransactionResult:
    """Connect, EHLO, STARTTLS per ``tls``, AUTH with ``credentials``, then MAIL, RCPT each, DATA."""
    session = _Session(destination, config)
    transaction = Transaction(destination, envelope)
    try:
        await session.connect()
        await session.start_tls(tls, ca_file)
        transaction.tls = session.tls
        if credentials is not None:
            await session.authenticate(credentials)
        return await _send(session, transaction, load_message)
    except _SessionFailure as failure:
        return transaction.for_all(envelope.recipients, failure)
    except _NETWORK_ERRORS as exc:
        return transaction.for_all(envelope.recipients, _connection_failure(destination, exc, "session"))
    finally:
        await session.close()


async def _send(session: _Session, transaction: Transaction, load_message: LoadMessage) -> TransactionResult:
    envelope = transaction.envelope
    encoding = await session.mail_from(envelope)
    outcomes: dict[str, RecipientOutcome] = {}
    accepted: list[str] = []
    for recipient in envelope.recipients:
        reply = await session.rcpt_to(recipient, encoding)
        outcomes[recipient] = transaction.for_reply(recipient, reply)
        if reply.result is DeliveryResult.DELIVERED:
            accepted.append(recipient)
    if accepted:
        message = await load_message()
        try:
            reply = await session.data(message)
        except _NETWORK_ERRORS as exc:
            failure = _connection_failure(transaction.destination, exc, "data transfer")
            lost = transaction.for_all(accepted, failure).outcomes
            outcomes.update((outcome.recipient, outcome) for outcome in lost)
        else:
            outcomes.update((r, transaction.for_reply(r, reply)) for r in accepted)
    return TransactionResult(tuple(outcomes[r] for r in envelope.recipients))
