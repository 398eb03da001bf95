"""The mail server against real clients and a real verifier: Python's smtplib and swaks (the SMTP
Swiss army knife, Debian ``swaks``) deliver to local users and relay to remote.example over plain SMTP,
submission with STARTTLS and AUTH, and submission with implicit TLS; relayed mail must leave signed in
a way that both mailtoaster's own verifier and Perl's Mail::DKIM accept (DKIM always, DomainKeys when
the client's rule sets DKSIGN, as qmail-dk did).

Mail::DKIM gets the installation's public keys from a :class:`~tests.dnsserver.DnsTestServer` on
loopback (through :class:`~tests.peers.Peers`); mailtoaster reads the same keys from the harness's zone
file. A missing peer skips its tests, or fails them under ``CI=true`` (:func:`tests.peers.require`).
"""

from __future__ import annotations

import asyncio
import functools
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailtoaster.auth.dkim import DkimResult, verify_dkim
from mailtoaster.auth.domainkeys import DkStatus, verify_domainkeys
from mailtoaster.dns import load_zone_file
from mailtoaster.keys import list_keys
from mailtoaster.message import Message
from tests.dnsserver import DnsTestServer
from tests.peers import PEER_TIMEOUT, Peers, PeerVerdict, require
from tests.serverharness import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    LOCAL_DOMAIN,
    RELAY_CLIENT,
    REMOTE,
    STRANGER,
    Installation,
    installation,
)
from tests.test_server import message, wait_for

SWAKS_PACKAGE = "swaks"
OUTSIDE_SENDER = "someone@sender.example"
"""sender.example's SPF record allows the STRANGER address: inbound mail from it passes every check."""
DKSIGN_QMAIL_PATH = "/var/qmail/control/domainkeys/%/default"
"""qmail-dk's usual DKSIGN value; mailtoaster maps it onto ``<data_dir>/keys/<domain>/default``."""


# -- swaks ------------------------------------------------------------------------------------------


@functools.cache
def swaks_problem() -> str | None:
    """None when swaks can speak TLS and AUTH, else why not."""
    binary = shutil.which("swaks")
    if binary is None:
        return f"swaks is not installed (apt-get install {SWAKS_PACKAGE})"
    support = subprocess.run(
        [binary, "--support"], capture_output=True, text=True, timeout=PEER_TIMEOUT, check=False
    )
    text = support.stdout + support.stderr
    for feature in ("TLS", "Basic AUTH"):
        if f"=== {feature} supported" not in text:
            return f"swaks lacks {feature} support (apt-get install libnet-ssleay-perl libio-socket-ssl-perl)"
    return None


_SERVER_LINE = re.compile(r"<[-~*]+ +(.*)")
_CLIENT_LINE = re.compile(r" (?:->|~>) (.*)")


@dataclass(frozen=True)
class SwaksRun:
    """swaks' exit code and transcript: ``<-``/``<~`` mark what the server sent (in clear, under TLS),
    ``<**``/``<~*`` a reply swaks took for an error, `` ->``/`` ~>`` what swaks sent."""

    exit_code: int
    transcript: str

    @property
    def last_reply(self) -> str:
        replies = [match.group(1) for match in map(_SERVER_LINE.match, self.transcript.splitlines()) if match]
        return replies[-1] if replies else ""

    def replies_to(self, command: str) -> list[str]:
        """The server's reply line right after each time swaks sent ``command``."""
        lines = self.transcript.splitlines()
        replies = []
        for index, line in enumerate(lines[:-1]):
            sent, answer = _CLIENT_LINE.match(line), _SERVER_LINE.match(lines[index + 1])
            if sent and sent.group(1).startswith(command) and answer:
                replies.append(answer.group(1))
        return replies


def swaks(mail: Installation, port_name: str, *arguments: str, source: str = STRANGER) -> SwaksRun:
    """Run swaks against one of the server's listeners from ``source``."""
    require(swaks_problem())
    command = [
        "swaks",
        "--server", "127.0.0.1",
        "--port", str(mail.running.port(port_name)),
        "--local-interface", source,
        "--timeout", "30",
        *arguments,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=PEER_TIMEOUT, check=False)
    return SwaksRun(done.returncode, done.stdout + done.stderr)


def submission_arguments(sender: str, recipient: str, subject: str) -> tuple[str, ...]:
    return (
        "--auth", "PLAIN",
        "--auth-user", ALICE,
        "--auth-password", ALICE_PASSWORD,
        "--ehlo", "laptop.example.org",
        "--from", sender,
        "--to", recipient,
        "--header", f"Subject: {subject}",
        "--body", "Sent with swaks.",
    )  # fmt: skip


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[Installation]:
    with installation(tmp_path) as found:
        yield found


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    """Mail::DKIM with a loopback DNS server; each test publishes its installation's keys."""
    with DnsTestServer() as server, Peers(server, tmp_path_factory.mktemp("peers")) as found:
        yield found


