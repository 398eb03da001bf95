"""A warm SELECT: a folder opened from the process's snapshot without a scan
(:meth:`Folder.sync_from_snapshot`, which the IMAP session runs on its event loop), the snapshot's lists
shared copy-on-write, and the unseen counts kept with the view and forgotten whenever it changes, whoever
changed it."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from mailtoaster.store import Maildir
from mailtoaster.store.folder import RECENT_FILE, Folder, MailStore, SnapshotCache
from tests.test_store_folder import seconds_clock

SEEN = "\\Seen"


@pytest.fixture
def box(tmp_path: Path) -> Maildir:
    maildir = Maildir(tmp_path / "Maildir", hostname="mx.example.com", clock=seconds_clock())
    maildir.ensure()
    return maildir


def deliver(box: Maildir, subject: str) -> Path:
    return box.deliver(io.BytesIO(f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode()))


def age_directories(path: Path, seconds: float = 10) -> None:
    """cur/ and new/ mtimes in the past (a different ``seconds``, a different stamp)."""
    past = time.time() - seconds
    for name in ("cur", "new"):
        os.utime(path / name, (past, past))


def quiet_store(box: Maildir, count: int = 3) -> MailStore:
    """``count`` messages, claimed, and a snapshot of them published with directories old enough to trust."""
    for index in range(count):
        deliver(box, f"m{index}")
    store = MailStore(box, snapshots=SnapshotCache())
    inbox = store.select("INBOX")
    age_directories(box.path)
    inbox.sync()
    return store


def rename_in_cur(box: Maildir, folder: Folder, uid: int, letters: str) -> None:
    """Another program changes a message's flags."""
    message = folder.message(uid)
    assert message is not None
    os.rename(box.path / message.location, box.path / "cur" / f"{message.basename}:2,{letters}")


def view(folder: Folder) -> list[tuple[int, str, frozenset[str]]]:
    return [(message.uid, message.location, message.flags) for message in folder.messages]


def test_an_unchanged_folder_is_opened_from_the_snapshot_as_a_sync_would(box: Maildir) -> None:
    store = quiet_store(box)
    warm = store.folder("INBOX")
    assert warm.sync_from_snapshot()
    reference = MailStore(Maildir(box.path), snapshots=None).select("INBOX", readonly=True)
    assert view(warm) == view(reference)
    assert (warm.uidvalidity, warm.uidnext, warm.recent) == (reference.uidvalidity, reference.uidnext, set())
    assert warm.first_unseen() == 1 and warm.unseen() == 3
    assert not warm.sync_from_snapshot(), "only a folder's first sync"
    assert not warm.sync()
    assert not MailStore(box, snapshots=None).folder("INBOX").sync_from_snapshot(), "no cache, no snapshot"


@pytest.mark.parametrize("change", ["delivery", "flags", "keywords", "uidlist", "dirty"])
def test_any_change_on_disk_sends_the_session_to_a_full_sync(box: Maildir, change: str) -> None:
    store = quiet_store(box)
    before = store.select("INBOX")
    if change == "delivery":
        deliver(box, "late")
    elif change == "flags":
        rename_in_cur(box, before, 2, "S")
    elif change == "keywords":
        (box.path / "dovecot-keywords").write_text("0 Work\n")
    elif change == "uidlist":
        uidlist = box.path / "dovecot-uidlist"
        os.utime(uidlist, ns=(uidlist.stat().st_mtime_ns + 1, uidlist.stat().st_mtime_ns + 1))
    if change != "dirty":
        age_directories(box.path, seconds=20)  # a stamp of its own, old enough to trust
    else:
        os.utime(box.path / "cur")  # just now: the mtime cannot prove that nothing changed
    warm = store.folder("INBOX")
    assert not warm.sync_from_snapshot()
    assert warm.messages == [] and warm.uidvalidity == 0, "nothing was changed"
    warm.sync()
    if change == "delivery":
        assert [message.uid for message in warm.messages] == [1, 2, 3, 4]
        assert warm.recent == {4}
    if change == "flags":
        assert warm.message(2).flags == {SEEN}  # type: ignore[union-attr]
        assert warm.first_unseen() == 1 and warm.unseen() == 2
    if change == "keywords":
        assert warm.keywords == ("Work",)


def test_a_session_first_told_of_messages_takes_the_full_sync(box: Maildir) -> None:
    store = quiet_store(box)
    validity = store.select("INBOX").uidvalidity
    (box.path / RECENT_FILE).write_text(f"{validity} 1\n")  # as if UIDs 2 and 3 were never shown to anyone
    examined = store.folder("INBOX", readonly=True)
    assert examined.sync_from_snapshot(), "a read-only session only counts them"
    assert examined.recent == {2, 3}
    selected = store.folder("INBOX")
    assert not selected.sync_from_snapshot(), "a read-write one must raise the marker, under the lock"
    selected.sync()
    assert selected.recent == {2, 3}
    assert (box.path / RECENT_FILE).read_text().split() == [str(validity), "3"]
    again = store.folder("INBOX")
    assert again.sync_from_snapshot() and again.recent == set()


