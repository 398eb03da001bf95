"""Bad input against the whole server: whatever a client sends, it gets a clear SMTP reply with an
enhanced status code (RFC 2034), the server's memory stays bounded, and a session that can go on does.

A raw socket client is used because smtplib refuses to send most of this (bare NULs, 8-bit commands,
unterminated 10 MB lines, commands out of order, pipelined groups).
"""

from __future__ import annotations

import base64
import re
import socket
import sqlite3
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serverharness import ALICE, ALICE_PASSWORD, BOB, STRANGER, Installation, installation
from tests.test_server import message

OUTSIDE_SENDER = b"someone@sender.example"
MAX_MESSAGE_SIZE = 200_000
"""The harness's ``max_message_size``."""
COMMAND_LIMIT = 512
"""RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF; aiosmtpd counts without."""
BOGUS_LIMIT = 5
"""Unknown commands a session may send; the last gets 502 and the connection is closed (aiosmtpd)."""
HUGE = 10 * 1024 * 1024
MEMORY_BUDGET = 4 * 1024 * 1024
"""Peak Python allocation allowed while 10 MB pass through: a fraction of what buffering would take."""
_REPLY_LINE = re.compile(rb"(\d{3})([ -])(?:([245]\.\d{1,3}\.\d{1,3}) )?(.*)\r\n\Z", re.S)


class Closed(Exception):
    """The server closed the connection."""


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    """RFC 3463 status of the last line; empty when it has none."""
    text: bytes
    """The text of the last line."""

    @property
    def status(self) -> tuple[int, str]:
        return self.code, self.enhanced


class RawClient:
    """Writes exactly the bytes it is given; reads one whole (possibly multi-line) reply at a time."""

    def __init__(self, port: int, source: str = STRANGER, timeout: float = 30) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self._lines = self.sock.makefile("rb")
        self.greeting = self.reply()

    def close(self) -> None:
        self._lines.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> Reply:
        while True:
            line = self._lines.readline(4096)
            if not line:
                raise Closed()
            match = _REPLY_LINE.match(line)
            assert match is not None, f"not an SMTP reply line: {line!r}"
            if match.group(2) == b" ":
                code, _, enhanced, text = match.groups()
                return Reply(int(code), (enhanced or b"").decode(), text)

    def command(self, line: bytes) -> Reply:
        self.send(line + b"\r\n")
        return self.reply()

    def rest_until_closed(self) -> bytes:
        """Whatever the server still sends before it closes the connection; a server that keeps it
        open makes this raise ``TimeoutError`` (the socket's timeout)."""
        rest = b""
        try:
            while chunk := self._lines.read1(4096):
                rest += chunk
        except ConnectionResetError:
            pass
        return rest


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[Installation]:
    with installation(tmp_path) as found:
        yield found


@pytest.fixture
def client(mail: Installation) -> Iterator[RawClient]:
    """A stranger's session on the MX port, after EHLO."""
    found = RawClient(mail.running.port("smtp"))
    assert found.command(b"EHLO client.sender.example").code == 250
    yield found
    found.close()


def begin_transaction(client: RawClient, recipient: bytes = ALICE.encode()) -> None:
    assert client.command(b"MAIL FROM:<" + OUTSIDE_SENDER + b">").status == (250, "2.1.0")
    assert client.command(b"RCPT TO:<" + recipient + b">").status == (250, "2.1.5")
    assert client.command(b"DATA").code == 354


def assert_usable(client: RawClient) -> None:
    """The session goes on after the refusal."""
    assert client.command(b"NOOP").status == (250, "2.0.0")


# -- over-long command lines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "expected"),
    [(COMMAND_LIMIT, (250, "2.0.0")), (COMMAND_LIMIT + 1, (500, "5.5.2")), (100_000, (500, "5.5.2"))],
)
def test_command_line_length_limit(client: RawClient, length: int, expected: tuple[int, str]) -> None:
    line = b"NOOP " + b"x" * (length - len(b"NOOP "))
    reply = client.command(line)
    assert reply.status == expected
    assert_usable(client)


# -- NUL bytes and 8-bit text -----------------------------------------------------------------------


def test_nul_in_a_command_name_is_an_unknown_command(client: RawClient) -> None:
    assert client.command(b"NO\x00OP").status == (500, "5.5.2")
    assert_usable(client)


def test_nul_in_the_sender_is_refused(client: RawClient) -> None:
    assert client.command(b"MAIL FROM:<some\x00one@sender.example>").status == (553, "5.1.7")
    assert_usable(client)


def test_nul_in_a_recipient_is_refused(client: RawClient) -> None:
    assert client.command(b"MAIL FROM:<" + OUTSIDE_SENDER + b">").code == 250
    assert client.command(b"RCPT TO:<ali\x00ce@example.org>").status == (553, "5.1.3")
    assert_usable(client)


