"""The IMAP session without sockets: a StreamReader fed by the test and a writer that keeps what is
written. State machine, login rules, bad input of every kind (the connection stays usable, or ends
cleanly where it must), untagged updates and when EXPUNGE may not be sent, IDLE, autologout, BYE."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from mailtoaster.imap.fetch import FetchMessage
from mailtoaster.imap.session import ImapSession, SessionServices, SessionSettings, is_loopback
from mailtoaster.store import Directory, Maildir
from mailtoaster.store.folder import Folder, Message
from tests.imapserver import ALICE, ALICE_PASSWORD, DOMAIN, message

TIMEOUT = 10.0
SETTINGS = SessionSettings(allow_plaintext_on_loopback=True, idle_poll_interval=0.05)


class FakeWriter:
    """What a session writes, kept; drain never waits; no TLS."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    async def start_tls(self, sslcontext: Any) -> None:
        raise ConnectionError("no TLS in this test")


class Driver:
    """One session: ``command`` feeds a line and returns the lines up to its tagged answer."""

    def __init__(
        self, services: SessionServices, peer: str = "127.0.0.1", writer: FakeWriter | None = None
    ) -> None:
        self.reader = asyncio.StreamReader()
        self.writer = writer or FakeWriter()
        self.session = ImapSession(self.reader, self.writer, services, peer=peer)
        self.task = asyncio.create_task(self.session.run())
        self._read = 0

    def feed(self, data: bytes) -> None:
        self.reader.feed_data(data)

    async def line(self) -> bytes:
        """The next line written (without CRLF)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            end = self.writer.data.find(b"\r\n", self._read)
            if end >= 0:
                line = bytes(self.writer.data[self._read : end])
                self._read = end + 2
                return line
            if self.task.done() and self.task.exception() is not None:
                raise AssertionError("the session died") from self.task.exception()
            assert loop.time() < deadline, f"no line; written so far: {bytes(self.writer.data[-300:])!r}"
            await asyncio.sleep(0.005)

    async def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            lines.append(await self.line())
            if lines[-1].startswith(tag + b" "):
                return lines

    async def command(self, text: bytes, tag: bytes = b"t") -> list[bytes]:
        self.feed(tag + b" " + text + b"\r\n")
        return await self.until(tag)

    async def login(self) -> None:
        answer = await self.command(f'LOGIN {ALICE} "{ALICE_PASSWORD}"'.encode())
        assert answer[-1].startswith(b"t OK"), answer

    async def ended(self) -> None:
        """Wait for the session to end by itself."""
        await asyncio.wait_for(self.task, TIMEOUT)
        assert self.writer.closed


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Directory]:
    with Directory.open(
        tmp_path / "directory.sqlite",
        mail_root=tmp_path / "mail",
        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
    ) as opened:
        opened.add_domain(DOMAIN)
        opened.add_user(ALICE, ALICE_PASSWORD)
        yield opened


@pytest.fixture
def services(directory: Directory) -> SessionServices:
    return SessionServices(directory, SETTINGS)


@pytest.fixture
async def driver(services: SessionServices, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Driver]:
    caplog.set_level(logging.INFO)
    session = Driver(services)
    assert (await session.line()).startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    yield session
    if not session.task.done():
        session.reader.feed_eof()
        await asyncio.wait_for(session.task, TIMEOUT)
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"


def maildir(directory: Directory) -> Maildir:
    return Maildir(directory.mail_root / DOMAIN / "alice" / "Maildir")


# -- login and states --------------------------------------------------------------------------------


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.5.6.7") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1") and not is_loopback("192.0.2.1") and not is_loopback("nonsense")


async def test_plaintext_login_from_elsewhere_is_refused(services: SessionServices) -> None:
    session = Driver(services, peer="192.0.2.1")
    greeting = await session.line()
    assert b"LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting
    answer = await session.command(f'LOGIN {ALICE} "{ALICE_PASSWORD}"'.encode())
    assert answer[-1].startswith(b"t NO [PRIVACYREQUIRED]")
    assert (await session.command(b"AUTHENTICATE PLAIN AGFsaWNlAHg="))[-1].startswith(
        b"t NO [PRIVACYREQUIRED]"
    )
    assert (await session.command(b"STARTTLS"))[-1] == b"t BAD TLS is not available here."
    session.reader.feed_eof()
    await session.ended()


async def test_states(driver: Driver) -> None:
    assert (await driver.command(b"SELECT INBOX"))[-1] == b"t BAD Log in first."
    assert (await driver.command(b"APPEND INBOX {3+}\r\nabc"))[-1] == b"t BAD Log in first."
    await driver.login()
    assert (await driver.command(b"LOGIN a b"))[-1] == b"t BAD Already logged in."
    assert (await driver.command(b"EXPUNGE"))[-1] == b"t BAD No mailbox selected."
    assert (await driver.command(b"SELECT INBOX"))[-1] == b"t OK [READ-WRITE] Select completed."
    assert (await driver.command(b"UNSELECT"))[-1] == b"t OK Unselect completed."
    assert (await driver.command(b"FETCH 1 FLAGS"))[-1] == b"t BAD No mailbox selected."
    assert (await driver.command(b"LOGOUT")) == [b"* BYE Logging out.", b"t OK Logout completed."]
    await driver.ended()


async def test_authenticate_continuation_and_bad_base64(driver: Driver) -> None:
    driver.feed(b"a AUTHENTICATE PLAIN\r\n")
    assert await driver.line() == b"+ "
    driver.feed(b"!!!not base64\r\n")
    assert (await driver.until(b"a"))[-1] == b"a BAD Invalid base64 data."
    assert (await driver.command(b"AUTHENTICATE PLAIN AGFsaWNl"))[-1].startswith(b"t BAD Invalid PLAIN")
    assert (await driver.command(b"NOOP"))[-1] == b"t OK NOOP completed."


# -- bad input -----------------------------------------------------------------------------------------


async def test_malformed_commands_get_bad_and_the_session_goes_on(driver: Driver) -> None:
    await driver.login()
    driver.feed(b"\r\n")
    assert (await driver.line()).startswith(b"* BAD")
    driver.feed(b"+tag NOOP\r\n")
    assert (await driver.line()).startswith(b"* BAD")
    for text, answer in [
        (b"FROB", b"t BAD Unknown command FROB"),
        (b"NOOP  extra", b"t BAD"),
        (b'LIST ("" *', b"t BAD"),
        (b'LIST "" *)', b"t BAD"),
        (b"SELECT", b"t BAD Missing a mailbox name"),
        (b"SELECT &Jjo", b"t NO"),
        (b"STATUS INBOX (MESSAGES", b"t BAD"),
        (b"CREATE \xff\xfe", b"t BAD"),
        (b'LOGIN "unterminated', b"t BAD"),
    ]:
        assert (await driver.command(text))[-1].startswith(answer), text
    await driver.command(b"SELECT INBOX")
    for text in (
        b"FETCH 1:* (FLAGS",
        b"FETCH 1 (BODY[HEADER.FIELDS ()])",
        b"FETCH 0 FLAGS",
        b"STORE 1 FLAGS",
    ):
        assert (await driver.command(text))[-1].startswith(b"t BAD"), text
    assert (await driver.command(b"SEARCH CHARSET KOI8-XYZ ALL"))[-1].startswith(
        b"t NO [BADCHARSET (US-ASCII UTF-8)]"
    )
    assert (await driver.command(b"SEARCH ((ALL)"))[-1].startswith(b"t BAD")
    assert (await driver.command(b"NOOP"))[-1] == b"t OK NOOP completed."


async def test_too_many_bad_commands_end_the_session(driver: Driver) -> None:
    for _ in range(19):
        assert (await driver.command(b"BOGUS"))[-1].startswith(b"t BAD")
    driver.feed(b"t BOGUS\r\n")
    assert await driver.line() == b"t BAD Unknown command BOGUS"
    assert await driver.line() == b"* BYE Too many invalid IMAP commands."
    await driver.ended()


async def test_literals_over_the_limits(driver: Driver) -> None:
    driver.feed(b"t LOGIN {100000}\r\n")  # synchronizing: refused at once, no "+"
    assert await driver.line() == b"t BAD [TOOBIG] Literal larger than 65536 octets"
    driver.feed(b"t LOGIN {70000+}\r\n" + b"x" * 70000 + b" y\r\n")  # on its way: read and thrown away
    assert await driver.line() == b"t BAD [TOOBIG] Literal larger than 65536 octets"
    assert (await driver.command(b"NOOP"))[-1] == b"t OK NOOP completed."
    driver.feed(b"t LOGIN {2000000+}\r\n")  # more than anyone logged out may make us discard
    assert (await driver.line()).startswith(b"* BYE [TOOBIG]")
    await driver.ended()


async def test_a_lying_literal_then_disconnect_ends_quietly(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    await driver.login()
    driver.feed(b"t APPEND INBOX {200000}\r\n")
    assert await driver.line() == b"+ Ready for literal data"
    driver.feed(b"Subject: short\r\n\r\nonly this")
    driver.reader.feed_eof()
    await driver.ended()
    assert "reason=client closed mid-command" in caplog.text
    assert not list((maildir_path(driver) / "tmp").iterdir())


def maildir_path(driver: Driver) -> Path:
    assert driver.session.store is not None
    return driver.session.store.maildir.path


async def test_append_too_big_is_no_toobig_and_the_session_goes_on(services: SessionServices) -> None:
    services.settings = dataclasses.replace(SETTINGS, append_limit=100_000)
    session = Driver(services)
    await session.line()
    await session.login()
    session.feed(b"t APPEND INBOX {100001}\r\n")
    assert await session.line() == b"t NO [TOOBIG] Literal larger than 100000 octets"
    data = message("Fits")
    answer = await session.command(b"APPEND INBOX {%d+}\r\n" % len(data) + data)
    assert answer[-1].startswith(b"t OK [APPENDUID ")
    session.reader.feed_eof()
    await session.ended()


# -- keeping clients in step -----------------------------------------------------------------------------


async def test_no_expunge_during_fetch_store_search_but_after_noop(services: SessionServices) -> None:
    first, second = Driver(services), Driver(services)
    for session in (first, second):
        await session.line()
        await session.login()
    for subject in ("one", "two", "three"):
        data = message(subject)
        await first.command(b"APPEND INBOX {%d+}\r\n" % len(data) + data)
    await first.command(b"SELECT INBOX")
    await second.command(b"SELECT INBOX")
    await second.command(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert (await second.command(b"EXPUNGE"))[:-1] == [b"* 1 EXPUNGE"]
    for text in (b"FETCH 3 (UID)", b"STORE 3 +FLAGS (\\Seen)", b"SEARCH ALL"):
        answer = await first.command(text)
        assert not any(line.endswith(b"EXPUNGE") for line in answer), answer
    assert (await first.command(b"SEARCH ALL"))[0] == b"* SEARCH 1 2 3"  # still numbered as the client knows
    assert (await first.command(b"FETCH 1 (BODY.PEEK[])"))[-1].startswith(b"t NO [EXPUNGEISSUED]")
    answer = await first.command(b"UID FETCH 3 (FLAGS)")  # UID commands may report it
    assert b"* 1 EXPUNGE" in answer and answer[-1] == b"t OK Fetch completed."
    assert (await second.command(b"NOOP"))[0] == b"* 2 FETCH (UID 3 FLAGS (\\Seen))"
    for session in (first, second):
        session.reader.feed_eof()
        await session.ended()


async def test_idle_reports_a_delivery(driver: Driver, directory: Directory) -> None:
    await driver.login()
    await driver.command(b"SELECT INBOX")
    driver.feed(b"i IDLE\r\n")
    assert await driver.line() == b"+ idling"
    await asyncio.to_thread(maildir(directory).deliver, Path(_message_file(directory)))
    assert await driver.line() == b"* 1 EXISTS"
    assert await driver.line() == b"* 1 RECENT"
    driver.feed(b"DONE\r\n")
    assert (await driver.until(b"i"))[-1] == b"i OK IDLE terminated."


def _message_file(directory: Directory) -> Path:
    path = directory.mail_root.parent / "incoming.eml"
    path.write_bytes(message("Delivered"))
    return path


async def test_a_changed_uidvalidity_ends_the_session(driver: Driver, directory: Directory) -> None:
    await driver.login()
    data = message("one")
    await driver.command(b"APPEND INBOX {%d+}\r\n" % len(data) + data)
    await driver.command(b"SELECT INBOX")
    (maildir(directory).path / "dovecot-uidlist").unlink()
    (maildir(directory).path / "dovecot-uidvalidity").unlink(missing_ok=True)
    for marker in maildir(directory).path.glob("dovecot-uidvalidity.*"):
        marker.unlink()
    driver.feed(b"t NOOP\r\n")
    assert await driver.line() == b"* BYE UIDVALIDITY of the selected mailbox changed."
    await driver.ended()


async def test_a_selected_folder_deleted_elsewhere_ends_the_session(
    driver: Driver, directory: Directory
) -> None:
    await driver.login()
    await driver.command(b"CREATE Projects")
    await driver.command(b"SELECT Projects")
    shutil.rmtree(maildir(directory).path / ".Projects")
    driver.feed(b"t NOOP\r\n")
    assert await driver.line() == b"* BYE Selected mailbox was deleted or renamed."
    await driver.ended()


async def test_delete_and_rename_of_the_selected_folder_by_the_session_itself(driver: Driver) -> None:
    await driver.login()
    await driver.command(b"CREATE Projects")
    await driver.command(b"SELECT Projects")
    assert (await driver.command(b"RENAME Projects Done"))[-1] == b"t OK Rename completed."
    assert (await driver.command(b"NOOP"))[-1] == b"t OK NOOP completed."  # still selected, as Done
    assert (await driver.command(b"DELETE Done"))[-1] == b"t OK Delete completed."
    assert (await driver.command(b"NOOP"))[-1] == b"t OK NOOP completed."
    assert (await driver.command(b"FETCH 1 FLAGS"))[-1] == b"t BAD No mailbox selected."


async def test_stop_says_bye_to_a_waiting_session(driver: Driver) -> None:
    await driver.login()
    driver.session.request_stop()
    assert await driver.line() == b"* BYE Server shutting down."
    await driver.ended()


async def test_autologout_before_login(services: SessionServices) -> None:
    services.settings = dataclasses.replace(SETTINGS, preauth_timeout=0.2)
    session = Driver(services)
    await session.line()
    assert await session.line() == b"* BYE Autologout; idle for too long."
    await session.ended()


# A warm SELECT: a folder this process has read and that did not change since is answered from the
# snapshot on the event loop (no full sync in a worker thread), with the same responses; any change on
# disk, flags set by another program included, still shows in the next SELECT.


@pytest.fixture
def full_syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times :meth:`Folder.sync` ran (the worker-thread path)."""
    calls = [0]
    real_sync = Folder.sync

    def counting_sync(self: Folder, *, report_expunges: bool = True) -> object:
        calls[0] += 1
        return real_sync(self, report_expunges=report_expunges)

    monkeypatch.setattr(Folder, "sync", counting_sync)
    return calls


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    for name in ("cur", "new"):
        os.utime(path / name, (past, past))