def publish_keys(peers: Peers, mail: Installation) -> None:
    """Serve the installation's example.org public keys to Mail::DKIM."""
    for key in list_keys(mail.data_dir / "keys", LOCAL_DOMAIN):
        peers.zone.add(key.record_name, key.dkim_record)
    peers.publish()


def relayed(mail: Installation) -> bytes:
    """The one message the remote sink received, as it arrived."""
    wait_for(lambda: mail.sink.messages)
    [(_, recipients, content)] = mail.sink.messages
    assert recipients == [REMOTE]
    return content


def our_dkim(mail: Installation, content: bytes) -> list[tuple[str, DkimResult]]:
    resolver = load_zone_file(mail.config.dns.zone_file)
    verdicts = asyncio.run(verify_dkim(Message.parse(content), resolver))
    return sorted((verdict.selector, verdict.result) for verdict in verdicts)


def our_domainkeys(mail: Installation, content: bytes) -> tuple[DkStatus, str]:
    outcome = asyncio.run(
        verify_domainkeys(Message.parse(content), load_zone_file(mail.config.dns.zone_file))
    )
    return outcome.status, outcome.selector


def mail_dkim(peers: Peers, mail: Installation, content: bytes, kind: str) -> list[PeerVerdict]:
    publish_keys(peers, mail)
    return [verdict for verdict in peers.mail_dkim_verify(content) if verdict.kind == kind]


def received_protocol(content: bytes) -> str:
    """The ``with`` word of the topmost Received field (RFC 3848: ESMTP, ESMTPS, ESMTPSA, ...)."""
    received = Message.parse(content).get("Received")
    assert received is not None
    words = received.value.split()
    return words[words.index("with") + 1].rstrip(";")


# -- local delivery ---------------------------------------------------------------------------------


def test_smtplib_delivers_each_recipient_to_their_own_maildir(mail: Installation) -> None:
    with mail.smtp(STRANGER) as client:
        client.sendmail(OUTSIDE_SENDER, [ALICE, BOB], message(OUTSIDE_SENDER, ALICE, "for both"))
        client.sendmail(OUTSIDE_SENDER, [BOB], message(OUTSIDE_SENDER, BOB, "for bob only"))
    [alices] = mail.maildir_messages(ALICE)
    bobs = mail.maildir_messages(BOB)
    assert b"Subject: for both" in alices
    assert sorted(b"Subject: for bob only" in stored for stored in bobs) == [False, True]
    assert mail.sink.messages == []


def test_swaks_delivers_to_a_local_user(mail: Installation) -> None:
    run = swaks(
        mail,
        "smtp",
        "--ehlo", "client.sender.example",
        "--from", OUTSIDE_SENDER,
        "--to", ALICE,
        "--header", "Subject: hello from swaks",
        "--body", "Delivered by swaks.",
    )  # fmt: skip
    assert run.exit_code == 0, run.transcript
    assert run.last_reply.startswith("221 2.0.0"), run.transcript
    assert [reply[:9] for reply in run.replies_to("RCPT TO")] == ["250 2.1.5"]
    [stored] = mail.maildir_messages(ALICE)
    assert b"Subject: hello from swaks" in stored and b"X-Mailer: swaks" in stored
    assert b"Delivered by swaks." in stored
    assert mail.maildir_messages(BOB) == []


def test_swaks_with_a_wrong_password_is_refused_and_nothing_is_relayed(mail: Installation) -> None:
    arguments = list(submission_arguments(ALICE, REMOTE, "never sent"))
    arguments[arguments.index(ALICE_PASSWORD)] = "not the password"
    run = swaks(mail, "submission", "--tls", *arguments)
    assert run.exit_code != 0
    assert [reply[:9] for reply in run.replies_to("AUTH PLAIN")] == ["535 5.7.8"], run.transcript
    assert mail.sink.messages == []


# -- relaying, signed -------------------------------------------------------------------------------


def send_as_relay_client(mail: Installation) -> None:
    with mail.smtp(RELAY_CLIENT) as client:
        client.sendmail(ALICE, [REMOTE], message(ALICE, REMOTE, "relay client"))


def send_after_auth(mail: Installation) -> None:
    with mail.submission(STRANGER) as client:
        client.login(ALICE, ALICE_PASSWORD)
        client.sendmail(ALICE, [REMOTE], message(ALICE, REMOTE, "smtplib submission"))


def swaks_starttls(mail: Installation) -> None:
    run = swaks(mail, "submission", "--tls", *submission_arguments(ALICE, REMOTE, "swaks starttls"))
    assert run.exit_code == 0, run.transcript
    assert [reply[:9] for reply in run.replies_to("AUTH PLAIN")] == ["235 2.7.0"], run.transcript


