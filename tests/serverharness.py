"""A whole mailtoaster server for tests: data directory, users, keys, a zone, rules, a remote SMTP sink.

The server runs in its own thread and event loop, so tests talk to it with ordinary blocking clients
(smtplib, swaks) over loopback. Every address is on 127.0.0.0/8: 127.0.0.1 is a relay client in the
rules below, 127.0.0.2 and 127.0.0.3 are strangers (the second with strict DKVERIFY and SPFBEHAVIOR).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from mailtoaster.config import (
    Config,
    DnsSettings,
    ImapSettings,
    QueueSettings,
    RulesSettings,
    ServerSettings,
)
from mailtoaster.keys import KeyType, create_key, list_keys
from mailtoaster.server import MailServer
from mailtoaster.store import Directory

LOCAL_DOMAIN = "example.org"
ALICE, ALICE_PASSWORD = "alice@example.org", "correct horse battery staple"
BOB = "bob@example.org"
REMOTE = "carol@remote.example"
SENDER_DOMAIN = "sender.example"
RELAY_CLIENT, STRANGER, STRICT_CLIENT, TEMPFAIL_CLIENT = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"
SENDER_SELECTOR = "dk"

RULES = f"""\
{RELAY_CLIENT}:allow,RELAYCLIENT=""
{STRICT_CLIENT}:allow,DKVERIFY="BDEGIJKfh",SPFBEHAVIOR="3",CHKUSER_WRONGRCPTLIMIT="2"
{TEMPFAIL_CLIENT}:allow,DKVERIFY="bdegijkfh"
127.0.0.9:deny
:allow,BADMIMETYPE="",BADLOADERTYPE="M",CHKUSER_RCPTLIMIT="50",QMAILQUEUE="/var/qmail/bin/simscan",DKVERIFY="DEGIJKfh",DKQUEUE="/var/qmail/bin/qmail-queue.orig"
"""


@dataclass
class Sink:
    """A remote SMTP server that keeps what it receives (or refuses, as told)."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    """Replies to give at DATA, one per message, before falling back to 250."""

    async def handle_DATA(self, server: object, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.pop(0)
        content = envelope.original_content or b""
        self.messages.append((envelope.mail_from or "", list(envelope.rcpt_tos), bytes(content)))
        return "250 2.0.0 stored"


def zone_text(keys_dir: Path, sender_keys_dir: Path) -> str:
    lines = [
        "$TTL 300",
        f"{LOCAL_DOMAIN}. IN MX 10 mx.{LOCAL_DOMAIN}.",
        f"mx.{LOCAL_DOMAIN}. IN A 127.0.0.1",
        f'{LOCAL_DOMAIN}. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
        f'_dmarc.{LOCAL_DOMAIN}. IN TXT "v=DMARC1; p=reject"',
        "remote.example. IN MX 10 mx.remote.example.",
        "mx.remote.example. IN A 127.0.0.1",
        f'{SENDER_DOMAIN}. IN TXT "v=spf1 ip4:127.0.0.2 ip4:127.0.0.3 -all"',
        'forged.example. IN TXT "v=spf1 ip4:192.0.2.1 -all"',
    ]
    for key in [*list_keys(keys_dir, LOCAL_DOMAIN), *list_keys(sender_keys_dir, SENDER_DOMAIN)]:
        record = key.dkim_record
        strings = " ".join(f'"{record[i : i + 200]}"' for i in range(0, len(record), 200))
        lines.append(f"{key.record_name}. IN TXT {strings}")
    return "\n".join(lines) + "\n"


class RunningServer:
    """``start()`` / ``stop()`` a :class:`MailServer` in a thread; ports are chosen by the system."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.server: MailServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mailtoaster-server", daemon=True)

    def start(self) -> RunningServer:
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        async def main() -> None:
            try:
                self.server = MailServer(self.config)
                await self.server.start()
            except BaseException as error:
                self._error = error
                self._started.set()
                return
            self._loop = asyncio.get_running_loop()
            self._started.set()
            await self.server.wait_stopped()

        asyncio.run(main())

    def port(self, name: str) -> int:
        assert self.server is not None
        return self.server.listeners[name].ports[0]

    def call(self, function: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(function)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.server is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.server.request_stop)
        self._thread.join(30)


