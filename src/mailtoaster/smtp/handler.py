"""The SMTP server's decisions per connection and per envelope: who may connect (tcp.smtp rules), who
may relay, which recipients exist; the message itself goes to the pipeline.

Relaying is allowed only to clients whose rule sets RELAYCLIENT and to authenticated users; everyone
else may only reach local recipients that the directory knows. Addresses are judged on the domain after
the last ``@``: a ``%`` or ``!`` in a local part is just part of an unknown local name, never a route,
and aiosmtpd has already dropped any source route (RFC 5321 §4.1.1.3 lets a server ignore it).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiosmtpd.smtp import Envelope, LoginPassword, Session

from mailtoaster.pipeline import Expansion, Pipeline, Submission
from mailtoaster.policy import ClientPolicy
from mailtoaster.smtp.address import AddressError, parse_mailbox
from mailtoaster.store import Resolution

log = logging.getLogger("mailtoaster.smtp")

POSTMASTER = "postmaster"
NULL_PATH = "<>"
"""The null reverse-path of bounces (RFC 5321 §4.5.5), as aiosmtpd hands it over."""
NON_ASCII_REFUSAL = "553 5.6.7 Non-ASCII address not permitted without SMTPUTF8 (RFC 6531)"
INTERNAL_ERROR = "451 4.3.0 Internal error, please try again later"


class RecipientDirectory(Protocol):
    def is_local_domain(self, domain: str) -> bool: ...

    def resolve(self, address: str) -> Resolution | None: ...


@dataclass
class ConnectionState:
    """What the handler remembers about one connection between commands."""

    policy: ClientPolicy
    unknown_recipients: int = 0
    expansions: dict[str, Expansion] = field(default_factory=dict)
    """The current transaction's local recipients as RCPT resolved them: the pipeline reuses them
    instead of asking the directory again."""


class SmtpHandler:
    """aiosmtpd handler hooks plus :meth:`handle_message` for :class:`MailtoasterSMTP`."""

    def __init__(
        self,
        *,
        policy_for: Callable[[str], ClientPolicy],
        directory: RecipientDirectory,
        pipeline: Pipeline,
        max_recipients: int,
        primary_domain: Callable[[], str | None],
        recipient_refusal: Callable[[str], str | None] = lambda recipient: None,
    ) -> None:
        """``recipient_refusal`` refuses a recipient before the directory is asked (the reflector's
        redirect form naming a stranger, ``docs/reflector.md``): the reply, or None to go on."""
        self._policy_for = policy_for
        self._directory = directory
        self._pipeline = pipeline
        self._max_recipients = max_recipients
        self._primary_domain = primary_domain
        self._recipient_refusal = recipient_refusal
        self._ignored_logged: set[tuple[int, str]] = set()
        """(rule line, variable) pairs already reported: each ignored variable is logged once."""
        self._connections: weakref.WeakKeyDictionary[Session, ConnectionState] = weakref.WeakKeyDictionary()

    # -- connection ----------------------------------------------------------------------------

    def connection_refusal(self, session: Session) -> str | None:
        ip = _peer(session)
        policy = self._policy_for(ip)
        self._connections[session] = ConnectionState(policy)
        self._log_ignored(policy)
        if not policy.allowed:
            log.info("client=%s refused by rule", ip)
            return "554 5.7.1 Access denied to your address"
        return None

    def _log_ignored(self, policy: ClientPolicy) -> None:
        line = policy.rule.line if policy.rule is not None else 0
        new = [name for name in policy.ignored if (line, name) not in self._ignored_logged]
        if new:
            self._ignored_logged.update((line, name) for name in new)
            log.info(
                "rule at line %d sets variables mailtoaster does not implement, ignored: %s",
                line,
                ",".join(new),
            )

    def _state(self, session: Session) -> ConnectionState:
        state = self._connections.get(session)
        if state is None:  # a session we did not greet ourselves (tests driving hooks directly)
            self.connection_refusal(session)
            state = self._connections[session]
        return state

    # -- aiosmtpd hooks --------------------------------------------------------------------------

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        extensions = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        return [*responses[:-1], *extensions, responses[-1]]

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address != NULL_PATH:
            if not address.isascii() and not envelope.smtp_utf8:
                return NON_ASCII_REFUSAL
            if (problem := _address_problem(address)) is not None:
                return f"553 5.1.7 Sender address rejected: {problem}"
        self._state(session).expansions.clear()
        envelope.mail_from = address  # "<>" stays "<>": aiosmtpd takes an empty mail_from for "no MAIL yet"
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        state = self._state(session)
        limits = [limit for limit in (self._max_recipients, state.policy.rcpt_limit) if limit]
        if limits and len(envelope.rcpt_tos) >= min(limits):
            return "452 4.5.3 Too many recipients"
        if not address.isascii() and not envelope.smtp_utf8:
            return NON_ASCII_REFUSAL
        if address.lower() == POSTMASTER:  # RFC 5321 §4.5.1: must be accepted without a domain
            domain = self._primary_domain()
            if domain is None:
                return "550 5.1.1 No postmaster here"
            address = f"{POSTMASTER}@{domain}"
        try:
            local_part, domain = parse_mailbox(address)
        except AddressError as error:
            return f"553 5.1.3 Recipient address rejected: {error}"
        recipient = f"{local_part}@{domain}"
        if (refusal := self._recipient_refusal(recipient)) is not None:
            return refusal
        local, found = self._look_up(recipient, domain)
        if local:
            if found is None:
                return self._unknown_recipient(server, state, address)
            state.expansions[recipient] = Expansion(
                tuple(user.email for user in found.mailboxes), found.forwards
            )
        elif not (state.policy.relay or session.authenticated):
            log.info("client=%s relay denied rcpt=<%s>", _peer(session), address)
            return "554 5.7.1 Relay access denied"
        envelope.rcpt_tos.append(recipient)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Recipient OK"

    def _look_up(self, address: str, domain: str) -> tuple[bool, Resolution | None]:
        """(is the domain ours, where the address goes). On the event loop: two indexed SQLite reads
        in WAL mode (no writer blocks them) cost tens of microseconds, less than a hand-off to a
        worker thread, whose contention for the GIL cost more CPU than the look-up in profiles."""
        if not self._directory.is_local_domain(domain):
            return False, None
        try:
            return True, self._directory.resolve(address)
        except ValueError:  # a local part our accounts can never have (quoted, '/', ...)
            return True, None

    def _unknown_recipient(self, server: Any, state: ConnectionState, address: str) -> str:
        state.unknown_recipients += 1
        limit = state.policy.wrong_rcpt_limit
        if limit is not None and state.unknown_recipients > limit:
            log.info("unknown recipients over CHKUSER_WRONGRCPTLIMIT=%d, closing", limit)
            server.close_after_reply()
            return "421 4.7.0 Too many unknown recipients, closing connection"
        return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"

    async def handle_exception(self, error: Exception) -> str:
        """A fault of ours while a command was handled (the directory unreadable, a bug): the client
        gets a temporary failure and retries, instead of aiosmtpd's ``500`` carrying the exception's
        text, which would make it bounce the mail and would show it our internals."""
        log.error("internal error handling a command: %s: %s", type(error).__name__, error, exc_info=error)
        return INTERNAL_ERROR

    async def handle_message(
        self, server: Any, session: Session, envelope: Envelope, spool: Path | bytes, size: int
    ) -> str:
        state = self._state(session)
        submission = Submission(
            client_ip=_peer(session),
            client_name=session.host_name or "",
            mail_from="" if envelope.mail_from == NULL_PATH else envelope.mail_from or "",
            recipients=tuple(envelope.rcpt_tos),
            policy=state.policy,
            authenticated_as=_login(session),
            tls=server.transport is not None and server.transport.get_extra_info("sslcontext") is not None,
            extended=bool(session.extended_smtp),
            spool=spool,
            size=size,
            expansions=dict(state.expansions),
        )
        return await self._pipeline.process(submission)


def _peer(session: Session) -> str:
    return str(session.peer[0]) if session.peer else ""


def _login(session: Session) -> str | None:
    if not session.authenticated:
        return None
    credentials = session.auth_data
    login = credentials.login if isinstance(credentials, LoginPassword) else credentials
    return login.decode("utf-8", errors="replace") if isinstance(login, bytes) else str(login)


def _address_problem(address: str) -> str | None:
    try:
        parse_mailbox(address)
    except AddressError as error:
        return str(error)
    return None