def swaks_implicit_tls(mail: Installation) -> None:
    run = swaks(mail, "smtps", "--tlsc", *submission_arguments(ALICE, REMOTE, "swaks smtps"))
    assert run.exit_code == 0, run.transcript
    assert [reply[:9] for reply in run.replies_to("AUTH PLAIN")] == ["235 2.7.0"], run.transcript


RELAY_WAYS: dict[str, tuple[Callable[[Installation], None], str]] = {
    "relayclient-smtplib": (send_as_relay_client, "ESMTP"),
    "auth-smtplib-starttls": (send_after_auth, "ESMTPSA"),
    "auth-swaks-starttls": (swaks_starttls, "ESMTPSA"),
    "auth-swaks-implicit-tls": (swaks_implicit_tls, "ESMTPSA"),
}
"""How the message reaches the server, and the protocol its Received field must then name."""


@pytest.mark.parametrize("way", RELAY_WAYS)
def test_relayed_mail_leaves_dkim_signed(mail: Installation, peers: Peers, way: str) -> None:
    send, protocol = RELAY_WAYS[way]
    send(mail)
    content = relayed(mail)
    assert received_protocol(content) == protocol
    assert our_dkim(mail, content) == [("default", DkimResult.PASS), ("ed2026", DkimResult.PASS)]
    peer = {verdict.selector: verdict for verdict in mail_dkim(peers, mail, content, "dkim")}
    assert sorted(peer) == ["default", "ed2026"]
    assert (peer["default"].domain, peer["default"].result) == (LOCAL_DOMAIN, "pass")
    # Debian 12's Mail::DKIM (1.20230212) has no Ed25519; a later one must pass it.
    assert peer["ed2026"].passed or peer["ed2026"].detail == "invalid (unsupported algorithm ed25519-sha256)"
    assert "DomainKey-Signature" not in content.decode()


def test_mail_dkim_fails_relayed_mail_altered_in_transit(mail: Installation, peers: Peers) -> None:
    """The signatures cover the body: the checks above would catch a signer that signed nothing."""
    send_as_relay_client(mail)
    altered = relayed(mail).replace(b"Hi there.", b"Hi thereX")
    assert our_dkim(mail, altered) == [("default", DkimResult.FAIL), ("ed2026", DkimResult.FAIL)]
    assert [
        verdict.result for verdict in mail_dkim(peers, mail, altered, "dkim") if verdict.selector == "default"
    ] == ["fail"]


def rules_with_dksign(tmp_path: Path, dksign: str) -> Path:
    rules = tmp_path / "tcp.smtp.dksign"
    rules.write_text(f'{RELAY_CLIENT}:allow,RELAYCLIENT="",DKSIGN="{dksign}"\n:allow\n')
    return rules


def test_dksign_adds_a_domainkeys_signature_both_verifiers_accept(tmp_path: Path, peers: Peers) -> None:
    rules = rules_with_dksign(tmp_path, DKSIGN_QMAIL_PATH)
    with installation(tmp_path, rules={"file": str(rules)}) as mail:
        send_as_relay_client(mail)
        content = relayed(mail)
        assert our_domainkeys(mail, content) == (DkStatus.OK, "default")
        assert [(v.result, v.selector, v.domain) for v in mail_dkim(peers, mail, content, "domainkeys")] == [
            ("pass", "default", LOCAL_DOMAIN)
        ]
        assert our_dkim(mail, content) == [("default", DkimResult.PASS), ("ed2026", DkimResult.PASS)]


def test_dksign_naming_a_missing_key_sends_without_domainkeys(tmp_path: Path, peers: Peers) -> None:
    """qmail-dk's rule: no key file after ``%`` substitution means no DomainKeys signature (DKIM stays)."""
    rules = rules_with_dksign(tmp_path, "/var/qmail/control/domainkeys/%/nosuchkey")
    with installation(tmp_path, rules={"file": str(rules)}) as mail:
        send_as_relay_client(mail)
        content = relayed(mail)
        assert our_domainkeys(mail, content)[0] is DkStatus.NOSIG
        assert mail_dkim(peers, mail, content, "domainkeys") == []
        assert our_dkim(mail, content) == [("default", DkimResult.PASS), ("ed2026", DkimResult.PASS)]


def test_strangers_without_auth_cannot_relay_through_swaks(mail: Installation) -> None:
    run = swaks(mail, "smtp", "--ehlo", "client.sender.example", "--from", OUTSIDE_SENDER, "--to", REMOTE)
    assert run.exit_code != 0
    assert [reply[:9] for reply in run.replies_to("RCPT TO")] == ["554 5.7.1"], run.transcript
    assert mail.sink.messages == []