def test_a_read_write_session_does_not_start_from_a_snapshot_with_mail_in_new(box: Maildir) -> None:
    deliver(box, "one")
    store = MailStore(box, snapshots=SnapshotCache())
    examined = store.select("INBOX", readonly=True)
    age_directories(box.path)
    examined.sync()
    assert store.folder("INBOX", readonly=True).sync_from_snapshot()
    selected = store.folder("INBOX")
    assert not selected.sync_from_snapshot(), "it must claim new/"
    selected.sync()
    assert selected.recent == {1} and os.listdir(box.path / "new") == []


def test_the_snapshot_lists_are_shared_until_a_session_changes_its_view(box: Maildir) -> None:
    store = quiet_store(box)
    first, second = store.folder("INBOX"), store.folder("INBOX")
    assert first.sync_from_snapshot() and second.sync_from_snapshot()
    assert first.messages is second.messages, "shared, not copied"
    assert first.store([1], [SEEN]) == (1,)
    assert first.messages is not second.messages
    assert first.message(1).flags == {SEEN}  # type: ignore[union-attr]
    assert second.message(1).flags == frozenset(), "the other view changes at its own sync"  # type: ignore[union-attr]
    assert second.first_unseen() == 1 and first.first_unseen() == 2
    assert store.select("INBOX").message(1).flags == {SEEN}  # type: ignore[union-attr]
    second.sync()
    assert second.message(1).flags == {SEEN}  # type: ignore[union-attr]
    assert second.first_unseen() == 2 and second.unseen() == 2


def test_unseen_counts_follow_every_change_of_the_view(box: Maildir) -> None:
    store = quiet_store(box, count=4)
    inbox = store.select("INBOX")
    assert (inbox.first_unseen(), inbox.unseen()) == (1, 4)
    inbox.store([1], [SEEN])  # this session
    assert (inbox.first_unseen(), inbox.unseen()) == (2, 3)
    rename_in_cur(box, inbox, 2, "S")  # another program
    inbox.sync()
    assert (inbox.first_unseen(), inbox.unseen()) == (3, 2)
    inbox.store([3, 4], [SEEN])
    assert (inbox.first_unseen(), inbox.unseen()) == (None, 0)
    deliver(box, "late")  # delivery
    inbox.sync()
    assert (inbox.first_unseen(), inbox.unseen()) == (5, 1)
    inbox.store([1], [SEEN], "remove")
    assert (inbox.first_unseen(), inbox.unseen()) == (1, 2)
    inbox.store([1], ["\\Deleted"])
    inbox.expunge()
    inbox.sync()
    assert [message.uid for message in inbox.messages] == [2, 3, 4, 5]
    assert (inbox.first_unseen(), inbox.unseen()) == (4, 1)
    age_directories(box.path, seconds=30)
    inbox.sync()  # published
    warm = store.folder("INBOX", readonly=True)
    assert warm.sync_from_snapshot()
    assert (warm.first_unseen(), warm.unseen()) == (4, 1)
    assert store.status("INBOX").unseen == 1


def test_inbox_is_made_when_its_maildir_is_missing(tmp_path: Path) -> None:
    maildir = Maildir(tmp_path / "Maildir", hostname="mx.example.com")
    inbox = MailStore(maildir, snapshots=None).select("INBOX")
    assert inbox.messages == []
    assert all((maildir.path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def test_sizes_written_to_the_uid_list_keep_the_snapshot_current(
    box: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mailtoaster.store.folder.MEASURE_AT_ASSIGNMENT", 0)  # measured when asked for
    store = quiet_store(box)
    inbox = store.folder("INBOX")
    assert inbox.sync_from_snapshot()
    sizes = [inbox.rfc822_size(message) for message in inbox.messages]
    inbox.close()  # writes the sizes: a new uid list file
    assert " W" in (box.path / "dovecot-uidlist").read_text()
    warm = store.folder("INBOX")
    assert warm.sync_from_snapshot(), "the snapshot was kept current"
    assert [warm.rfc822_size(message) for message in warm.messages] == sizes
    reference = MailStore(Maildir(box.path), snapshots=None).select("INBOX", readonly=True)
    assert view(warm) == view(reference)


def test_sizes_written_over_a_uid_list_changed_elsewhere_leave_the_snapshot_stale(
    box: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mailtoaster.store.folder.MEASURE_AT_ASSIGNMENT", 0)
    store = quiet_store(box)
    inbox = store.folder("INBOX")
    assert inbox.sync_from_snapshot()
    inbox.rfc822_size(inbox.messages[0])
    stamps = {name: (box.path / name).stat().st_mtime_ns for name in ("new", "cur")}
    MailStore(Maildir(box.path), snapshots=None).append("INBOX", b"Subject: other\r\n\r\nx\r\n")
    for name, mtime in stamps.items():  # only the uid list tells: the directories look as before
        os.utime(box.path / name, ns=(mtime, mtime))
    inbox.close()
    warm = store.folder("INBOX")
    assert not warm.sync_from_snapshot()
    warm.sync()
    assert [message.uid for message in warm.messages] == [1, 2, 3, 4]
