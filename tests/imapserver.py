"""An IMAP server for tests: a directory with two users and :class:`ImapServer` in its own thread.

The server runs its own event loop in a thread, so tests use ordinary blocking clients (``imaplib``)
or an asyncio client (``aioimaplib``) in the test's own loop. Ports are chosen by the system. Passwords
are hashed with cheap argon2 parameters (the real ones cost tens of milliseconds per user).
:class:`RawClient` speaks bytes, for what no client library would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import itertools
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from mailtoaster.imap.server import ImapListenerSettings, ImapServer
from mailtoaster.imap.session import SessionSettings
from mailtoaster.server.tls import ensure_self_signed, server_context
from mailtoaster.spam import SpamFilter
from mailtoaster.spam.sqlite import SqliteTokenStore
from mailtoaster.store import Directory

DOMAIN = "example.org"
ALICE, ALICE_PASSWORD = "alice@example.org", "alice has a long password"
BOB, BOB_PASSWORD = "bob@example.org", "bob has another one"
TIMEOUT = 20.0
FAST_SETTINGS = SessionSettings(allow_plaintext_on_loopback=True, idle_poll_interval=0.1)
_message_numbers = itertools.count(1)


def message(
    subject: str = "Hello", body: str = "Just a test message.", sender: str = "carol@remote.example"
) -> bytes:
    """A small RFC 5322 message with CRLF line ends and a unique Message-ID."""
    token = f"{re.sub(r'[^A-Za-z0-9]', '', subject)[:40]}.{next(_message_numbers)}"
    return (
        f"From: Carol <{sender}>\r\nTo: Alice <{ALICE}>\r\nSubject: {subject}\r\n"
        f"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{token}@remote.example>\r\n"
        f"\r\n{body}\r\n"
    ).encode()


def ok(result: tuple[str, Any]) -> list[Any]:
    """An imaplib answer's data, after checking it is OK."""
    status, data = result
    assert status == "OK", data
    return list(data)


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class RunningImap:
    root: Path
    directory: Directory
    server: ImapServer
    spam_filter: SpamFilter | None
    loop: asyncio.AbstractEventLoop

    def port(self, name: str = "imap") -> int:
        return self.server.ports(name)[0]

    def connect(self) -> imaplib.IMAP4:
        return imaplib.IMAP4("127.0.0.1", self.port(), timeout=TIMEOUT)

    def client(self, user: str = ALICE, password: str | None = None) -> imaplib.IMAP4:
        """An imaplib client, logged in."""
        client = self.connect()
        client.login(user, password or (ALICE_PASSWORD if user == ALICE else BOB_PASSWORD))
        return client

    def raw(self) -> RawClient:
        return RawClient(self.port())

    def maildir(self, user: str = ALICE) -> Path:
        local, domain = user.split("@")
        return self.root / "mail" / domain / local / "Maildir"

    def wait_learned(self) -> None:
        assert self.server.learner.idle.wait(TIMEOUT), "the learner did not finish"

    def call(self, coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(TIMEOUT)  # type: ignore[arg-type]


@contextlib.contextmanager
def running_imap(
    root: Path,
    settings: SessionSettings = FAST_SETTINGS,
    *,
    spam: bool = True,
    max_connections: int = 100,
) -> Iterator[RunningImap]:
    """A running server for ``alice@`` and ``bob@example.org`` under ``root``; ``spam`` gives it a
    spam filter over an SQLite store in ``root`` (for the learning tests)."""
    root.mkdir(parents=True, exist_ok=True)
    directory = Directory.open(
        root / "directory.sqlite",
        mail_root=root / "mail",
        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
    )
    directory.add_domain(DOMAIN)
    directory.add_user(ALICE, ALICE_PASSWORD)
    directory.add_user(BOB, BOB_PASSWORD)
    cert, key = ensure_self_signed(root / "tls", "localhost")
    spam_filter = SpamFilter(SqliteTokenStore(root / "tokens.sqlite")) if spam else None
    server = ImapServer(
        ImapListenerSettings(imap_port=0, imaps_port=0, max_connections=max_connections),
        settings,
        accounts=directory,
        tls=server_context(cert, key),
        spam_filter=spam_filter,
    )
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="imap-test-server", daemon=True)
    thread.start()
    assert started.wait(TIMEOUT)
    running = RunningImap(root, directory, server, spam_filter, loop)
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(grace=5), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()
        directory.close()
        if spam_filter is not None:
            spam_filter.close()


class RawClient:
    """A socket speaking IMAP as bytes: ``send`` a line, ``until`` the tagged answer."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock: socket.socket = context.wrap_socket(sock) if context is not None else sock
        self.buffer = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; buffered {self.buffer[-200:]!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def until(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the one starting with ``tag`` (literals left inline)."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def command(self, text: bytes, tag: bytes = b"t") -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def login(self, user: str = ALICE, password: str = ALICE_PASSWORD) -> None:
        answer = self.command(f'LOGIN {user} "{password}"'.encode(), b"login")
        assert answer[-1].startswith(b"login OK"), answer

    def closed(self) -> bool:
        """Whether the server has closed the connection (after what is buffered)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