@dataclass
class Installation:
    data_dir: Path
    sender_keys: Path
    config: Config
    sink: Sink
    sink_port: int
    running: RunningServer

    def smtp(self, source: str = STRANGER, port: str = "smtp") -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.running.port(port), source_address=(source, 0), timeout=30)
        client.ehlo("client.sender.example")
        return client

    def submission(self, source: str = STRANGER) -> smtplib.SMTP:
        client = self.smtp(source, "submission")
        client.starttls(context=insecure_context())
        client.ehlo("laptop.example.org")
        return client

    def maildir_messages(self, address: str, folder: str = "") -> list[bytes]:
        local, domain = address.split("@")
        root = self.data_dir / "mail" / domain / local / "Maildir"
        directory = root / f".{folder}" if folder else root
        found = sorted((directory / "new").glob("*")) + sorted((directory / "cur").glob("*"))
        return [path.read_bytes() for path in found]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def parse(raw: bytes) -> object:
    return BytesParser().parsebytes(raw)


def add_users(data_dir: Path) -> None:
    """The directory every test installation starts with: example.org, alice, bob and team@."""
    with Directory.open(data_dir / "directory.sqlite", mail_root=data_dir / "mail") as directory:
        directory.add_domain(LOCAL_DOMAIN)
        directory.add_user(ALICE, ALICE_PASSWORD)
        directory.add_user(BOB, "another long password", quarantine=True)
        directory.add_alias(f"team@{LOCAL_DOMAIN}", [ALICE, BOB])


@contextlib.contextmanager
def installation(
    tmp_path: Path,
    zone_extra: str = "",
    *,
    prepare: Callable[[Path], None] | None = None,
    **overrides: object,
) -> Iterator[Installation]:
    """A running installation; ``zone_extra`` adds zone lines, ``prepare(data_dir)`` runs before the
    server starts (a trained spam filter, other users), ``overrides`` replace settings per table
    (``installation(tmp_path, policy={"dmarc_reject": True})``)."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    add_users(data_dir)
    if prepare is not None:
        prepare(data_dir)
    keys_dir = data_dir / "keys"
    create_key(keys_dir, LOCAL_DOMAIN, "default", key_type=KeyType.RSA)
    create_key(keys_dir, LOCAL_DOMAIN, "ed2026", key_type=KeyType.ED25519)
    sender_keys = tmp_path / "sender-keys"
    create_key(sender_keys, SENDER_DOMAIN, SENDER_SELECTOR, key_type=KeyType.RSA)
    zone = tmp_path / "test.zone"
    zone.write_text(zone_text(keys_dir, sender_keys) + zone_extra)
    rules = tmp_path / "tcp.smtp"
    rules.write_text(RULES)
    sink = Sink()
    sink_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink_port)
    controller.start()
    config = Config(
        server=ServerSettings(
            hostname="mx.example.org",
            data_dir=str(data_dir),
            smtp_port=0,
            submission_port=0,
            smtps_port=0,
            max_message_size=200_000,
            timeout=20,
        ),
        rules=RulesSettings(file=str(rules)),
        dns=DnsSettings(zone_file=str(zone)),
        queue=QueueSettings(port=sink_port),
        imap=ImapSettings(imap_port=0, imaps_port=0),  # off unless a test asks (imap={...})
    )
    for table, values in overrides.items():
        config = dataclasses.replace(config, **{table: dataclasses.replace(getattr(config, table), **values)})  # type: ignore[arg-type]
    running = RunningServer(config).start()
    try:
        yield Installation(data_dir, sender_keys, config, sink, sink_port, running)
    finally:
        running.stop()
        controller.stop()
