"""SELECT of a folder this process has read and that did not change since: answered from the snapshot on
the event loop (no full sync in a worker thread), with the same responses; any change on disk, flags set
by another program included, still shows in the next SELECT."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from mailtoaster.imap.session import SessionServices
from mailtoaster.store import Directory
from mailtoaster.store.folder import Folder
from tests.imapserver import ALICE, ALICE_PASSWORD, DOMAIN
from tests.test_imap_session import SETTINGS, TIMEOUT, Driver, maildir


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
async def driver(directory: Directory, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Driver]:
    caplog.set_level(logging.INFO)
    session = Driver(SessionServices(directory, SETTINGS))
    assert (await session.line()).startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    yield session
    if not session.task.done():
        session.reader.feed_eof()
        await asyncio.wait_for(session.task, TIMEOUT)
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"


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
