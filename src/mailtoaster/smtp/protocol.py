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
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosmtpd.smtp
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailtoaster.smtp.data import IN_MEMORY_LIMIT, DataSink, SpoolBuffer
from mailtoaster.smtp.replies import printable_reply, with_enhanced_code

log = logging.getLogger("mailtoaster.smtp")

DATA_PIECE = 64 * 1024
"""Octets taken from the connection at a time during DATA."""

PasswordCheck = Callable[[str, str], Awaitable[bool]]
"""``(login, password) -> ok``; runs the slow hash comparison off the event loop."""


_FAST_INIT_ARGUMENTS = frozenset(
    {"data_size_limit", "enable_SMTPUTF8", "hostname", "ident", "tls_context", "timeout"}
    | {"auth_required", "auth_require_tls", "loop"}
)
"""The aiosmtpd constructor arguments :meth:`MailtoasterSMTP._init_known` handles; any other one
takes aiosmtpd's own path."""

_SIMPLE_PATH = re.compile(
    r"<((?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\.)*[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
    r"@(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+)>(?=[ \t]|\Z)"
)
"""``<dot-atom@domain>``, what nearly every MAIL and RCPT carries: for it, the address is the text
between the brackets, with no need for the email package's full RFC 5322 parser."""


@dataclass(frozen=True)
class _Introspection:
    """What aiosmtpd's constructor finds by introspecting a protocol class and a handler class, as
    attribute names, so that later connections bind them without looking again."""

    auth: tuple[tuple[str, str, bool], ...]
    """(mechanism, attribute, the attribute is the protocol's own)."""
    hooks: tuple[tuple[str, str], ...]
    """(command, the handler's attribute)."""
    commands: tuple[tuple[str, str], ...]
    """(command, the protocol's attribute)."""
    ehlo_hook_ver: str | None

    @classmethod
    def of(cls, protocol: SMTP) -> _Introspection:
        def name(method: Any) -> str:
            return str(method.__name__)

        return cls(
            tuple(
                (mechanism, name(attr.method), attr.is_builtin)
                for mechanism, attr in protocol._auth_methods.items()
            ),
            tuple((command, name(hook)) for command, hook in protocol._handle_hooks.items()),
            tuple((command, name(method)) for command, method in protocol._smtp_methods.items()),
            protocol._ehlo_hook_ver,
        )


_introspected: dict[tuple[type, type], _Introspection] = {}


class MessageHandler(Protocol):
    """What :class:`MailtoasterSMTP` needs from its handler beyond aiosmtpd's hooks."""

    def connection_refusal(self, session: Session) -> str | None:
        """A reply that refuses the connection (tcprules ``deny``), or None to greet it."""

    async def handle_message(
        self, server: MailtoasterSMTP, session: Session, envelope: Envelope, spool: Path | bytes, size: int
    ) -> str:
        """Decide on a complete, well-formed message (spooled at ``spool``, or ``spool`` itself when
        small); returns the reply."""


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
        known = _introspected.get((type(self), type(handler)))
        if known is not None and kwargs.keys() <= _FAST_INIT_ARGUMENTS:
            self._init_known(handler, known, **kwargs)
        else:
            super().__init__(handler, **kwargs)
            _introspected[(type(self), type(handler))] = _Introspection.of(self)
        self._spool_dir = spool_dir
        self._password_check = password_check
        self._max_line_length = max_line_length
        self._in_greeting_or_ehlo = False
        self._close_after_reply = False
        self.busy = False
        """True from DATA until its reply is sent: shutdown waits for it (the message is in flight)."""
        self._connections = connections if connections is not None else set()

    def _init_known(
        self,
        handler: Any,
        known: _Introspection,
        *,
        loop: asyncio.AbstractEventLoop,
        data_size_limit: int | None = aiosmtpd.smtp.DATA_SIZE_DEFAULT,
        enable_SMTPUTF8: bool = False,
        hostname: str | None = None,
        ident: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = 300,
        auth_required: bool = False,
        auth_require_tls: bool = True,
    ) -> None:
        """aiosmtpd 1.4.6's ``SMTP.__init__`` for the arguments we pass, minus its introspection
        (``inspect.getmembers`` and ``dir`` of the protocol and the handler, on every connection: a
        tenth of the CPU time of a whole transaction in profiles) and minus the warnings the first
        connection already gave. A test compares the two constructors' results attribute by attribute."""
        self.__ident__ = ident or aiosmtpd.smtp.__ident__
        self.loop = loop
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.event_handler = handler
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = False
        self.command_size_limits.clear()
        self.hostname = hostname or socket.getfqdn()
        self.tls_context = tls_context
        self.require_starttls = tls_context and False
        self._timeout_duration = timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = auth_require_tls
        self._proxy_timeout = None
        self._auth_callback = aiosmtpd.smtp.login_always_fail
        self._authenticator = None
        self._auth_required = auth_required
        self._auth_methods = {
            mechanism: aiosmtpd.smtp._AuthMechAttr(getattr(self if own else handler, attribute), own)
            for mechanism, attribute, own in known.auth
        }
        self._handle_hooks = {command: getattr(handler, attribute) for command, attribute in known.hooks}
        self._ehlo_hook_ver = known.ehlo_hook_ver
        self._smtp_methods = {command: getattr(self, attribute) for command, attribute in known.commands}
        self._enforce_call_limit = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's, with a fast path for the plain ``<local@domain>`` form, and "malformed" where
        the email package's parser breaks down instead of saying so (``MAIL FROM:<`` raises
        IndexError in it, which aiosmtpd would answer with a 500 naming the exception)."""
        simple = _SIMPLE_PATH.match(arg)
        if simple is not None:
            parameters = arg[simple.end() :].lstrip()
            if not parameters.startswith("("):  # a comment: aiosmtpd's parser drops it
                return simple.group(1), parameters
        try:
            return super()._getaddr(arg)
        except (IndexError, ValueError):
            return None, None

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
        spool = SpoolBuffer(self._spool_dir, IN_MEMORY_LIMIT)
        try:
            sink = DataSink(
                spool, max_size=self.data_size_limit or 2**62, max_line_length=self._max_line_length
            )
            await self._read_data(sink)
            spool.close()
            if sink.refusal is not None:
                status = sink.refusal.reply
                self._log_refusal(sink)
            else:
                status = await self._message_reply(spool.contents(), sink.written)
        finally:
            spool.discard()
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
        """Feed the sink what arrives until the end-of-data line, in the pieces the socket delivers.
        What came after that line (pipelined commands) goes back to the front of the reader's buffer,
        where aiosmtpd's command loop reads next (aiosmtpd reaches into ``_buffer`` itself, for
        STARTTLS). The idle timer restarts while data keeps coming: the timeout is for a client that
        stops, not for a large message on a slow link (aiosmtpd restarts it only per command). A tenth
        of the timeout apart at most, not per piece: cheap."""
        reader = self._reader
        restart_every = self._timeout_duration / 10
        restarted = self.loop.time()
        while self.transport is not None:
            piece = await reader.read(DATA_PIECE)
            if not piece:
                raise asyncio.IncompleteReadError(b"", None)
            if self.loop.time() - restarted >= restart_every:
                self._reset_timeout()
                restarted = self.loop.time()
            after = sink.feed(piece)
            if after is not None:
                if after:
                    reader._buffer[0:0] = after  # type: ignore[attr-defined]
                return

    async def _message_reply(self, spool: Path | bytes, size: int) -> str:
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