@pytest.mark.parametrize(
    "sender", ["jörg@sender.example".encode(), b"\xff\xfe@sender.example"], ids=["utf-8", "not-utf-8"]
)
def test_non_ascii_sender_without_smtputf8_is_refused(client: RawClient, sender: bytes) -> None:
    """RFC 6531 §3.5: a non-ASCII address needs the SMTPUTF8 parameter; 553 with X.6.7."""
    assert client.command(b"MAIL FROM:<" + sender + b">").status == (553, "5.6.7")
    assert_usable(client)


def test_non_ascii_recipient_without_smtputf8_is_refused(client: RawClient) -> None:
    assert client.command(b"MAIL FROM:<" + OUTSIDE_SENDER + b">").code == 250
    assert client.command("RCPT TO:<jörg@example.org>".encode()).status == (553, "5.6.7")


def test_with_smtputf8_a_utf8_sender_is_accepted_and_invalid_utf8_is_not(client: RawClient) -> None:
    assert client.command(b"MAIL FROM:<\xff\xfe@sender.example> SMTPUTF8").status == (553, "5.1.7")
    assert client.command("MAIL FROM:<jörg@sender.example> SMTPUTF8".encode()).status == (250, "2.1.0")
    assert client.command("RCPT TO:<jörg@example.org>".encode()).status == (550, "5.1.1")  # no such user


# -- invalid addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        (b"FROM:<not an address>", (553, "5.1.7")),
        (b"FROM:<someone@-bad-.example>", (553, "5.1.7")),
        (b"FROM:<" + b"a" * 65 + b"@sender.example>", (553, "5.1.7")),
        (b"FROM:<a@b@c>", (553, "5.1.3")),  # aiosmtpd's own parser refuses it first
        (b"FROM:", (501, "5.5.4")),
        (b"someone@sender.example", (501, "5.5.4")),
        (b"FROM:<" + OUTSIDE_SENDER + b"> BODY=9BIT", (501, "5.5.4")),
        (b"FROM:<" + OUTSIDE_SENDER + b"> FROBNICATE=1", (555, "5.5.4")),
    ],
    ids=[
        "no-domain",
        "bad-domain",
        "long-local-part",
        "two-ats",
        "empty",
        "no-from",
        "bad-body",
        "unknown-param",
    ],
)
def test_invalid_sender(client: RawClient, argument: bytes, expected: tuple[int, str]) -> None:
    assert client.command(b"MAIL " + argument).status == expected
    assert_usable(client)


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        (b"<alice@exa_mple.org>", (553, "5.1.3")),
        (b"<alice@[300.1.1.1]>", (553, "5.1.3")),
        (b"<@>", (553, "5.1.3")),
        (b"<" + b"a" * 65 + b"@example.org>", (553, "5.1.3")),
        (b"<alice>", (553, "5.1.3")),
        (b"<>", (553, "5.1.3")),
        (b"<nobody@example.org>", (550, "5.1.1")),
    ],
    ids=["bad-domain", "bad-literal", "empty-parts", "long-local-part", "no-domain", "null", "unknown-user"],
)
def test_invalid_recipient(client: RawClient, recipient: bytes, expected: tuple[int, str]) -> None:
    assert client.command(b"MAIL FROM:<" + OUTSIDE_SENDER + b">").code == 250
    assert client.command(b"RCPT TO:" + recipient).status == expected
    assert_usable(client)


# -- commands out of order --------------------------------------------------------------------------


def test_mail_before_ehlo(mail: Installation) -> None:
    fresh = RawClient(mail.running.port("smtp"))
    try:
        assert fresh.command(b"MAIL FROM:<" + OUTSIDE_SENDER + b">").status == (503, "5.5.1")
    finally:
        fresh.close()


def test_mail_twice(client: RawClient) -> None:
    assert client.command(b"MAIL FROM:<" + OUTSIDE_SENDER + b">").code == 250
    assert client.command(b"MAIL FROM:<other@sender.example>").status == (503, "5.5.1")


def test_mail_twice_with_the_null_sender_first(client: RawClient) -> None:
    assert client.command(b"MAIL FROM:<>").status == (250, "2.1.0")
    assert client.command(b"MAIL FROM:<" + OUTSIDE_SENDER + b">").status == (503, "5.5.1")


def test_rcpt_before_mail(client: RawClient) -> None:
    assert client.command(b"RCPT TO:<" + ALICE.encode() + b">").status == (503, "5.5.1")


def test_data_before_mail(client: RawClient) -> None:
    assert client.command(b"DATA").status == (503, "5.5.1")


