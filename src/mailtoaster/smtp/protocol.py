"""aiosmtpd's SMTP protocol, subclassed where the server needs more than it offers.

aiosmtpd 1.4.6 is pinned: :meth:`MailtoasterSMTP.smtp_DATA` replaces its DATA handling, which would
buffer the whole message in memory and let bare CR/LF through, and the AUTH mechanisms are replaced so
that password checks (argon2, tens of milliseconds) run in a worker thread instead of stalling every
other connection. The rest — command parsing, STARTTLS, pipelined command order — is aiosmtpd's.

What to do with a connection, an envelope or a message is the handler's business
(:class:`mailtoaster.smtp.handler.SmtpHandler`); this class only speaks the protocol.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailtoaster.smtp.data import DataSink
from mailtoaster.smtp.replies import printable_reply, with_enhanced_code

log = logging.getLogger("mailtoaster.smtp")

PasswordCheck = Callable[[str, str], Awaitable[bool]]
"""``(login, password) -> ok``; runs the slow hash comparison off the event loop."""


class MessageHandler(Protocol):
    """What :class:`MailtoasterSMTP` needs from its handler beyond aiosmtpd's hooks."""

    def connection_refusal(self, session: Session) -> str | None:
        """A reply that refuses the connection (tcprules ``deny``), or None to greet it."""

    async def handle_message(
        self, server: MailtoasterSMTP, session: Session, envelope: Envelope, spool: Path, size: int
    ) -> str:
        """Decide on a complete, well-formed message spooled at ``spool``; returns the reply."""