async def test_a_warm_select_answers_from_the_snapshot_and_sees_later_changes(
    driver: Driver, directory: Directory, full_syncs: list[int]
) -> None:
    box = maildir(directory)
    box.ensure()
    for number in range(3):
        (box.path / "cur" / f"170000000{number}.M1P1.test:2,").write_bytes(b"Subject: x\n\nbody\n")
    await driver.login()
    cold = await driver.command(b"SELECT INBOX")
    assert b"* 3 EXISTS" in cold and b"* OK [UNSEEN 1] First unseen." in cold
    age(box.path, 10)
    await driver.command(b"NOOP")  # a full sync of directories old enough to trust: the snapshot
    full_syncs[0] = 0
    warm = await driver.command(b"SELECT INBOX")
    assert full_syncs[0] == 0, "answered from the snapshot"
    assert warm == cold, "the same responses"
    assert warm[-1] == b"t OK [READ-WRITE] Select completed."
    examined = await driver.command(b"EXAMINE INBOX")
    assert full_syncs[0] == 0 and examined[-1] == b"t OK [READ-ONLY] Examine completed."
    # another program marks the first message seen: the next SELECT reads the folder again
    os.rename(box.path / "cur" / "1700000000.M1P1.test:2,", box.path / "cur" / "1700000000.M1P1.test:2,S")
    age(box.path, 20)
    changed = await driver.command(b"SELECT INBOX")
    assert full_syncs[0] == 1
    assert b"* OK [UNSEEN 2] First unseen." in changed
    assert b"* 3 EXISTS" in changed and b"* 0 RECENT" in changed
    # a delivery too
    box.deliver(Path(_incoming(directory)))
    delivered = await driver.command(b"SELECT INBOX")
    assert full_syncs[0] == 2
    assert b"* 4 EXISTS" in delivered and b"* 1 RECENT" in delivered