def test_data_before_rcpt(client: RawClient) -> None:
    assert client.command(b"MAIL FROM:<" + OUTSIDE_SENDER + b">").code == 250
    assert client.command(b"DATA").status == (503, "5.5.1")
    assert client.command(b"RCPT TO:<" + ALICE.encode() + b">").status == (250, "2.1.5")  # still in MAIL


def test_a_bounce_with_the_null_sender_is_delivered(mail: Installation, client: RawClient) -> None:
    """Not bad input: the null reverse-path must work (RFC 5321 §4.5.5), or bounces never get in."""
    assert client.command(b"MAIL FROM:<>").status == (250, "2.1.0")
    assert client.command(b"RCPT TO:<" + ALICE.encode() + b">").status == (250, "2.1.5")
    assert client.command(b"DATA").code == 354
    bounce = message("MAILER-DAEMON@sender.example", ALICE, "Undelivered Mail Returned to Sender")
    client.send(bounce + b".\r\n")
    assert client.reply().status == (250, "2.0.0")
    [stored] = mail.maildir_messages(ALICE)
    assert b"Subject: Undelivered Mail Returned to Sender" in stored


# -- our own faults --------------------------------------------------------------------------------


def test_an_internal_error_is_a_temporary_failure(
    mail: Installation, client: RawClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory failing under RCPT gives 451 4.3.0 (retry later), not a 500 that makes the
    sender bounce the mail, and the exception's text stays in our log."""
    assert mail.running.server is not None

    def locked(address: str) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(mail.running.server.directory, "resolve", locked)
    assert client.command(b"MAIL FROM:<" + OUTSIDE_SENDER + b">").code == 250
    reply = client.command(b"RCPT TO:<" + ALICE.encode() + b">")
    assert reply.status == (451, "4.3.0") and b"locked" not in reply.text
    assert_usable(client)


# -- unknown commands -------------------------------------------------------------------------------


def test_unknown_command(client: RawClient) -> None:
    assert client.command(b"FROBNICATE now").status == (500, "5.5.2")
    assert client.command(b"EXPN team@example.org").status == (502, "5.5.1")
    assert_usable(client)


def test_too_many_unknown_commands_close_the_session(client: RawClient) -> None:
    for attempt in range(BOGUS_LIMIT - 1):
        assert client.command(f"BOGUS{attempt}".encode()).status == (500, "5.5.2")
        assert_usable(client)  # valid commands in between do not restore the budget
    assert client.command(b"BOGUS").status == (502, "5.5.1")
    assert client.rest_until_closed() == b""


# -- size -------------------------------------------------------------------------------------------


def test_declared_size_over_the_limit_is_refused_at_mail(client: RawClient) -> None:
    reply = client.command(b"MAIL FROM:<" + OUTSIDE_SENDER + b"> SIZE=" + str(MAX_MESSAGE_SIZE + 1).encode())
    assert reply.status == (552, "5.3.4")
    assert (
        client.command(b"MAIL FROM:<" + OUTSIDE_SENDER + b"> SIZE=" + str(MAX_MESSAGE_SIZE).encode()).code
        == 250
    )


def test_undeclared_size_over_the_limit_is_refused_after_data(mail: Installation, client: RawClient) -> None:
    begin_transaction(client)
    client.send(b"Subject: big\r\n\r\n" + (b"y" * 98 + b"\r\n") * (MAX_MESSAGE_SIZE // 100 + 10) + b".\r\n")
    assert client.reply().status == (552, "5.3.4")
    assert_usable(client)
    assert mail.maildir_messages(ALICE) == []


# -- 10 MB without a line end: bounded memory -------------------------------------------------------


def huge_line(client: RawClient, end: bytes) -> tuple[Reply, int]:
    """Send 10 MB without a line end, then ``end``: the reply, and the peak of what Python allocated
    meanwhile in every thread (the server's included) above what it held before."""
    chunk = b"z" * 65536
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        for _ in range(HUGE // len(chunk)):
            client.send(chunk)
        client.send(end)
        reply = client.reply()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return reply, peak - baseline


def test_a_10_mb_line_in_data_is_refused_without_buffering(mail: Installation, client: RawClient) -> None:
    begin_transaction(client)
    client.send(b"Subject: one long line\r\n\r\n")
    reply, peak = huge_line(client, b"\r\n.\r\n")
    assert reply.status == (550, "5.6.0")
    assert peak < MEMORY_BUDGET, f"{peak} bytes allocated while 10 MB passed"
    assert_usable(client)
    assert mail.maildir_messages(ALICE) == []


def test_a_10_mb_command_line_is_refused_without_buffering(client: RawClient) -> None:
    reply, peak = huge_line(client, b"\r\n")
    assert reply.status == (500, "5.5.2")
    assert peak < MEMORY_BUDGET, f"{peak} bytes allocated while 10 MB passed"
    assert_usable(client)


# -- a client that goes silent ----------------------------------------------------------------------

SHORT_TIMEOUT = 1.0


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[Installation]:
    """A server that waits only ``SHORT_TIMEOUT`` seconds for a silent client."""
    with installation(tmp_path, server={"timeout": SHORT_TIMEOUT}) as found:
        yield found


def assert_cut_off(client: RawClient, started: float) -> None:
    """A 421 4.4.2 after about the timeout, then the connection is closed."""
    assert client.reply().status == (421, "4.4.2")
    assert client.rest_until_closed() == b""
    assert SHORT_TIMEOUT / 2 <= time.monotonic() - started < SHORT_TIMEOUT + 5  # the timeout, not a refusal


def test_a_silent_client_is_cut_off(impatient: Installation) -> None:
    client = RawClient(impatient.running.port("smtp"))
    try:
        assert client.command(b"EHLO client.sender.example").code == 250
        assert_cut_off(client, time.monotonic())
    finally:
        client.close()


def test_a_client_silent_in_the_middle_of_data_is_cut_off(impatient: Installation) -> None:
    client = RawClient(impatient.running.port("smtp"))
    try:
        assert client.command(b"EHLO client.sender.example").code == 250
        begin_transaction(client)
        client.send(b"Subject: never finished\r\n\r\nfirst line\r\n")
        assert_cut_off(client, time.monotonic())
    finally:
        client.close()
    assert impatient.maildir_messages(ALICE) == []


def test_a_slow_but_steady_message_is_not_cut_off(impatient: Installation) -> None:
    """The timeout is for silence: data arriving for longer than the timeout keeps the session alive."""
    client = RawClient(impatient.running.port("smtp"))
    try:
        assert client.command(b"EHLO client.sender.example").code == 250
        begin_transaction(client)
        client.send(b"Subject: slow\r\n\r\n")
        for line in range(8):  # 8 x 0.3 s: more than twice the timeout
            time.sleep(SHORT_TIMEOUT * 0.3)
            client.send(b"line %d\r\n" % line)
        client.send(b".\r\n")
        assert client.reply().status == (250, "2.0.0")
    finally:
        client.close()
    [stored] = impatient.maildir_messages(ALICE)
    assert stored.endswith(b"line 7\n")


# -- PIPELINING -------------------------------------------------------------------------------------


def test_pipelined_commands_are_answered_in_order(mail: Installation, client: RawClient) -> None:
    client.send(
        b"MAIL FROM:<" + OUTSIDE_SENDER + b">\r\n"
        b"RCPT TO:<" + ALICE.encode() + b">\r\n"
        b"RCPT TO:<nobody@example.org>\r\n"
        b"RCPT TO:<" + BOB.encode() + b">\r\n"
        b"DATA\r\n"
    )
    assert [client.reply().status for _ in range(4)] == [
        (250, "2.1.0"),
        (250, "2.1.5"),
        (550, "5.1.1"),
        (250, "2.1.5"),
    ]
    assert client.reply().code == 354
    client.send(message(OUTSIDE_SENDER.decode(), ALICE, "pipelined") + b".\r\nNOOP\r\nRSET\r\nQUIT\r\n")
    replies = [client.reply().status for _ in range(4)]
    assert replies == [(250, "2.0.0"), (250, "2.0.0"), (250, "2.0.0"), (221, "2.0.0")]
    assert client.rest_until_closed() == b""
    assert len(mail.maildir_messages(ALICE)) == 1 and len(mail.maildir_messages(BOB)) == 1


# -- submission: TLS before AUTH, AUTH before MAIL --------------------------------------------------


def test_auth_before_starttls_on_submission_is_refused(mail: Installation) -> None:
    client = RawClient(mail.running.port("submission"))
    try:
        assert client.command(b"EHLO laptop.example.org").code == 250
        plain = base64.b64encode(b"\0" + ALICE.encode() + b"\0" + ALICE_PASSWORD.encode())
        assert client.command(b"AUTH PLAIN " + plain).status == (538, "5.7.11")
        assert client.command(b"MAIL FROM:<" + ALICE.encode() + b">").status == (530, "5.7.0")
    finally:
        client.close()


# -- VRFY -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", [ALICE.encode(), b"nobody@example.org", b"<team@example.org>"])
def test_vrfy_never_confirms_an_address(client: RawClient, address: bytes) -> None:
    """Existing or not, the same 252: VRFY must not help harvest addresses."""
    reply = client.command(b"VRFY " + address)
    assert reply.status == (252, "2.5.0")
    assert reply.text == b"Cannot VRFY user, but will accept message and attempt delivery"