class MailtoasterSMTP(SMTP):
    """One SMTP connection. ``spool_dir`` receives each message while DATA is read."""

    def __init__(
        self,
        handler: Any,
        *,
        spool_dir: Path,
        password_check: PasswordCheck | None,
        max_line_length: int = 998,
        connections: set[MailtoasterSMTP] | None = None,
        **kwargs: Any,
    ) -> None:
        # The reader's buffer bounds one line: text, a transparency dot and CRLF. It must be set before
        # aiosmtpd makes the StreamReader in its __init__.
        self.line_length_limit = max_line_length + 3
        super().__init__(handler, **kwargs)
        self._spool_dir = spool_dir
        self._password_check = password_check
        self._max_line_length = max_line_length
        self._in_greeting_or_ehlo = False
        self._close_after_reply = False
        self.busy = False
        """True from DATA until its reply is sent: shutdown waits for it (the message is in flight)."""
        self._connections = connections if connections is not None else set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connections.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._connections.discard(self)
        super().connection_lost(error)

    def close_for_shutdown(self) -> None:
        """Tell an idle client we are going away (RFC 5321 §3.8: 421) and close."""
        self._close_with(b"421 4.3.2 Service shutting down, try again later\r\n")

    def _timeout_cb(self) -> None:
        """A client silent for ``timeout`` seconds is told why it is cut off (421, as Postfix does)
        instead of finding the connection simply gone."""
        log.info("client=%s silent for %gs, closing", self._peer_ip(), self._timeout_duration)
        self._close_with(f"421 4.4.2 {self.hostname} Error: timeout exceeded\r\n".encode("ascii", "replace"))

    def _peer_ip(self) -> str:
        return str(self.session.peer[0]) if self.session is not None and self.session.peer else ""

    def _close_with(self, reply: bytes) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(reply)
            transport.close()

    # -- replies -------------------------------------------------------------------------------

    async def push(self, status: Any) -> None:
        """Every reply leaves with an enhanced status code (RFC 2034), except the greeting and the
        EHLO/HELO response, which the RFC leaves without one."""
        if isinstance(status, str):
            status = printable_reply(status)  # aiosmtpd echoes unknown commands, NUL bytes and all
            if not self._in_greeting_or_ehlo:
                status = with_enhanced_code(status)
        await super().push(status)
        if self._close_after_reply and self.transport is not None:
            self.transport.close()

    def close_after_reply(self) -> None:
        """Close the connection once the next reply is sent (a 421 that ends the session)."""
        self._close_after_reply = True

    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_greeting_or_ehlo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_greeting_or_ehlo = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._in_greeting_or_ehlo = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_greeting_or_ehlo = False

    async def smtp_VRFY(self, arg: str) -> None:
        """Never confirm addresses (RFC 5321 §3.5.3 allows 252): VRFY is a harvesting tool."""
        await self.push("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")

    # -- the connection ------------------------------------------------------------------------

    async def _handle_client(self) -> None:
        assert self.session is not None
        refusal = self.event_handler.connection_refusal(self.session)
        if refusal is not None:
            self.close_after_reply()
            await self.push(refusal)
            return
        await super()._handle_client()

    # -- DATA ----------------------------------------------------------------------------------

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        self.busy = True
        try:
            await self._receive_message()
        finally:
            self.busy = False

    async def _receive_message(self) -> None:
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        spool, spool_file = _new_spool_file(self._spool_dir)
        with spool_file:
            try:
                sink = DataSink(
                    spool_file,
                    max_size=self.data_size_limit or 2**62,
                    max_line_length=self._max_line_length,
                )
                await self._read_data(sink)
            except BaseException:
                spool.unlink(missing_ok=True)
                raise
        try:
            if sink.refusal is not None:
                status = sink.refusal.reply
                self._log_refusal(sink)
            else:
                status = await self._message_reply(spool, sink.written)
        finally:
            spool.unlink(missing_ok=True)
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    def _log_refusal(self, sink: DataSink) -> None:
        sender = self.envelope.mail_from if self.envelope is not None else None
        log.info(
            "client=%s from=<%s> refused while reading DATA: %s after %d octets",
            self._peer_ip(),
            sender or "",
            sink.problem.value,
            sink.received,
        )

    async def _read_data(self, sink: DataSink) -> None:
        """Feed the sink until the end-of-data line. The idle timer restarts while data keeps coming:
        the timeout is for a client that stops, not for a large message on a slow link (aiosmtpd
        restarts it only per command). A tenth of the timeout apart at most, not per line: cheap."""
        restart_every = self._timeout_duration / 10
        restarted = self.loop.time()
        while self.transport is not None:
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as overrun:
                sink.overlong(await self._reader.read(overrun.consumed))
                line = b""
            if self.loop.time() - restarted >= restart_every:
                self._reset_timeout()
                restarted = self.loop.time()
            if line and sink.line(line):
                return

    async def _message_reply(self, spool: Path, size: int) -> str:
        assert self.session is not None and self.envelope is not None
        handler: MessageHandler = self.event_handler
        return await handler.handle_message(self, self.session, self.envelope, spool, size)

    # -- AUTH ----------------------------------------------------------------------------------

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            answer = await self.challenge_auth("")
            if not isinstance(answer, bytes):
                return AuthResult(success=False)
        else:
            try:
                answer = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        parts = answer.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Cannot split the PLAIN response (authzid NUL authcid NUL passwd)")
            return AuthResult(success=False, handled=True)
        return await self._check_password(parts[1], parts[2])

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False)
        else:
            try:
                login = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False)
        return await self._check_password(login, password)

    async def _check_password(self, login: bytes, password: bytes) -> AuthResult:
        if self._password_check is None:
            return AuthResult(success=False, handled=False, message="454 4.7.0 Authentication unavailable")
        try:
            login_text, password_text = login.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False)
        if await self._password_check(login_text, password_text):
            return AuthResult(success=True, auth_data=LoginPassword(login, b""))
        log.info("authentication failed for %r", login_text[:100])
        return AuthResult(success=False, handled=False)  # smtp_AUTH answers 535 5.7.8


_spool_names = itertools.count()


def _new_spool_file(directory: Path) -> tuple[Path, BinaryIO]:
    """A new file for one message: named by process and counter (unique while the process lives; the
    spool is emptied at start), created exclusively, readable by this user only. Cheaper than
    ``tempfile``'s random names, which showed in profiles at a few hundred messages a second."""
    while True:
        path = directory / f"in.{os.getpid()}.{next(_spool_names)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        except FileNotFoundError:
            directory.mkdir(parents=True, exist_ok=True)
            continue
        return path, os.fdopen(fd, "wb")