def _incoming(directory: Directory) -> Path:
    path = directory.mail_root.parent / "incoming.eml"
    path.write_bytes(b"Subject: late\r\n\r\nbody\r\n")
    return path


# A FETCH whose client goes away mid-response: the session makes the next batch in a worker thread
# while it writes one, and must let that thread finish before it closes the response generator.


class FailingWriter(FakeWriter):
    """A connection that breaks once ``allowed`` bytes were written."""

    def __init__(self, allowed: int) -> None:
        super().__init__()
        self.allowed = allowed

    async def drain(self) -> None:
        await asyncio.sleep(0.01)  # the next batch is being made meanwhile
        if len(self.data) > self.allowed:
            raise ConnectionResetError("the client went away")


async def test_a_client_gone_mid_fetch_ends_the_session_cleanly(
    services: SessionServices,
    directory: Directory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mailtoaster.imap.mailbox as mailbox_module

    real_open = mailbox_module.open_fetch_message

    def slow_open(folder: Folder, message: Message) -> FetchMessage:
        time.sleep(0.03)  # inside the response generator: still making the next batch when the client goes
        return real_open(folder, message)

    monkeypatch.setattr(mailbox_module, "open_fetch_message", slow_open)
    box = maildir(directory)
    box.ensure()
    body = b"".join(b"line %d of a long message\n" % number for number in range(12_000))  # ~300 KB
    for number in range(8):
        (box.path / "cur" / f"170000000{number}.M1P1.test:2,S").write_bytes(b"Subject: big\n\n" + body)
    caplog.set_level(logging.INFO)
    driver = Driver(services, writer=FailingWriter(allowed=400_000))  # breaks after the first 256 KB batch
    await driver.line()
    await driver.login()
    await driver.command(b"SELECT INBOX")
    driver.feed(b"f FETCH 1:8 (BODY.PEEK[])\r\n")
    await asyncio.wait_for(driver.task, TIMEOUT)
    assert driver.writer.closed
    assert len(driver.writer.data) < 8 * len(body), "the response stopped where the connection broke"
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"
    assert not [record for record in caplog.records if "generator" in record.getMessage()]
