"""Delivery attempts and the queue runner against real SMTP servers (aiosmtpd) on 127.0.0.0/8.

Every "remote" domain is given MX and A records in a :class:`StaticResolver` that point at loopback
addresses; all test servers of one test listen on the same port (``DeliveryConfig.port``), on
127.0.0.1 or another loopback address. Nothing listens on 127.0.0.2, so connecting there is refused.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.message
import email.policy
import ipaddress
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailtoaster.dns import MX, RRType, StaticResolver
from mailtoaster.queue import (
    DeliveryConfig,
    DeliveryResult,
    Queue,
    QueueEntry,
    QueueRunner,
    Recipient,
    RecipientState,
    RetryPolicy,
    Smarthost,
    SmtpReply,
    deliver,
    parse_smarthost,
)
from mailtoaster.queue.routing import order_mx

MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: test\r\n"
    b"Message-ID: <m1@example.org>\r\n\r\nHello.\r\n.leading dot\r\n"
)
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
REFUSING = ipaddress.IPv4Address("127.0.0.2")
OTHER_LOOPBACK = ipaddress.IPv4Address("127.0.0.3")


# -- test servers ----------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    helo: str
    mail_options: list[str]
    login: bytes | None


@dataclass
class Handler:
    """An aiosmtpd handler with scripted replies: per recipient, and for successive DATA commands."""

    name: str = "mx"
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)
    mail_reply: str | None = None
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    on_data: Callable[[], None] | None = None

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.on_data:
            self.on_data()
        if self.data_replies:
            reply = self.data_replies.pop(0)
            if not reply.startswith("250"):
                return reply
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content,
                session.ssl is not None,
                session.host_name,
                list(envelope.mail_options),
                login,
            )
        )
        return f"250 2.0.0 Ok: queued at {self.name}"


class Servers:
    """Starts aiosmtpd servers on loopback addresses, all on one port."""

    def __init__(self) -> None:
        self.port = 0
        self._servers: list[asyncio.Server] = []

    async def start(
        self, handler: Handler, address: ipaddress.IPv4Address = LOOPBACK, **options: Any
    ) -> Handler:
        def factory() -> SmtpServer:
            handler.connections += 1
            return SmtpServer(handler, hostname=handler.name, **options)

        server = await asyncio.get_running_loop().create_server(factory, str(address), self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._servers.append(server)
        return handler

    async def start_raw(self, greeting: bytes, address: ipaddress.IPv4Address = LOOPBACK) -> list[int]:
        """A server that sends ``greeting`` (or nothing, if empty) and then only reads."""
        connections: list[int] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(1)
            if greeting:
                writer.write(greeting)
            await reader.read()
            writer.close()

        server = await asyncio.start_server(serve, str(address), self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._servers.append(server)
        return connections

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    running = Servers()
    yield running
    await running.close()


@dataclass(frozen=True)
class Certificate:
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for mx.example.net and 127.0.0.1 (its own CA, for the verified case)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.net")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("mx.example.net"), x509.IPAddress(LOOPBACK)]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Certificate(cert_path, key_path)


# -- helpers ---------------------------------------------------------------------------------------


def resolver_for(
    *domains: tuple[str, Sequence[tuple[int, str, ipaddress.IPv4Address | None]]],
) -> StaticResolver:
    """``(domain, [(preference, mx host, address or None), ...])`` → MX and A records."""
    resolver = StaticResolver()
    for domain, exchanges in domains:
        for preference, host, address in exchanges:
            resolver.add(domain, RRType.MX, MX(preference, host))
            if address is not None:
                resolver.add(host, RRType.A, address)
    return resolver


def config_for(servers: Servers, **overrides: Any) -> DeliveryConfig:
    settings: dict[str, Any] = {
        "helo_name": "mail.example.org",
        "port": servers.port,
        "connect_timeout": 5.0,
        "command_timeout": 5.0,
        "data_timeout": 5.0,
    }
    settings.update(overrides)
    return DeliveryConfig(**settings)


def queued(
    tmp_path: Path, recipients: list[str], sender: str = "alice@example.org", clock: Any = None
) -> tuple[Queue, QueueEntry]:
    queue = Queue(tmp_path / "queue", **({"clock": clock} if clock else {}))
    return queue, queue.enqueue(MESSAGE, sender, recipients)


async def deliver_queued(
    tmp_path: Path, recipients: list[str], resolver: StaticResolver, config: DeliveryConfig
) -> dict[str, Any]:
    queue, entry = queued(tmp_path, recipients)
    outcomes = await deliver(entry, queue.message_path(entry.id), resolver, config)
    assert [o.recipient for o in outcomes] == recipients
    return {o.recipient: o for o in outcomes}


NET = ("example.net", [(10, "mx.example.net", LOOPBACK)])


# -- one attempt -----------------------------------------------------------------------------------


async def test_delivered(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler("mx.example.net"))
    outcomes = await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config_for(servers))
    outcome = outcomes["bob@example.net"]
    assert outcome.result is DeliveryResult.DELIVERED
    assert outcome.status == "2.0.0"
    assert outcome.diagnostic == "smtp; 250 2.0.0 Ok: queued at mx.example.net"
    assert outcome.remote_mta == "mx.example.net"
    assert outcome.relay == f"mx.example.net[127.0.0.1]:{servers.port}"
    (received,) = mx.received
    assert received.mail_from == "alice@example.org"
    assert received.rcpt_tos == ["bob@example.net"]
    assert received.content == MESSAGE  # byte for byte, dot-stuffing undone by the server
    assert received.helo == "mail.example.org"
    assert f"SIZE={len(MESSAGE)}" in received.mail_options


async def test_mixed_recipient_replies_in_one_transaction(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(
        Handler(
            "mx.example.net",
            rcpt_replies={
                "nobody@example.net": "550 5.1.1 <nobody@example.net>: Recipient address rejected",
                "later@example.net": "451 4.2.1 mailbox busy",
            },
        )
    )
    recipients = ["bob@example.net", "nobody@example.net", "later@example.net", "carol@example.net"]
    outcomes = await deliver_queued(tmp_path, recipients, resolver_for(NET), config_for(servers))
    assert outcomes["bob@example.net"].result is DeliveryResult.DELIVERED
    assert outcomes["carol@example.net"].result is DeliveryResult.DELIVERED
    nobody = outcomes["nobody@example.net"]
    assert (nobody.result, nobody.status) == (DeliveryResult.PERMANENT, "5.1.1")
    assert nobody.diagnostic == "smtp; 550 5.1.1 <nobody@example.net>: Recipient address rejected"
    later = outcomes["later@example.net"]
    assert (later.result, later.status) == (DeliveryResult.TEMPORARY, "4.2.1")
    (received,) = mx.received
    assert received.rcpt_tos == ["bob@example.net", "carol@example.net"]
    assert mx.connections == 1


async def test_recipients_of_two_domains_go_to_their_own_servers(servers: Servers, tmp_path: Path) -> None:
    net = await servers.start(Handler("mx.example.net"))
    com = await servers.start(Handler("mx.example.com"), OTHER_LOOPBACK)
    resolver = resolver_for(NET, ("example.com", [(5, "mx.example.com", OTHER_LOOPBACK)]))
    outcomes = await deliver_queued(
        tmp_path, ["bob@example.net", "carol@example.com"], resolver, config_for(servers)
    )
    assert {o.result for o in outcomes.values()} == {DeliveryResult.DELIVERED}
    assert [r.rcpt_tos for r in net.received] == [["bob@example.net"]]
    assert [r.rcpt_tos for r in com.received] == [["carol@example.com"]]
    assert outcomes["carol@example.com"].remote_mta == "mx.example.com"


async def test_falls_back_to_the_next_mx_when_the_first_refuses_connections(
    servers: Servers, tmp_path: Path
) -> None:
    backup = await servers.start(Handler("mx2.example.net"))
    resolver = resolver_for(
        ("example.net", [(10, "mx1.example.net", REFUSING), (20, "mx2.example.net", LOOPBACK)])
    )
    outcomes = await deliver_queued(tmp_path, ["bob@example.net"], resolver, config_for(servers))
    assert outcomes["bob@example.net"].result is DeliveryResult.DELIVERED
    assert outcomes["bob@example.net"].remote_mta == "mx2.example.net"
    assert len(backup.received) == 1


async def test_a_5xx_greeting_skips_to_the_next_mx(servers: Servers, tmp_path: Path) -> None:
    refusing = await servers.start_raw(b"554 5.7.1 no SMTP service here\r\n", OTHER_LOOPBACK)
    backup = await servers.start(Handler("mx2.example.net"))
    resolver = resolver_for(
        ("example.net", [(10, "mx1.example.net", OTHER_LOOPBACK), (20, "mx2.example.net", LOOPBACK)])
    )
    outcomes = await deliver_queued(tmp_path, ["bob@example.net"], resolver, config_for(servers))
    assert refusing == [1]
    assert outcomes["bob@example.net"].result is DeliveryResult.DELIVERED
    assert len(backup.received) == 1


async def test_every_mx_down_is_temporary(tmp_path: Path) -> None:
    resolver = resolver_for(
        ("example.net", [(10, "mx1.example.net", REFUSING), (20, "mx2.example.net", REFUSING)])
    )
    config = DeliveryConfig(helo_name="mail.example.org", port=2, connect_timeout=5)
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver, config))["bob@example.net"]
    assert (outcome.result, outcome.status) == (DeliveryResult.TEMPORARY, "4.4.1")
    assert "connect to mx2.example.net[127.0.0.2]:2" in outcome.diagnostic  # the last one tried
    assert outcome.remote_mta == ""


async def test_a_server_that_never_greets_times_out(servers: Servers, tmp_path: Path) -> None:
    await servers.start_raw(b"")
    config = config_for(servers, connect_timeout=0.3)
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config))[
        "bob@example.net"
    ]
    assert outcome.result is DeliveryResult.TEMPORARY
    assert outcome.status.startswith("4.4.")


async def test_helo_when_ehlo_is_refused(servers: Servers, tmp_path: Path) -> None:
    class OldServer(Handler):
        async def handle_EHLO(
            self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
        ) -> list[str]:
            return ["502 5.5.1 EHLO not implemented"]

    mx = await servers.start(OldServer())
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config_for(servers)))[
        "bob@example.net"
    ]
    assert outcome.result is DeliveryResult.DELIVERED
    assert mx.received[0].helo == "mail.example.org"
    assert mx.received[0].mail_options == []  # no ESMTP: no SIZE parameter


async def test_null_mx_is_a_permanent_failure(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler())
    resolver = StaticResolver(
        {("example.net", RRType.MX): [MX(0, "")], ("example.net", RRType.A): [LOOPBACK]}
    )
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver, config_for(servers)))[
        "bob@example.net"
    ]
    assert (outcome.result, outcome.status) == (DeliveryResult.PERMANENT, "5.1.10")
    assert "null MX" in outcome.diagnostic and outcome.diagnostic.startswith("x-mailtoaster; ")
    assert mx.connections == 0


async def test_no_mx_falls_back_to_the_domain_address(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler())
    resolver = StaticResolver({("example.net", RRType.A): [LOOPBACK]})
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver, config_for(servers)))[
        "bob@example.net"
    ]
    assert outcome.result is DeliveryResult.DELIVERED
    assert outcome.remote_mta == "example.net"
    assert len(mx.received) == 1


@pytest.mark.parametrize(
    ("resolver", "result", "status"),
    [
        (StaticResolver(timeouts={"example.net": []}), DeliveryResult.TEMPORARY, "4.4.3"),
        (StaticResolver({("other.test", RRType.A): [LOOPBACK]}), DeliveryResult.PERMANENT, "5.1.2"),
        (
            StaticResolver({("example.net", RRType.TXT): [(b"v=spf1 -all",)]}),
            DeliveryResult.PERMANENT,
            "5.4.4",
        ),
        (
            StaticResolver({("example.net", RRType.MX): [MX(10, "gone.example.net")]}),
            DeliveryResult.TEMPORARY,
            "4.4.4",
        ),
        (
            StaticResolver(
                {("example.net", RRType.MX): [MX(10, "mx.example.net")]}, timeouts={"mx.example.net": []}
            ),
            DeliveryResult.TEMPORARY,
            "4.4.3",
        ),
    ],
    ids=["mx-timeout", "nxdomain", "no-mx-no-address", "mx-without-address", "mx-address-timeout"],
)
async def test_dns_outcomes(
    tmp_path: Path, resolver: StaticResolver, result: DeliveryResult, status: str
) -> None:
    config = DeliveryConfig(helo_name="mail.example.org", port=2)
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver, config))["bob@example.net"]
    assert (outcome.result, outcome.status) == (result, status)


async def test_mx_pointing_at_ourselves_is_a_loop(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler())
    config = config_for(servers, local_addresses=frozenset({LOOPBACK}))
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config))[
        "bob@example.net"
    ]
    assert (outcome.result, outcome.status) == (DeliveryResult.PERMANENT, "5.4.6")
    assert "loops back to myself" in outcome.diagnostic
    assert mx.connections == 0


async def test_mx_named_like_us_is_a_loop(tmp_path: Path) -> None:
    resolver = resolver_for(("example.net", [(10, "Mail.Example.Org", LOOPBACK)]))
    config = DeliveryConfig(helo_name="mail.example.org", port=2)
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver, config))["bob@example.net"]
    assert outcome.status == "5.4.6"


async def test_as_backup_mx_only_better_mx_hosts_are_tried(servers: Servers, tmp_path: Path) -> None:
    primary = await servers.start(Handler("primary.example.net"), OTHER_LOOPBACK)
    ourselves = await servers.start(Handler("us"))
    resolver = resolver_for(
        (
            "example.net",
            [
                (10, "primary.example.net", OTHER_LOOPBACK),
                (20, "us.example.org", LOOPBACK),
                (30, "last.example.net", LOOPBACK),
            ],
        )
    )
    config = config_for(servers, local_addresses=frozenset({LOOPBACK}))
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver, config))["bob@example.net"]
    assert outcome.result is DeliveryResult.DELIVERED
    assert len(primary.received) == 1 and ourselves.connections == 0


def test_mx_order_lowest_first_random_among_equals() -> None:
    records = [MX(20, "c"), MX(10, "a"), MX(10, "b"), MX(30, "d")]
    orders = {tuple(h.name for h in order_mx(records, random.Random(seed))) for seed in range(40)}
    assert orders == {("a", "b", "c", "d"), ("b", "a", "c", "d")}


async def test_starttls_is_used_when_offered(
    servers: Servers, tmp_path: Path, certificate: Certificate
) -> None:
    mx = await servers.start(Handler("mx.example.net"), tls_context=certificate.server_context())
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config_for(servers)))[
        "bob@example.net"
    ]
    assert outcome.result is DeliveryResult.DELIVERED
    assert outcome.tls
    (received,) = mx.received
    assert received.tls  # the server saw the transaction inside TLS (self-signed: not verified)


async def test_plaintext_when_starttls_is_not_offered(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler())
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config_for(servers)))[
        "bob@example.net"
    ]
    assert outcome.result is DeliveryResult.DELIVERED and not outcome.tls
    assert not mx.received[0].tls


async def test_failed_opportunistic_handshake_falls_back_to_plaintext(
    servers: Servers, tmp_path: Path, certificate: Certificate
) -> None:
    context = certificate.server_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("@SECLEVEL=0:ECDHE-ECDSA-AES128-SHA")  # SHA-1 suites: refused by our client
    mx = await servers.start(Handler(), tls_context=context)
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config_for(servers)))[
        "bob@example.net"
    ]
    assert outcome.result is DeliveryResult.DELIVERED and not outcome.tls
    assert mx.connections == 2  # the failed handshake, then the same server in plaintext
    assert not mx.received[0].tls


async def test_failed_handshake_with_require_tls_is_temporary(
    servers: Servers, tmp_path: Path, certificate: Certificate
) -> None:
    context = certificate.server_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("@SECLEVEL=0:ECDHE-ECDSA-AES128-SHA")
    mx = await servers.start(Handler(), tls_context=context)
    config = config_for(servers, require_tls=True)
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config))[
        "bob@example.net"
    ]
    assert (outcome.result, outcome.status) == (DeliveryResult.TEMPORARY, "4.7.5")
    assert mx.connections == 1 and mx.received == []


async def test_require_tls_refuses_plaintext(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler())
    config = config_for(servers, require_tls=True)
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config))[
        "bob@example.net"
    ]
    assert (outcome.result, outcome.status) == (DeliveryResult.TEMPORARY, "4.7.4")
    assert "TLS is required" in outcome.diagnostic
    assert mx.received == []


async def test_require_tls_with_starttls(servers: Servers, tmp_path: Path, certificate: Certificate) -> None:
    mx = await servers.start(Handler(), tls_context=certificate.server_context())
    config = config_for(servers, require_tls=True)
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config))[
        "bob@example.net"
    ]
    assert outcome.result is DeliveryResult.DELIVERED and mx.received[0].tls


def accept_password(password: bytes) -> Callable[..., AuthResult]:
    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return authenticator


async def test_smarthost_with_auth_over_verified_tls(
    servers: Servers, tmp_path: Path, certificate: Certificate
) -> None:
    relay = await servers.start(
        Handler("relay"),
        tls_context=certificate.server_context(),
        authenticator=accept_password(b"s3cret"),
        auth_required=True,
    )
    smarthost = parse_smarthost(
        f"[127.0.0.1]:{servers.port}", username="alice", password="s3cret", ca_file=str(certificate.cert_path)
    )
    config = config_for(servers, smarthost=smarthost, port=2)  # the MX port is not used
    resolver = StaticResolver()  # no DNS at all: the smarthost skips MX lookups
    outcomes = await deliver_queued(tmp_path, ["bob@example.net", "carol@example.com"], resolver, config)
    assert {o.result for o in outcomes.values()} == {DeliveryResult.DELIVERED}
    (received,) = relay.received  # one transaction for both domains
    assert received.rcpt_tos == ["bob@example.net", "carol@example.com"]
    assert received.tls and received.login == b"alice"


async def test_smarthost_wrong_password_is_temporary(
    servers: Servers, tmp_path: Path, certificate: Certificate
) -> None:
    relay = await servers.start(
        Handler("relay"), tls_context=certificate.server_context(), authenticator=accept_password(b"right")
    )
    smarthost = Smarthost("127.0.0.1", servers.port, "alice", "wrong", ca_file=str(certificate.cert_path))
    config = config_for(servers, smarthost=smarthost)
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], StaticResolver(), config))[
        "bob@example.net"
    ]
    assert outcome.result is DeliveryResult.TEMPORARY
    assert outcome.diagnostic.startswith("smtp; 535")
    assert relay.received == []


async def test_smarthost_certificate_must_verify(
    servers: Servers, tmp_path: Path, certificate: Certificate
) -> None:
    relay = await servers.start(
        Handler("relay"), tls_context=certificate.server_context(), authenticator=accept_password(b"pw")
    )
    smarthost = Smarthost("127.0.0.1", servers.port, "alice", "pw")  # system CAs: the self-signed cert fails
    outcome = (
        await deliver_queued(
            tmp_path, ["bob@example.net"], StaticResolver(), config_for(servers, smarthost=smarthost)
        )
    )["bob@example.net"]
    assert (outcome.result, outcome.status) == (DeliveryResult.TEMPORARY, "4.7.5")
    assert relay.received == []


@pytest.mark.parametrize(
    ("reply", "result", "status"),
    [
        ("554 5.6.0 content rejected", DeliveryResult.PERMANENT, "5.6.0"),
        ("452 4.3.1 insufficient storage", DeliveryResult.TEMPORARY, "4.3.1"),
        ("550 rejected without enhanced code", DeliveryResult.PERMANENT, "5.0.0"),
    ],
)
async def test_reply_to_the_data(
    servers: Servers, tmp_path: Path, reply: str, result: DeliveryResult, status: str
) -> None:
    await servers.start(Handler("mx.example.net", data_replies=[reply]))
    outcomes = await deliver_queued(
        tmp_path, ["bob@example.net", "carol@example.net"], resolver_for(NET), config_for(servers)
    )
    for outcome in outcomes.values():
        assert (outcome.result, outcome.status) == (result, status)
        assert outcome.diagnostic == f"smtp; {reply}"


async def test_sender_refused(servers: Servers, tmp_path: Path) -> None:
    await servers.start(Handler(mail_reply="553 5.7.1 sender not allowed"))
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config_for(servers)))[
        "bob@example.net"
    ]
    assert (outcome.result, outcome.status) == (DeliveryResult.PERMANENT, "5.7.1")


async def test_size_advertised_by_the_server_is_respected(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler(), data_size_limit=40)
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config_for(servers)))[
        "bob@example.net"
    ]
    assert (outcome.result, outcome.status) == (DeliveryResult.PERMANENT, "5.3.4")
    assert mx.received == []


async def test_international_domain_needs_smtputf8(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler(), enable_SMTPUTF8=True)
    resolver = resolver_for(("xn--bcher-kva.example", [(10, "mx.xn--bcher-kva.example", LOOPBACK)]))
    outcome = (await deliver_queued(tmp_path, ["bob@bücher.example"], resolver, config_for(servers)))[
        "bob@bücher.example"
    ]
    assert outcome.result is DeliveryResult.DELIVERED
    (received,) = mx.received
    assert received.rcpt_tos == ["bob@bücher.example"] and "SMTPUTF8" in received.mail_options


async def test_international_address_without_smtputf8_bounces(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler())
    outcome = (await deliver_queued(tmp_path, ["jörg@example.net"], resolver_for(NET), config_for(servers)))[
        "jörg@example.net"
    ]
    assert (outcome.result, outcome.status) == (DeliveryResult.PERMANENT, "5.6.7")
    assert mx.received == []


async def test_local_size_limit(tmp_path: Path) -> None:
    config = DeliveryConfig(helo_name="mail.example.org", max_message_size=10)
    outcome = (await deliver_queued(tmp_path, ["bob@example.net"], resolver_for(NET), config))[
        "bob@example.net"
    ]
    assert (outcome.result, outcome.status) == (DeliveryResult.PERMANENT, "5.3.4")


async def test_injected_addresses_never_reach_the_wire(servers: Servers, tmp_path: Path) -> None:
    """PYSEC-2026-2338: an envelope edited on disk must not smuggle commands into MAIL or RCPT."""
    mx = await servers.start(Handler())
    queue, entry = queued(tmp_path, ["bob@example.net", "carol@example.net"])
    evil = replace(
        entry, recipients=(Recipient("bob@example.net\r\nRCPT TO:<x@evil>"), Recipient("carol@example.net"))
    )
    outcomes = await deliver(evil, queue.message_path(entry.id), resolver_for(NET), config_for(servers))
    assert (outcomes[0].result, outcomes[0].status) == (DeliveryResult.PERMANENT, "5.1.3")
    assert outcomes[1].result is DeliveryResult.DELIVERED
    assert mx.received[0].rcpt_tos == ["carol@example.net"]

    bad_sender = replace(entry, sender="alice@example.org\nDATA")
    outcomes = await deliver(bad_sender, queue.message_path(entry.id), resolver_for(NET), config_for(servers))
    assert {(o.result, o.status) for o in outcomes} == {(DeliveryResult.PERMANENT, "5.1.7")}
    assert len(mx.received) == 1


def test_smtp_reply_parsing() -> None:
    assert SmtpReply(550, "5.1.1 no such user").enhanced_status == "5.1.1"
    assert SmtpReply(550, "4.1.1 class mismatch").enhanced_status == "5.0.0"
    assert SmtpReply(451, "try later").enhanced_status == "4.0.0"
    assert SmtpReply(550, "5.7.1 first\nsecond line").one_line == "550 5.7.1 first second line"


def test_smarthost_parsing() -> None:
    assert parse_smarthost("relay.example.net") == Smarthost("relay.example.net", 25)
    assert parse_smarthost("relay.example.net:587").port == 587
    assert parse_smarthost("[2001:db8::1]:2525") == Smarthost("2001:db8::1", 2525)
    for bad in ("relay:port", "[::1", "bad host:25", "relay:99999"):
        with pytest.raises(ValueError):
            parse_smarthost(bad)
    with pytest.raises(ValueError, match="both"):
        Smarthost("relay.example.net", username="alice")


# -- the runner ------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Bounces:
    sent: list[tuple[bytes, str]] = field(default_factory=list)
    fail: bool = False

    async def __call__(self, dsn: bytes, sender: str) -> None:
        if self.fail:
            raise OSError("bounce queue unavailable")
        self.sent.append((dsn, sender))


def runner_for(
    queue: Queue,
    resolver: StaticResolver,
    config: DeliveryConfig,
    clock: FakeClock,
    bounces: Bounces,
    **options: Any,
) -> QueueRunner:
    return QueueRunner(queue, resolver, config, bounce=bounces, clock=clock, **options)


def delivery_status(dsn: bytes) -> list[Any]:
    message = email.message_from_bytes(dsn, policy=email.policy.compat32)
    report = message.get_payload(1)
    assert isinstance(report, email.message.Message)
    blocks = report.get_payload()
    assert isinstance(blocks, list)
    return blocks


async def test_runner_retries_a_4xx_on_schedule(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(
        Handler("mx.example.net", data_replies=["451 4.7.1 greylisted, try again later"])
    )
    clock = FakeClock()
    queue, entry = queued(tmp_path, ["bob@example.net"], clock=clock)
    bounces = Bounces()
    runner = runner_for(queue, resolver_for(NET), config_for(servers), clock, bounces)

    assert await runner.run_once() == 1
    deferred = queue.get(entry.id)
    assert deferred.attempts == 1
    assert deferred.next_attempt == clock.now + 300
    (bob,) = deferred.recipients
    assert (bob.state, bob.status, bob.remote_mta) == (RecipientState.PENDING, "4.7.1", "mx.example.net")
    assert bob.diagnostic == "smtp; 451 4.7.1 greylisted, try again later"

    clock.now += 299
    assert await runner.run_once() == 0  # not due yet
    assert mx.connections == 1

    clock.now += 1
    assert await runner.run_once() == 1
    assert [r.rcpt_tos for r in mx.received] == [["bob@example.net"]]
    assert queue.entries() == []  # delivered: removed
    assert bounces.sent == []


async def test_runner_bounces_a_5xx(servers: Servers, tmp_path: Path) -> None:
    await servers.start(
        Handler("mx.example.net", rcpt_replies={"nobody@example.net": "550 5.1.1 no such user"})
    )
    clock = FakeClock()
    queue, entry = queued(tmp_path, ["bob@example.net", "nobody@example.net"], clock=clock)
    bounces = Bounces()
    await runner_for(queue, resolver_for(NET), config_for(servers), clock, bounces).run_once()

    ((dsn, sender),) = bounces.sent
    assert sender == "alice@example.org"
    message = email.message_from_bytes(dsn, policy=email.policy.compat32)
    assert message["To"] == "<alice@example.org>"
    assert message["From"].startswith("MAILER-DAEMON@mail.example.org")
    per_message, nobody = delivery_status(dsn)  # only the failed recipient is reported
    assert per_message["X-Mailtoaster-Queue-ID"] == entry.id
    assert nobody["Final-Recipient"] == "rfc822; nobody@example.net"
    assert (nobody["Action"], nobody["Status"]) == ("failed", "5.1.1")
    assert nobody["Remote-MTA"] == "dns; mx.example.net"
    assert nobody["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert b"Message-ID: <m1@example.org>" in dsn  # the original headers come back
    assert queue.entries() == []


async def test_runner_bounces_expired_messages(tmp_path: Path) -> None:
    clock = FakeClock()
    queue, entry = queued(tmp_path, ["bob@example.net"], clock=clock)
    resolver = resolver_for(("example.net", [(10, "mx.example.net", REFUSING)]))
    config = DeliveryConfig(helo_name="mail.example.org", port=2)
    bounces = Bounces()
    runner = runner_for(queue, resolver, config, clock, bounces, policy=RetryPolicy(lifetime=3600))

    await runner.run_once()
    assert queue.get(entry.id).recipients[0].status == "4.4.1"
    for _ in range(20):
        if not queue.entries():
            break
        clock.now = queue.get(entry.id).next_attempt
        await runner.run_once()
    assert queue.entries() == []
    assert clock.now == entry.created + 3600  # the last attempt was at the expiry, not after
    ((dsn, _),) = bounces.sent
    (_, bob) = delivery_status(dsn)
    assert (bob["Action"], bob["Status"]) == ("failed", "4.4.1")
    assert "delivery time expired" in " ".join(dsn.decode().split())


async def test_runner_never_bounces_a_bounce(
    servers: Servers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await servers.start(Handler(rcpt_replies={"nobody@example.net": "550 5.1.1 no such user"}))
    clock = FakeClock()
    queue, _ = queued(tmp_path, ["nobody@example.net"], sender="", clock=clock)
    bounces = Bounces()
    with caplog.at_level(logging.INFO, logger="mailtoaster.queue"):
        await runner_for(queue, resolver_for(NET), config_for(servers), clock, bounces).run_once()
    assert bounces.sent == []
    assert queue.entries() == []
    assert any("null sender" in record.getMessage() for record in caplog.records)


async def test_runner_keeps_a_bounce_it_could_not_send(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler(rcpt_replies={"nobody@example.net": "550 5.1.1 no such user"}))
    clock = FakeClock()
    queue, entry = queued(tmp_path, ["nobody@example.net"], clock=clock)
    bounces = Bounces(fail=True)
    runner = runner_for(queue, resolver_for(NET), config_for(servers), clock, bounces)
    await runner.run_once()
    (nobody,) = queue.get(entry.id).recipients
    assert (nobody.state, nobody.reported) == (RecipientState.BOUNCED, False)

    bounces.fail = False
    clock.now = queue.get(entry.id).next_attempt
    await runner.run_once()
    assert len(bounces.sent) == 1
    assert queue.entries() == []
    assert mx.connections == 1  # the bounce was retried, not the delivery


async def test_runner_sends_a_recorded_but_unsent_bounce_after_a_crash(tmp_path: Path) -> None:
    clock = FakeClock()
    queue, entry = queued(tmp_path, ["nobody@example.net"], clock=clock)
    crashed = replace(
        entry,
        attempts=1,
        recipients=(
            Recipient("nobody@example.net", RecipientState.BOUNCED, "5.1.1", "smtp; 550 5.1.1 no", "mx"),
        ),
    )
    queue.update(crashed)
    bounces = Bounces()
    await runner_for(
        queue, StaticResolver(), DeliveryConfig(helo_name="mail.example.org"), clock, bounces
    ).run_once()
    assert [sender for _, sender in bounces.sent] == ["alice@example.org"]
    assert queue.entries() == []


async def test_runner_never_redelivers_delivered_recipients(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler(rcpt_replies={"later@example.net": "450 4.2.1 busy"}))
    clock = FakeClock()
    queue, entry = queued(tmp_path, ["bob@example.net", "later@example.net"], clock=clock)
    runner = runner_for(queue, resolver_for(NET), config_for(servers), clock, Bounces())
    await runner.run_once()
    states = {r.address: r.state for r in queue.get(entry.id).recipients}
    assert states == {
        "bob@example.net": RecipientState.DELIVERED,
        "later@example.net": RecipientState.PENDING,
    }
    clock.now += 300
    await runner.run_once()
    assert [r.rcpt_tos for r in mx.received] == [["bob@example.net"]]  # bob once; "later" still refused
    assert queue.get(entry.id).attempts == 2


async def test_runner_skips_a_stale_scan_of_an_entry_just_attempted(servers: Servers, tmp_path: Path) -> None:
    """A scan read in a thread can predate an attempt that finished meanwhile: attempting from that
    copy would deliver to recipients already delivered. The runner re-reads the entry first."""
    mx = await servers.start(Handler(rcpt_replies={"later@example.net": "450 4.2.1 busy"}))
    clock = FakeClock()
    queue, entry = queued(tmp_path, ["bob@example.net", "later@example.net"], clock=clock)
    runner = runner_for(queue, resolver_for(NET), config_for(servers), clock, Bounces())
    stale_scan = queue.get(entry.id)
    await runner.run_once()
    await runner._attempt_in_slot(stale_scan)
    assert [r.rcpt_tos for r in mx.received] == [["bob@example.net"]]
    assert queue.get(entry.id).attempts == 1


async def test_runner_logs_one_line_per_result(
    servers: Servers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await servers.start(
        Handler("mx.example.net", rcpt_replies={"nobody@example.net": "550 5.1.1 no such user"})
    )
    clock = FakeClock()
    queue, entry = queued(
        tmp_path, ["bob@example.net", "carol@example.net", "nobody@example.net"], clock=clock
    )
    clock.now += 42
    with caplog.at_level(logging.INFO, logger="mailtoaster.queue"):
        await runner_for(queue, resolver_for(NET), config_for(servers), clock, Bounces()).run_once()
    attempts = [r.getMessage() for r in caplog.records if " result=" in r.getMessage()]
    assert len(attempts) == 2
    delivered = next(line for line in attempts if "result=delivered" in line)
    bounced = next(line for line in attempts if "result=bounced" in line)
    relay = f"relay=mx.example.net[127.0.0.1]:{servers.port}"
    assert (
        f"queue id={entry.id} from=<alice@example.org> to=<bob@example.net>,<carol@example.net> {relay}"
        in delivered
    )
    assert "status=2.0.0 delay=42s attempt=1" in delivered
    assert 'reply="smtp; 250 2.0.0 Ok: queued at mx.example.net"' in delivered
    assert "to=<nobody@example.net>" in bounced and 'reply="smtp; 550 5.1.1 no such user"' in bounced


async def test_runner_does_not_resurrect_a_deleted_entry(servers: Servers, tmp_path: Path) -> None:
    clock = FakeClock()
    queue, entry = queued(tmp_path, ["bob@example.net"], clock=clock)
    await servers.start(Handler(data_replies=["451 4.3.0 later"], on_data=lambda: queue.remove(entry.id)))
    await runner_for(queue, resolver_for(NET), config_for(servers), clock, Bounces()).run_once()
    assert queue.entries() == []
    assert not queue.message_path(entry.id).exists()


async def test_run_forever_wakes_and_stops(servers: Servers, tmp_path: Path) -> None:
    mx = await servers.start(Handler())
    queue = Queue(tmp_path / "queue")
    runner = QueueRunner(queue, resolver_for(NET), config_for(servers), bounce=Bounces(), scan_interval=30)
    task = asyncio.create_task(runner.run_forever())
    await asyncio.sleep(0.05)
    queue.enqueue(MESSAGE, "alice@example.org", ["bob@example.net"])
    runner.wake()
    async with asyncio.timeout(5):
        while queue.entries():
            await asyncio.sleep(0.02)
    await runner.stop()
    async with asyncio.timeout(5):
        await task
    assert len(mx.received) == 1


async def test_stop_lets_the_attempt_in_flight_finish(servers: Servers, tmp_path: Path) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    class SlowHandler(Handler):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            started.set()
            await release.wait()
            return await super().handle_DATA(server, session, envelope)

    mx = await servers.start(SlowHandler())
    queue, _ = queued(tmp_path, ["bob@example.net"])
    runner = QueueRunner(queue, resolver_for(NET), config_for(servers), bounce=Bounces())
    task = asyncio.create_task(runner.run_forever())
    async with asyncio.timeout(5):
        await started.wait()
    stopping = asyncio.create_task(runner.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    release.set()
    async with asyncio.timeout(5):
        await stopping
        await task
    assert len(mx.received) == 1 and queue.entries() == []


async def test_concurrency_is_bounded(servers: Servers, tmp_path: Path) -> None:
    active = 0
    peak = 0

    class CountingHandler(Handler):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.05)
            active -= 1
            return await super().handle_DATA(server, session, envelope)

    mx = await servers.start(CountingHandler())
    queue = Queue(tmp_path / "queue")
    for _ in range(6):
        queue.enqueue(MESSAGE, "alice@example.org", ["bob@example.net"])
    runner = QueueRunner(queue, resolver_for(NET), config_for(servers), bounce=Bounces(), concurrency=2)
    assert await runner.run_once() == 6
    assert len(mx.received) == 6 and peak == 2
