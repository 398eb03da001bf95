"""The IMAP listeners of ``mailtoaster serve``: IMAP with STARTTLS and IMAP over implicit TLS (RFC 8314),
one :class:`~mailtoaster.imap.session.ImapSession` per connection, and the junk learner they share.

They run in the server's main process only (see docs/imap.md): the SMTP worker processes exist to
spread CPU-bound message work over the cores, while an IMAP session mostly waits on its client and
does its file work in threads. One process also keeps every session of a user in the same snapshot
cache (a repeated SELECT costs a few ``stat`` calls) and keeps one learner thread per server.

TLS is the server's own (``[tls]``, or the self-signed pair SMTP makes on first start): STARTTLS is
offered on the IMAP port and the IMAPS port speaks TLS from the first byte. Shutdown closes the
listeners, sends ``* BYE`` to every session (at once to those waiting for their client, after the
command in progress to the others), waits for them briefly, and lets the learner finish its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mailtoaster.config import Config
from mailtoaster.imap.learning import JunkLearner
from mailtoaster.imap.session import Accounts, ImapSession, SessionServices, SessionSettings
from mailtoaster.spam import SpamFilter
from mailtoaster.store import Directory

log = logging.getLogger("mailtoaster.imap")

STOP_GRACE = 10.0
"""Seconds sessions get to finish their command and say BYE when the server stops."""
DEFAULT_MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class ImapListenerSettings:
    """Where to listen; a port of None is off (0 lets the system choose one, for tests)."""

    bind: tuple[str, ...] = ("127.0.0.1",)
    imap_port: int | None = 1430
    imaps_port: int | None = 9930
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class ImapServer:
    """``await start()`` binds and serves; ``await stop()`` ends every session with BYE."""

    def __init__(
        self,
        listeners: ImapListenerSettings,
        session: SessionSettings,
        *,
        accounts: Accounts,
        tls: ssl.SSLContext | None,
        spam_filter: SpamFilter | None = None,
        spam_max_size: int = 512_000,
    ) -> None:
        self._listeners = listeners
        self.learner = JunkLearner(spam_filter, max_size=spam_max_size)
        self._tls = tls
        self._services = SessionServices(accounts, session, tls=tls, learner=self.learner)
        self.servers: dict[str, list[asyncio.Server]] = {"imap": [], "imaps": []}
        self._sessions: set[ImapSession] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def ports(self, name: str) -> list[int]:
        """The ports the ``imap`` or ``imaps`` listeners are bound to."""
        return sorted({sock.getsockname()[1] for server in self.servers[name] for sock in server.sockets})

    async def start(self) -> None:
        """Bind every listener (an OSError, e.g. a port in use, closes the ones bound) and serve."""
        try:
            await self._bind("imap", self._listeners.imap_port, None)
            if self._listeners.imaps_port is not None:
                if self._tls is None:
                    raise ValueError("IMAPS needs a TLS certificate")
                await self._bind("imaps", self._listeners.imaps_port, self._tls)
        except BaseException:
            self._close_listeners()
            raise
        self.learner.start()

    async def _bind(self, name: str, port: int | None, context: ssl.SSLContext | None) -> None:
        if port is None:
            return
        implicit = context is not None

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(reader, writer, implicit=implicit)

        for address in self._listeners.bind:
            server = await asyncio.start_server(connected, address, port, ssl=context, reuse_address=True)
            self.servers[name].append(server)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, implicit: bool
    ) -> None:
        task = asyncio.current_task()
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "unknown"
        if len(self._sessions) >= self._listeners.max_connections:
            log.warning("imap client=%s refused: %d connections already", peer, len(self._sessions))
            with contextlib.suppress(Exception):
                writer.write(b"* BYE Too many connections, try again later.\r\n")
                await writer.drain()
                writer.close()
            return
        session = ImapSession(reader, writer, self._services, peer=peer, tls_active=implicit)
        self._sessions.add(session)
        if task is not None:
            self._tasks.add(task)
        log.debug("imap client=%s connected tls=%s", peer, "yes" if implicit else "no")
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            if task is not None:
                self._tasks.discard(task)

    def _close_listeners(self) -> None:
        for servers in self.servers.values():
            for server in servers:
                server.close()

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop listening, end every session with BYE, let the learner finish."""
        self._close_listeners()
        for session in list(self._sessions):
            session.request_stop()
        tasks = list(self._tasks)
        if tasks:
            _, running = await asyncio.wait(tasks, timeout=grace)
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running, timeout=grace)
        await asyncio.to_thread(self.learner.stop)

    def welcome_lines(self) -> list[str]:
        """What ``serve`` prints about the IMAP listeners."""
        notes = {"imap": "(STARTTLS)", "imaps": "(TLS)"}
        lines = []
        for name, servers in self.servers.items():
            addresses = sorted(
                {
                    f"{_host(sock.getsockname())}:{sock.getsockname()[1]}"
                    for server in servers
                    for sock in server.sockets
                }
            )
            for address in addresses:
                lines.append(f"  {name:<11} {address} {notes[name]}")
        return lines


def _host(sockname: Sequence[object]) -> str:
    host = str(sockname[0])
    return f"[{host}]" if ":" in host else host


class HostServer(Protocol):
    """What the IMAP server takes from :class:`~mailtoaster.server.app.MailServer`."""

    config: Config
    directory: Directory
    hostname: str
    spam_filter: SpamFilter | None


async def imap_server_for(host: HostServer, tls: ssl.SSLContext) -> ImapServer | None:
    """The IMAP server ``host``'s ``[imap]`` configuration asks for, started; None when both ports
    are 0. Raises OSError when a port cannot be bound."""
    settings = host.config.imap
    if not settings.imap_port and not settings.imaps_port:
        return None
    listeners = ImapListenerSettings(
        bind=settings.bind or host.config.server.bind,
        imap_port=settings.imap_port or None,
        imaps_port=settings.imaps_port or None,
        max_connections=settings.max_connections,
    )
    session = SessionSettings(
        allow_plaintext_on_loopback=settings.allow_plaintext_on_loopback,
        append_limit=settings.append_limit,
        idle_poll_interval=settings.idle_poll_interval,
        autologout=settings.autologout,
        hostname=host.hostname,
    )
    server = ImapServer(
        listeners,
        session,
        accounts=host.directory,
        tls=tls,
        spam_filter=host.spam_filter,
        spam_max_size=host.config.spam.max_size,
    )
    await server.start()
    return server
