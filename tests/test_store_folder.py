"""The IMAP mailbox layer over Maildir++: UIDs, \\Recent, flags and keywords in file names, changes between
sessions, APPEND/COPY/MOVE/EXPUNGE, folder operations, concurrency (threads and processes, with delivery
going on), and Dovecot serving the same Maildir and agreeing on everything."""

from __future__ import annotations

import io
import itertools
import logging
import multiprocessing
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.store import Maildir
from mailtoaster.store.errors import FolderNameError, MaildirError
from mailtoaster.store.folder import (
    Changes,
    FlagError,
    Folder,
    FolderExistsError,
    FolderGoneError,
    FolderListing,
    FolderNotFoundError,
    KeywordLimitError,
    MailStore,
    MessageGoneError,
    ReadOnlyFolderError,
    SnapshotCache,
    combine_letters,
    crlf_size,
    maildir_sort_key,
    maildir_sorted,
    size_field,
)
from tests.peers import require
from tests.test_maildir import DOVECOT_IMAP, run_dovecot_imap

MESSAGE = b"From: a@example.org\r\nSubject: hello\r\n\r\nline one\r\nline two\r\n"


def seconds_clock(start: int = 1_700_000_000) -> Callable[[], int]:
    """A clock for delivery names one second apart, so delivery order is name order (as in real life)."""
    counter = itertools.count()
    return lambda: (start + next(counter)) * 1_000_000_000


@pytest.fixture
def box(tmp_path: Path) -> Maildir:
    maildir = Maildir(tmp_path / "Maildir", hostname="mx.example.com", clock=seconds_clock())
    maildir.ensure()
    return maildir


@pytest.fixture
def store(box: Maildir) -> MailStore:
    return MailStore(box)


def deliver(box: Maildir, subject: str, folder: str | None = None) -> Path:
    return box.deliver(io.BytesIO(f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode()), folder=folder)


def subjects(folder: Folder) -> list[str]:
    result = []
    for message in folder.messages:
        with folder.open_message(message) as stream:
            result.append(stream.readline().decode().removeprefix("Subject: ").strip())
    return result


def age_directories(folder: Folder, seconds: float = 10) -> None:
    """Set cur/ and new/ mtimes into the past, so an unchanged mtime proves that nothing changed."""
    past = time.time() - seconds
    for name in ("cur", "new"):
        os.utime(folder.path / name, (past, past))


# UIDs and \Recent


def test_select_assigns_uids_in_delivery_order_and_claims_new_mail(box: Maildir, store: MailStore) -> None:
    for subject in ("one", "two", "three"):
        deliver(box, subject)
    inbox = store.select("INBOX")
    assert [message.uid for message in inbox.messages] == [1, 2, 3]
    assert subjects(inbox) == ["one", "two", "three"]
    assert inbox.recent == {1, 2, 3}
    assert os.listdir(box.path / "new") == []
    assert all(name.endswith(":2,") for name in os.listdir(box.path / "cur"))
    assert inbox.uidnext == 4
    assert inbox.uidvalidity > 0
    other = store.select("INBOX")
    assert other.recent == set(), "\\Recent belongs to the first session only"
    assert [message.uid for message in other.messages] == [1, 2, 3]


def test_first_select_reads_the_directories_once_unless_they_change_before_the_lock(
    box: Maildir, store: MailStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UIDs are assigned under the uid list's lock from the scan made before it when new/ and cur/
    provably have not changed since (one listing of a big folder, not two); a delivery between that
    scan and the lock makes it scan again, so the new message gets its UID in the same SELECT."""
    for subject in ("one", "two", "three"):
        deliver(box, subject)
    for name in ("cur", "new"):
        past = time.time() - 10
        os.utime(box.path / name, (past, past))
    listings: list[str] = []
    original = Folder._read_directory

    def counted(folder: Folder, subdirectory: str) -> dict[str, str]:
        listings.append(subdirectory)
        return original(folder, subdirectory)

    monkeypatch.setattr(Folder, "_read_directory", counted)
    assert [message.uid for message in store.select("INBOX").messages] == [1, 2, 3]
    assert listings == ["new", "cur"], "one scan: the directories were as it read them"

    deliver(box, "four")
    os.utime(box.path / "new", (time.time() - 5, time.time() - 5))
    listings.clear()
    raced = False

    def delivering(folder: Folder, subdirectory: str) -> dict[str, str]:
        nonlocal raced
        files = counted(folder, subdirectory)
        if subdirectory == "cur" and not raced:  # the first scan is done: mail comes in before the lock
            raced = True
            deliver(box, "five")
        return files

    monkeypatch.setattr(Folder, "_read_directory", delivering)
    other = store.select("INBOX")
    assert subjects(other)[-2:] == ["four", "five"]
    assert [message.uid for message in other.messages] == [1, 2, 3, 4, 5]
    assert listings == ["new", "cur", "new", "cur"], "scanned again under the lock"


def test_appended_and_copied_messages_are_recent_for_the_first_session_told(
    box: Maildir, store: MailStore
) -> None:
    deliver(box, "one")
    store.select("INBOX")  # takes \\Recent of UID 1
    store.append("INBOX", MESSAGE, flags=["\\Seen"])  # straight to cur/: no session claims it by a rename
    store.append("INBOX", MESSAGE, flags=["\\Flagged"])
    store.create("Work")
    work_uid = store.append("Work", MESSAGE, flags=["\\Seen"]).uid
    examined = store.select("INBOX", readonly=True)
    assert examined.recent == {2, 3}, "EXAMINE counts them without taking them"
    other_process = MailStore(Maildir(box.path), snapshots=None)
    first = other_process.select("INBOX")
    assert first.recent == {2, 3}
    assert store.select("INBOX").recent == set(), "recent to one session only, across processes"
    work = store.select("Work")
    copied = work.copy([work_uid], first)
    work.move([work_uid], first)
    second = store.select("INBOX")
    changes = first.sync()
    assert second.recent == set(copied.target_uids) | {5}, "the first session told of them"
    assert first.recent == {2, 3} and changes.recent == 2


def test_recent_marker_follows_uidvalidity_and_restarts_from_new(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    assert store.select("INBOX").recent == {1}
    marker = box.path / "mailtoaster-recent"
    uidvalidity, highest = marker.read_text().split()
    assert int(highest) == 1
    marker.write_text(f"{int(uidvalidity) + 1} 0\n")  # another UIDVALIDITY: not ours, start again
    deliver(box, "two")
    again = MailStore(Maildir(box.path), snapshots=None).select("INBOX")
    assert again.recent == {2}, "without a valid marker, what waited in new/ is recent"
    assert marker.read_text().split() == [uidvalidity, "2"]


def test_append_gives_uids_to_waiting_delivery_first(box: Maildir, store: MailStore) -> None:
    inbox = store.select("INBOX")
    deliver(box, "delivered")
    first = inbox.append(MESSAGE, flags=["\\Seen"])
    second = inbox.append(MESSAGE)
    assert (first.uid, second.uid) == (2, 3), "the delivered message, which arrived first, has UID 1"
    changes = inbox.sync()
    assert changes.added == (1, 2, 3)
    assert subjects(inbox)[0] == "delivered"
    assert inbox.recent == {1, 2, 3}
    store.create("Archive")
    deliver(box, "archived", folder="Archive")
    copied = inbox.copy([2], store.folder("Archive"))
    assert copied.target_uids == (2,), "COPY too: the waiting delivery took UID 1"
    assert subjects(store.select("Archive"))[0] == "archived"


def test_expunge_of_a_recent_message_reports_the_new_recent_count(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    deliver(box, "two")
    mine = store.select("INBOX")
    assert mine.recent == {1, 2}
    other = store.select("INBOX")
    other.store([2], ["\\Deleted"])
    other.expunge()
    changes = mine.sync()
    assert changes.expunged == (2,)
    assert changes.recent == 1 and mine.recent == {1}
    unchanged = other.sync()
    assert unchanged.expunged == (2,) and unchanged.recent is None, "no recent message went: no RECENT"


def test_a_view_is_compact_and_shared_with_the_snapshot(box: Maildir, store: MailStore) -> None:
    for number in range(20):
        deliver(box, f"m{number}")
    first = store.select("INBOX")
    first.store(range(1, 11), ["\\Seen"])
    first.sync()
    age_directories(first)
    first.sync()
    second = store.select("INBOX")
    assert not hasattr(first.messages[0], "__dict__")
    assert {id(message.flags) for message in second.messages} == {
        id(first._flags_of("c:2,")),
        id(first._flags_of("c:2,S")),
    }, "one frozenset per distinct flag set"
    assert [message.place for message in second.messages[9:11]] == ["c:2,S", "c:2,"]
    assert second.messages[0] is first.messages[0], "messages are shared, not copied"
    assert second._uidlist.uids is first._uidlist.uids, "the uid list is shared until one side changes it"
    assert second.messages[0].location == "cur/" + second.messages[0].basename + ":2,S"
    deliver(box, "more")
    second.sync()
    assert second._uidlist.uids is not first._uidlist.uids
    assert len(second._uidlist.uids) == 21 and len(first._uidlist.uids) == 20


def test_uids_and_uidvalidity_survive_a_restart(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    deliver(box, "two")
    first = store.select("INBOX")
    deliver(box, "three")
    restarted = MailStore(Maildir(box.path), snapshots=None).select("INBOX")
    assert restarted.uidvalidity == first.uidvalidity
    assert [message.uid for message in restarted.messages] == [1, 2, 3]
    assert subjects(restarted) == ["one", "two", "three"]


def test_examine_moves_nothing_and_sees_new_mail_as_recent(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    examined = store.select("INBOX", readonly=True)
    assert examined.recent == {1}
    assert len(os.listdir(box.path / "new")) == 1
    with pytest.raises(ReadOnlyFolderError):
        examined.store([1], ["\\Seen"])
    with pytest.raises(ReadOnlyFolderError):
        examined.expunge()
    selected = store.select("INBOX")
    assert selected.recent == {1}, "EXAMINE did not take \\Recent away"


def test_each_new_message_is_recent_for_exactly_one_of_two_sessions(box: Maildir, store: MailStore) -> None:
    first, second = store.select("INBOX"), store.select("INBOX")
    for round_number in range(5):
        deliver(box, f"m{round_number}")
        (first if round_number % 2 else second).sync()
        first.sync()
        second.sync()
    assert first.recent.isdisjoint(second.recent)
    assert first.recent | second.recent == {1, 2, 3, 4, 5}


def test_sizes_are_stored_with_the_uid_and_files_are_not_read_when_warm(
    box: Maildir, store: MailStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(50):
        deliver(box, f"m{index}")
    store.select("INBOX").close()
    lines = (box.path / "dovecot-uidlist").read_text().splitlines()
    assert all(re.fullmatch(r"\d+ W\d+ :\S+", line) for line in lines[1:])
    opened: list[str] = []
    real_open = open

    def watching_open(file: object, *args: object, **kwargs: object) -> object:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    stats = 0
    real_stat = os.stat

    def counting_stat(*args: object, **kwargs: object) -> os.stat_result:
        nonlocal stats
        stats += 1
        return real_stat(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("builtins.open", watching_open)
    monkeypatch.setattr(os, "stat", counting_stat)
    warm = MailStore(Maildir(box.path), snapshots=None).select("INBOX")
    sizes = [warm.rfc822_size(message) for message in warm.messages]
    assert opened == []
    assert stats < 10, "no stat per message"
    assert sizes == [len(f"Subject: m{index}\r\n\r\nbody of m{index}\r\n") for index in range(50)]


def test_uid_order_follows_the_time_in_the_name() -> None:
    names = [
        "1700000002.M5P1.host",
        "1700000001.M900000P1.host",
        "1700000001.M20P1.host",
        "weird-name",
        "999.M1P1.host,S=4",
    ]
    assert sorted(names, key=maildir_sort_key) == [
        "weird-name",
        "999.M1P1.host,S=4",
        "1700000001.M20P1.host",
        "1700000001.M900000P1.host",
        "1700000002.M5P1.host",
    ]


_name_piece = st.sampled_from(
    ["1700000001", "999", "", ".", "M", "M20", "M900000", "P1", "host", ",S=4", "x", "00"]
)


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.lists(_name_piece, max_size=6).map("".join), unique=True, max_size=150))
def test_bulk_sort_is_the_sort_by_key(names: list[str]) -> None:
    """maildir_sorted makes the keys with one regular expression over all the names: the same order as
    sorting by maildir_sort_key, for few names (sorted by key) and many (in bulk) alike."""
    assert maildir_sorted(names) == sorted(names, key=maildir_sort_key)
    assert maildir_sorted(iter(names * 1)) == sorted(names, key=maildir_sort_key)


def test_bulk_sort_of_many_maildir_names() -> None:
    names = [f"{1700000000 + (n * 7919) % 1000}.M{(n * 104729) % 999999}P{n}.host,S={n}" for n in range(5000)]
    names += ["weird-name", "12.abc", "M5", "13"]
    assert maildir_sorted(names) == sorted(names, key=maildir_sort_key)
    assert maildir_sorted([*names, "line\nfeed"]) == sorted([*names, "line\nfeed"], key=maildir_sort_key)


# Flags and keywords


def test_store_renames_with_sorted_letters(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    inbox = store.select("INBOX")
    assert inbox.store([1], ["\\Seen", "\\Flagged", "\\Answered", "\\Draft", "\\Deleted"]) == (1,)
    assert inbox.messages[0].location.endswith(":2,DFRST")
    assert inbox.messages[0].flags == {"\\Seen", "\\Flagged", "\\Answered", "\\Draft", "\\Deleted"}
    assert inbox.store([1], ["\\Flagged", "\\Deleted"], "remove") == (1,)
    assert inbox.messages[0].location.endswith(":2,DRS")
    assert inbox.store([1], ["\\seen"], "add") == (), "no change, no rename"
    assert inbox.store([1], ["\\Seen"], "replace") == (1,)
    assert os.listdir(box.path / "cur") == [inbox.messages[0].location[4:]]
    assert inbox.messages[0].location.endswith(":2,S")


def test_replace_keeps_letters_imap_does_not_show() -> None:
    assert combine_letters("PSa", "replace", {"F"}) == "FP"
    assert combine_letters("S", "add", {"a", "F"}) == "FSa"
    assert combine_letters("FSa", "remove", {"a", "S"}) == "F"


def test_keywords_take_letters_from_dovecot_keywords(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    deliver(box, "two")
    inbox = store.select("INBOX")
    assert inbox.store([1], ["$Forwarded", "Work"]) == (1,)
    assert inbox.store([2], ["work", "\\Seen"]) == (2,)
    assert (box.path / "dovecot-keywords").read_text() == "0 $Forwarded\n1 Work\n"
    assert inbox.messages[0].location.endswith(":2,ab")
    assert inbox.messages[1].location.endswith(":2,Sb")
    assert inbox.messages[1].flags == {"\\Seen", "Work"}
    assert inbox.keywords == ("$Forwarded", "Work")
    assert inbox.sync().keywords_changed, "the session must send FLAGS again"
    assert not inbox.sync().keywords_changed


def test_removing_an_unknown_keyword_defines_nothing(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    inbox = store.select("INBOX")
    assert inbox.store([1], ["never-seen"], "remove") == ()
    assert not (box.path / "dovecot-keywords").exists()


def test_flags_that_cannot_be_stored(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    inbox = store.select("INBOX")
    assert inbox.store([1], ["\\Recent"]) == (), "\\Recent is silently not stored"
    with pytest.raises(FlagError):
        inbox.store([1], ["\\Important"])


def test_the_27th_keyword_has_no_letter(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    inbox = store.select("INBOX")
    inbox.store([1], [f"k{index}" for index in range(26)])
    assert inbox.keywords_full
    with pytest.raises(KeywordLimitError):
        inbox.store([1], ["one-too-many"])


def test_store_merges_with_a_rename_by_another_process(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    inbox = store.select("INBOX")
    name = inbox.messages[0].location[4:]
    os.rename(box.path / "cur" / name, box.path / "cur" / (name + "F"))  # someone flagged it meanwhile
    assert inbox.store([1], ["\\Seen"]) == (1,)
    assert os.listdir(box.path / "cur") == [name + "FS"]
    assert inbox.messages[0].flags == {"\\Flagged", "\\Seen"}


def test_another_sessions_flag_change_is_reported(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    deliver(box, "two")
    first, second = store.select("INBOX"), store.select("INBOX")
    first.store([2], ["\\Seen"])
    changes = second.sync()
    assert changes.flags_changed == (2,)
    assert second.message(2) is not None and second.message(2).flags == {"\\Seen"}  # type: ignore[union-attr]
    assert first.sync().flags_changed == (), "the storing session reports in its STORE response"


# Changes between sessions


def test_new_mail_and_expunges_are_reported_with_sequence_numbers(box: Maildir, store: MailStore) -> None:
    for index in range(6):
        deliver(box, f"m{index}")
    first, second = store.select("INBOX"), store.select("INBOX")
    first.store([2, 3, 5], ["\\Deleted"])
    assert first.expunge() == (2, 3, 5)
    deliver(box, "late")
    changes = second.sync()
    assert changes.expunged == (2, 3, 5)
    assert changes.expunged_sequences == (2, 2, 3)
    assert changes.added == (7,)
    assert [message.uid for message in second.messages] == [1, 4, 6, 7]
    assert second.sequence(7) == 4
    assert second.message(2) is None
    mine = first.sync()
    assert mine.expunged_sequences == (2, 2, 3)
    assert mine.added == (7,)


def test_expunges_can_be_held_back_during_fetch(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    deliver(box, "two")
    first, second = store.select("INBOX"), store.select("INBOX")
    first.store([1], ["\\Deleted"])
    first.expunge()
    held = second.sync(report_expunges=False)
    assert held.expunged == ()
    assert [message.uid for message in second.messages] == [1, 2]
    assert second.gone == {1}
    with pytest.raises(MessageGoneError):
        second.open_message(second.messages[0])
    assert second.sync().expunged_sequences == (1,)
    assert [message.uid for message in second.messages] == [2]


def test_expunge_leaves_a_message_whose_deleted_flag_was_taken_away(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    first, second = store.select("INBOX"), store.select("INBOX")
    first.store([1], ["\\Deleted"])
    second.sync()
    first.store([1], ["\\Deleted"], "remove")
    assert second.expunge() == ()
    assert len(os.listdir(box.path / "cur")) == 1


def test_uid_expunge_removes_only_the_given_uids(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    deliver(box, "two")
    inbox = store.select("INBOX")
    inbox.store([1, 2], ["\\Deleted"])
    assert inbox.expunge([2]) == (2,)
    assert inbox.sync().expunged == (2,)


def test_a_quiet_folder_costs_no_scan(
    box: Maildir, store: MailStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(box, "one")
    inbox = store.select("INBOX")
    age_directories(inbox)
    inbox.sync()
    scans = 0
    real_scan = Folder._scan

    def counting_scan(self: Folder) -> dict[str, str]:
        nonlocal scans
        scans += 1
        return real_scan(self)

    monkeypatch.setattr(Folder, "_scan", counting_scan)
    for _ in range(5):
        assert inbox.sync() == Changes()
    assert scans == 0
    deliver(box, "two")
    assert inbox.sync().added == (2,)
    assert scans >= 1


def test_a_file_missed_by_one_scan_is_not_reported_expunged(
    box: Maildir, store: MailStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(box, "one")
    deliver(box, "two")
    inbox = store.select("INBOX")
    real_scan = Folder._scan
    calls = 0

    def scan_missing_once(self: Folder) -> dict[str, str]:
        nonlocal calls
        calls += 1
        files = real_scan(self)
        if calls == 1:  # as if the file were being renamed while the directory was read
            files.pop(inbox.messages[0].basename)
        return files

    monkeypatch.setattr(Folder, "_scan", scan_missing_once)
    os.utime(box.path / "cur")
    assert inbox.sync() == Changes()
    assert calls == 2
    assert [message.uid for message in inbox.messages] == [1, 2]


def test_duplicate_files_get_their_own_uids(box: Maildir, store: MailStore) -> None:
    (box.path / "cur" / "1700000000.M1P1.host:2,S").write_bytes(b"Subject: a\n\nx\n")
    (box.path / "cur" / "1700000000.M1P1.host:2,F").write_bytes(b"Subject: b\n\nx\n")
    inbox = store.select("INBOX")
    assert len(inbox.messages) == 2
    assert {frozenset(message.flags) for message in inbox.messages} == {
        frozenset({"\\Seen"}),
        frozenset({"\\Flagged"}),
    }


def test_a_deleted_selected_folder_ends_the_session(box: Maildir, store: MailStore) -> None:
    store.create("Work")
    work = store.select("Work")
    store.delete("Work")
    with pytest.raises(FolderGoneError):
        work.sync()


# Snapshots: the next session of this process starts from the last full view


@pytest.fixture
def counted_scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    scans = [0]
    real_scan = Folder._scan

    def counting_scan(self: Folder) -> dict[str, str]:
        scans[0] += 1
        return real_scan(self)

    monkeypatch.setattr(Folder, "_scan", counting_scan)
    return scans


def quiet_store(box: Maildir, cache: SnapshotCache) -> MailStore:
    for index in range(3):
        deliver(box, f"m{index}")
    store = MailStore(box, snapshots=cache)
    inbox = store.select("INBOX")  # claims new/: changes the directories
    age_directories(inbox)
    inbox.sync()  # a full scan of directories old enough to trust: published
    return store


def test_a_warm_select_starts_from_the_snapshot_without_scanning(
    box: Maildir, counted_scans: list[int]
) -> None:
    store = quiet_store(box, SnapshotCache())
    counted_scans[0] = 0
    second = store.select("INBOX")
    assert counted_scans[0] == 0
    assert [message.uid for message in second.messages] == [1, 2, 3]
    assert second.recent == set()
    assert second.uidnext == 4
    second.store([2], ["\\Seen"])
    assert store.select("INBOX").message(2).flags == {"\\Seen"}  # type: ignore[union-attr]


def test_a_snapshot_made_stale_by_the_disk_is_caught_up(box: Maildir, counted_scans: list[int]) -> None:
    store = quiet_store(box, SnapshotCache())
    name = store.select("INBOX").messages[0].location[4:]
    os.rename(box.path / "cur" / name, box.path / "cur" / (name + "F"))  # another program flags it
    deliver(box, "late")
    counted_scans[0] = 0
    second = store.select("INBOX")
    assert counted_scans[0] >= 1
    assert [message.uid for message in second.messages] == [1, 2, 3, 4]
    assert second.messages[0].flags == {"\\Flagged"}
    assert second.recent == {4}


def test_a_read_write_session_claims_what_a_read_only_snapshot_left_in_new(box: Maildir) -> None:
    cache = SnapshotCache()
    deliver(box, "one")
    store = MailStore(box, snapshots=cache)
    examined = store.select("INBOX", readonly=True)
    age_directories(examined)
    examined.sync()
    assert store.select("INBOX", readonly=True).recent == {1}
    selected = store.select("INBOX")
    assert selected.recent == {1}
    assert os.listdir(box.path / "new") == []


def test_the_cache_keeps_the_most_recently_used_views_up_to_its_size(box: Maildir) -> None:
    cache = SnapshotCache(max_messages=4)
    store = quiet_store(box, cache)
    for name in ("A", "B"):
        store.create(name)
        deliver(box, "x", folder=name)
        folder = store.select(name)
        age_directories(folder)
        folder.sync()
    assert cache.get(str(box.path)) is None, "3 + 1 + 1 messages: the least recently used view went"
    assert cache.get(str(box.path / ".A")) is not None
    assert cache.get(str(box.path / ".B")) is not None
    cache.clear()
    assert cache.get(str(box.path / ".B")) is None


# Sizes and dates


def test_rfc822_size_counts_crlf() -> None:
    assert crlf_size(io.BytesIO(b"a\nb\r\nc\rd\n")) == len(b"a\r\nb\r\nc\rd\r\n")
    assert crlf_size(io.BytesIO(b"")) == 0
    chunked = b"x" * (64 * 1024 - 1) + b"\r\n" + b"y\n"
    assert crlf_size(io.BytesIO(chunked)) == len(chunked) + 1, "a CRLF split across chunks is one line end"


def test_size_fields_are_read_as_dovecot_does() -> None:
    assert size_field("1.M1P1.host,S=18,W=21", "S") == 18
    assert size_field("1.M1P1.host,S=18,W=21", "W") == 21
    assert size_field("1.M1P1.host,S=18", "W") is None
    assert size_field("1.M1P1.host,S=18x", "S") is None


def test_sizes_unknown_to_name_and_list_are_measured_once_and_stored(box: Maildir, store: MailStore) -> None:
    (box.path / "cur").joinpath("1700000000.M1P1.other:2,S").write_bytes(b"Subject: x\n\nbody\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("mailtoaster.store.folder.MEASURE_AT_ASSIGNMENT", 0)
        inbox = store.select("INBOX")
    assert (box.path / "dovecot-uidlist").read_text().splitlines()[1] == "1 :1700000000.M1P1.other"
    assert inbox.rfc822_size(inbox.messages[0]) == 20
    inbox.close()
    assert (box.path / "dovecot-uidlist").read_text().splitlines()[1] == "1 W20 :1700000000.M1P1.other"
    again = MailStore(Maildir(box.path), snapshots=None).select("INBOX")
    assert again.rfc822_size(again.messages[0]) == 20


def test_internal_date_is_the_file_mtime(box: Maildir, store: MailStore) -> None:
    path = deliver(box, "one")
    os.utime(path, (1_600_000_000, 1_600_000_000))
    inbox = store.select("INBOX")
    assert inbox.internal_date(inbox.messages[0]) == 1_600_000_000
    assert inbox.stored_size(inbox.messages[0]) == len(b"Subject: one\n\nbody of one\n")


# APPEND, COPY, MOVE


def test_append_assigns_the_uid_at_once(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    inbox = store.select("INBOX")
    result = store.append("INBOX", MESSAGE, flags=["\\Seen", "Later"], internal_date=1_500_000_000)
    assert (result.uidvalidity, result.uid) == (inbox.uidvalidity, 2)
    plain = store.append("INBOX", io.BytesIO(b"Subject: plain\r\n\r\nx\r\n"))
    assert plain.uid == 3
    changes = inbox.sync()
    assert changes.added == (2, 3)
    appended = inbox.message(2)
    assert appended is not None
    assert appended.flags == {"\\Seen", "Later"}
    assert inbox.internal_date(appended) == 1_500_000_000
    assert inbox.rfc822_size(appended) == len(MESSAGE)
    with inbox.open_message(appended) as stream:
        assert stream.read() == MESSAGE.replace(b"\r\n", b"\n")
    assert re.fullmatch(r"cur/\d+\.M\d+P\d+Q\d+\.mx\.example\.com,S=\d+,W=\d+:2,Sa", appended.location)
    assert inbox.recent == {1, 2, 3}, "recent for the first session told of them, flagged (cur/) or not"


def test_append_to_the_selected_folder_is_recent_there(box: Maildir, store: MailStore) -> None:
    inbox = store.select("INBOX")
    result = inbox.append(MESSAGE, flags=["\\Seen"])
    inbox.sync()
    assert inbox.recent == {result.uid}


def test_append_into_a_folder_without_uid_list_starts_one(box: Maildir, store: MailStore) -> None:
    store.create("Sent")
    result = store.append("Sent", MESSAGE)
    assert result.uid == 1
    assert store.status("Sent").uidvalidity == result.uidvalidity


def test_copy_keeps_flags_keywords_and_date_and_reports_copyuid(box: Maildir, store: MailStore) -> None:
    for subject in ("one", "two", "three"):
        deliver(box, subject)
    store.create("Archive")
    archive_session = store.select("Archive")
    archive_session.append(b"Subject: already\r\n\r\nx\r\n", flags=["Other"])
    inbox = store.select("INBOX")
    inbox.store([1], ["Work", "\\Seen"])
    os.utime(box.path / inbox.messages[0].location, (1_400_000_000, 1_400_000_000))
    result = inbox.copy([3, 1], store.folder("Archive"))
    assert result.source_uids == (1, 3)
    assert result.target_uids == (2, 3)
    archive = store.select("Archive")
    assert result.uidvalidity == archive.uidvalidity
    copied = archive.message(2)
    assert copied is not None
    assert copied.flags == {"\\Seen", "Work"}
    assert copied.location.endswith(":2,Sb"), "Work has letter b in Archive (Other took a)"
    assert archive.internal_date(copied) == 1_400_000_000
    assert subjects(archive) == ["already", "one", "three"]
    assert len(inbox.sync().expunged) == 0
    assert os.stat(box.path / inbox.messages[0].location).st_nlink == 2, "a hard link, not a copy"


def test_copy_of_an_expunged_message_copies_nothing(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    deliver(box, "two")
    store.create("Archive")
    inbox = store.select("INBOX")
    os.unlink(box.path / inbox.messages[1].location)
    with pytest.raises(MessageGoneError):
        inbox.copy([1, 2], store.folder("Archive"))
    archive = store.select("Archive")
    assert archive.messages == []
    assert os.listdir(archive.path / "cur") == os.listdir(archive.path / "new") == []
    assert archive.uidnext == 1


def test_move_renames_into_the_target_and_expunges_here(box: Maildir, store: MailStore) -> None:
    for subject in ("one", "two", "three"):
        deliver(box, subject)
    store.create("Trash")
    inbox = store.select("INBOX")
    inbox.store([2], ["\\Flagged"])
    result = inbox.move([2, 3], store.folder("Trash"))
    assert (result.source_uids, result.target_uids) == ((2, 3), (1, 2))
    assert inbox.sync().expunged_sequences == (2, 2)
    trash = store.select("Trash")
    assert subjects(trash) == ["two", "three"]
    assert trash.messages[0].flags == {"\\Flagged"}
    assert subjects(inbox) == ["one"]


def test_move_is_refused_in_a_read_only_folder(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    store.create("Trash")
    with pytest.raises(ReadOnlyFolderError):
        store.select("INBOX", readonly=True).move([1], store.folder("Trash"))


# Damaged and lost uid lists


def test_a_corrupt_uid_list_is_replaced_with_a_new_uidvalidity(
    box: Maildir, store: MailStore, caplog: pytest.LogCaptureFixture
) -> None:
    deliver(box, "one")
    deliver(box, "two")
    before = store.select("INBOX")
    (box.path / "dovecot-uidlist").write_text("garbage\n")
    with caplog.at_level(logging.ERROR, logger="mailtoaster.store"):
        after = MailStore(Maildir(box.path), snapshots=None).select("INBOX")
    assert "corrupt" in caplog.text or "unsupported version" in caplog.text
    assert after.uidvalidity != before.uidvalidity
    assert [message.uid for message in after.messages] == [1, 2]
    assert (box.path / "dovecot-uidlist.corrupt").read_text() == "garbage\n"
    changes = before.sync()
    assert changes.uidvalidity_changed


def test_a_lost_uid_list_never_brings_old_uids_back(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    first = store.select("INBOX")
    (box.path / "dovecot-uidlist").unlink()
    again = MailStore(Maildir(box.path), snapshots=None).select("INBOX")
    assert again.uidvalidity != first.uidvalidity
    assert first.sync().uidvalidity_changed


# Folder operations


def test_list_shows_inbox_parents_children_and_special_use(box: Maildir, store: MailStore) -> None:
    for name in ("Junk", "Sent", "Trash", "Drafts", "Archive.2024", "Archive.2023", "a.b.c", "Entwürfe"):
        store.create(name)
    listing = {entry.name: entry for entry in store.list_folders()}
    assert store.list_folders()[0] == FolderListing("INBOX", selectable=True, has_children=False)
    assert listing["Junk"].attributes == ("\\HasNoChildren", "\\Junk")
    assert listing["Archive"].attributes == ("\\Noselect", "\\HasChildren", "\\Archive")
    assert listing["Archive.2024"].attributes == ("\\HasNoChildren",)
    assert listing["a"].attributes == ("\\Noselect", "\\HasChildren")
    assert listing["a.b"].attributes == ("\\Noselect", "\\HasChildren")
    assert listing["Entwürfe"].selectable
    assert set(listing) == {
        "INBOX",
        "Junk",
        "Sent",
        "Trash",
        "Drafts",
        "Archive",
        "Archive.2024",
        "Archive.2023",
        "a",
        "a.b",
        "a.b.c",
        "Entwürfe",
    }


def test_create_refuses_what_exists_and_what_is_not_a_name(store: MailStore) -> None:
    store.create("Work.")
    assert store.exists("Work")
    with pytest.raises(FolderExistsError):
        store.create("Work")
    with pytest.raises(FolderExistsError):
        store.create("inbox")
    with pytest.raises(FolderNameError):
        store.create("INBOX.Sub")
    with pytest.raises(FolderNameError):
        store.create("a..b")
    with pytest.raises(FolderNotFoundError):
        store.select("Nothing")


def test_delete_keeps_sub_folders_and_refuses_inbox_and_mere_parents(box: Maildir, store: MailStore) -> None:
    store.create("Work")
    store.create("Work.Old")
    deliver(box, "note", folder="Work")
    store.delete("Work")
    listing = {entry.name: entry.attributes for entry in store.list_folders()}
    assert listing["Work"] == ("\\Noselect", "\\HasChildren")
    assert listing["Work.Old"] == ("\\HasNoChildren",)
    assert not (box.path / ".Work").exists()
    assert os.listdir(box.path / "tmp") == [], "the deleted folder does not linger"
    with pytest.raises(FolderNotFoundError):
        store.delete("Work")
    with pytest.raises(MaildirError, match="INBOX"):
        store.delete("INBOX")
    store.create("Work")
    assert store.select("Work").messages == []


def test_a_folder_created_again_gets_a_new_uidvalidity(store: MailStore) -> None:
    store.create("Work")
    first = store.status("Work").uidvalidity
    store.delete("Work")
    store.create("Work")
    assert store.status("Work").uidvalidity != first


def test_rename_moves_sub_folders_and_keeps_uids(box: Maildir, store: MailStore) -> None:
    store.create("Work")
    store.create("Work.Old")
    deliver(box, "report", folder="Work")
    before = store.status("Work")
    store.rename("Work", "Jobs.Current")
    names = [entry.name for entry in store.list_folders()]
    assert "Work" not in names and "Work.Old" not in names
    assert {"Jobs", "Jobs.Current", "Jobs.Current.Old"} <= set(names)
    after = store.status("Jobs.Current")
    assert (after.uidvalidity, after.messages, after.uidnext) == (before.uidvalidity, 1, 2)
    with pytest.raises(FolderNotFoundError):
        store.rename("Work", "Elsewhere")
    with pytest.raises(FolderExistsError):
        store.rename("Jobs.Current.Old", "Jobs.Current")
    with pytest.raises(MaildirError, match="own sub-folder"):
        store.rename("Jobs", "Jobs.Current.Deeper")


def test_rename_of_a_mere_parent_moves_its_children(store: MailStore) -> None:
    store.create("x.y")
    store.rename("x", "z")
    assert [entry.name for entry in store.list_folders()][1:] == ["z", "z.y"]


def test_rename_inbox_moves_its_messages_and_leaves_it_empty(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    deliver(box, "two")
    inbox = store.select("INBOX")
    inbox.store([1], ["Work", "\\Seen"])
    store.rename("INBOX", "Old Mail")
    moved = store.select("Old Mail")
    assert subjects(moved) == ["one", "two"]
    assert moved.messages[0].flags == {"\\Seen", "Work"}
    assert inbox.sync().expunged_sequences == (1, 1)
    assert store.status("INBOX").messages == 0
    assert store.status("INBOX").uidvalidity == inbox.uidvalidity


def test_subscriptions_in_both_files(box: Maildir, store: MailStore) -> None:
    store.create("Work")
    store.create("Entwürfe")
    store.subscribe("Work")
    store.subscribe("Entwürfe")
    store.subscribe("inbox")
    assert store.subscribed() == ["Work", "Entwürfe", "INBOX"]
    with pytest.raises(FolderNotFoundError):
        store.subscribe("Nothing")
    assert store.unsubscribe("Entwürfe") is True
    assert store.unsubscribe("Entwürfe") is False
    assert (box.path / "courierimapsubscribed").read_text() == "INBOX.Work\nINBOX\n"
    assert (box.path / "subscriptions").read_text() == "V\t2\n\nWork\nINBOX\n"
    store.delete("Work")
    assert store.unsubscribe("Work") is True, "a deleted folder can still be unsubscribed"
    assert store.subscribed() == ["INBOX"]


def test_unsubscribe_finds_utf8_names_written_by_courier_5(box: Maildir, store: MailStore) -> None:
    (box.path / "courierimapsubscribed").write_text("INBOX.Entwürfe\nINBOX.Other\n")
    (box.path / "subscriptions").write_text("Entw&APw-rfe\nOther\n")  # Dovecot's version 1
    assert store.unsubscribe("Entwürfe")
    assert (box.path / "courierimapsubscribed").read_text() == "INBOX.Other\n"
    assert (box.path / "subscriptions").read_text() == "Other\n"


def test_status_counts_without_claiming_recent(box: Maildir, store: MailStore) -> None:
    deliver(box, "one")
    deliver(box, "two")
    deliver(box, "three")
    status = store.status("INBOX")
    assert (status.messages, status.recent, status.uidnext, status.unseen) == (3, 3, 4, 3)
    inbox = store.select("INBOX")
    inbox.store([1], ["\\Seen"])
    status = store.status("INBOX")
    assert (status.messages, status.recent, status.uidnext, status.unseen) == (3, 0, 4, 2)
    assert status.uidvalidity == inbox.uidvalidity
    assert inbox.first_unseen() == 2


# Concurrency


def test_two_sessions_and_delivery_in_threads_agree(box: Maildir, store: MailStore) -> None:
    store.create("Shared")
    sessions = [store.select("Shared"), store.select("Shared")]
    errors: list[BaseException] = []
    results: list[list[int]] = [[], []]

    def session_work(index: int) -> None:
        try:
            for round_number in range(25):
                session = sessions[index]
                results[index].append(
                    session.append(f"Subject: s{index}-{round_number}\r\n\r\nx\r\n".encode()).uid
                )
                session.sync()
                session.store([message.uid for message in session.messages[-3:]], [f"kw{index}", "\\Seen"])
        except BaseException as exc:
            errors.append(exc)

    def delivery_work() -> None:
        try:
            for round_number in range(25):
                deliver(box, f"smtp-{round_number}", folder="Shared")
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=session_work, args=(0,)),
        threading.Thread(target=session_work, args=(1,)),
    ]
    threads.append(threading.Thread(target=delivery_work))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    for session in sessions:
        session.sync()
    appended = results[0] + results[1]
    assert len(set(appended)) == 50
    assert all(earlier < later for earlier, later in itertools.pairwise(results[0]))
    check_consistent(store, "Shared", expected=75)
    assert [message.flags for message in sessions[0].messages] == [
        message.flags for message in sessions[1].messages
    ]


def check_consistent(store: MailStore, name: str, *, expected: int) -> None:
    fresh = [
        MailStore(Maildir(store.maildir.path), snapshots=None).select(name, readonly=True) for _ in range(2)
    ]
    uids = [message.uid for message in fresh[0].messages]
    assert len(uids) == expected, "no message lost"
    assert uids == sorted(set(uids)), "UIDs unique and ascending"
    assert [(m.uid, m.flags) for m in fresh[0].messages] == [(m.uid, m.flags) for m in fresh[1].messages]
    lines = (fresh[0].path / "dovecot-uidlist").read_text().splitlines()[1:]
    listed = [int(line.split(" ", 1)[0]) for line in lines]
    assert listed == sorted(set(listed))


def _process_session(root: str, index: int, rounds: int) -> None:
    store = MailStore(Maildir(root, hostname=f"p{index}"))
    folder = store.select("INBOX")
    for round_number in range(rounds):
        folder.append(f"Subject: p{index}-{round_number}\r\n\r\nx\r\n".encode())
        folder.sync()
        folder.store([message.uid for message in folder.messages[-2:]], [f"proc{index}"])
        if round_number % 5 == 4:
            folder.store([message.uid for message in folder.messages[:3]], ["\\Seen"])


def test_sessions_in_separate_processes_with_delivery(box: Maildir, store: MailStore) -> None:
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_process_session, args=(str(box.path), index, 20)) for index in range(3)
    ]
    for process in processes:
        process.start()
    for round_number in range(20):
        deliver(box, f"smtp-{round_number}")
    for process in processes:
        process.join(timeout=180)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    check_consistent(store, "INBOX", expected=80)
    inbox = store.select("INBOX")
    keywords = set(itertools.chain.from_iterable(message.flags for message in inbox.messages))
    assert {"proc0", "proc1", "proc2"} <= keywords
    assert sorted(inbox.keywords) == ["proc0", "proc1", "proc2"]


# Dovecot serving the same Maildir


@pytest.fixture
def dovecot_home() -> Iterator[Path]:
    require(None if DOVECOT_IMAP.exists() else "Dovecot is not installed (apt-get install dovecot-imapd)")
    base = Path(tempfile.mkdtemp(prefix="mailtoaster-dovecot-"))
    try:
        os.chmod(base, 0o755)  # Dovecot runs as an unprivileged user and must reach the Maildir
        home = base / "home"
        home.mkdir(mode=0o755)
        yield home
    finally:
        shutil.rmtree(base)


FETCH_LINE = re.compile(r"\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\)\)")


def dovecot_uids_and_flags(output: str) -> list[tuple[int, frozenset[str]]]:
    return [(int(uid), frozenset(flags.split())) for _, uid, flags in FETCH_LINE.findall(output)]


def dovecot_box(dovecot_home: Path, messages: int = 0) -> Maildir:
    """The Maildir Dovecot serves in ``dovecot_home``, with ``messages`` delivered (m0, m1, ...)."""
    box = Maildir(dovecot_home / "Maildir", hostname="mx.example.com", clock=seconds_clock())
    box.ensure()
    for index in range(messages):
        deliver(box, f"m{index}")
    return box


def test_dovecot_sees_our_uids_flags_and_keywords(dovecot_home: Path) -> None:
    box = dovecot_box(dovecot_home, 4)
    store = MailStore(box)
    inbox = store.select("INBOX")
    inbox.store([1], ["\\Seen", "$Forwarded"])
    inbox.store([3], ["\\Flagged", "Work", "$Forwarded"])
    inbox.store([4], ["\\Deleted"])
    inbox.expunge()
    appended = store.append("INBOX", MESSAGE, flags=["\\Answered", "Later"])
    ours = [(message.uid, frozenset(message.flags)) for message in store.select("INBOX").messages]
    output = run_dovecot_imap(
        dovecot_home, ["SELECT INBOX", "UID FETCH 1:* (UID FLAGS)", "STATUS INBOX (UIDVALIDITY UIDNEXT)"]
    )
    theirs = dovecot_uids_and_flags(output)
    assert [(uid, flags - {"\\Recent"}) for uid, flags in theirs] == ours
    assert ours[-1][0] == appended.uid == 5
    assert f"[UIDVALIDITY {inbox.uidvalidity}]" in output
    assert "[UIDNEXT 6]" in output


def test_we_see_dovecots_uids_flags_and_keywords(dovecot_home: Path) -> None:
    box = dovecot_box(dovecot_home, 3)
    output = run_dovecot_imap(
        dovecot_home,
        [
            "SELECT INBOX",
            "STORE 1 +FLAGS (\\Seen Important)",
            "STORE 2 +FLAGS (\\Deleted)",
            "EXPUNGE",
            "APPEND INBOX (\\Flagged $Label1) {7+}\r\nSubj: x",
        ],
    )
    output += run_dovecot_imap(dovecot_home, ["SELECT INBOX", "UID FETCH 1:* (UID FLAGS)"])
    appenduid = re.search(r"\[APPENDUID (\d+) (\d+)\]", output)
    assert appenduid is not None, output
    theirs = [(uid, flags - {"\\Recent"}) for uid, flags in dovecot_uids_and_flags(output)]
    inbox = MailStore(box).select("INBOX")
    assert inbox.uidvalidity == int(appenduid[1])
    assert [(message.uid, frozenset(message.flags)) for message in inbox.messages] == theirs
    assert theirs[-1][0] == int(appenduid[2]) == 4
    assert inbox.recent == set(), "Dovecot moved everything to cur/ already"


def test_dovecot_and_we_take_turns_without_uid_clashes(dovecot_home: Path) -> None:
    box = dovecot_box(dovecot_home)
    store = MailStore(box)
    ours = store.select("INBOX")
    deliver(box, "smtp-1")
    ours.sync()
    run_dovecot_imap(dovecot_home, ["SELECT INBOX", "APPEND INBOX {7+}\r\nSubj: d"])
    deliver(box, "smtp-2")
    first = store.append("INBOX", MESSAGE)
    run_dovecot_imap(dovecot_home, ["SELECT INBOX", "APPEND INBOX {7+}\r\nSubj: e"])
    output = run_dovecot_imap(dovecot_home, ["SELECT INBOX", "UID FETCH 1:* (UID FLAGS)"])
    changes = ours.sync()
    assert [message.uid for message in ours.messages] == [1, 2, 3, 4, 5]
    assert changes.added == (2, 3, 4, 5)
    assert first.uid in (3, 4)
    assert [uid for uid, _ in dovecot_uids_and_flags(output)] == [1, 2, 3, 4, 5]


def test_dovecot_lists_what_our_folder_operations_made(dovecot_home: Path) -> None:
    box = Maildir(dovecot_home / "Maildir", hostname="mx.example.com")
    box.ensure()
    store = MailStore(box)
    store.create("Work.Old")
    store.create("Entwürfe")
    store.create("Gone")
    store.rename("Work", "Jobs")
    store.delete("Gone")
    store.subscribe("Entwürfe")
    output = run_dovecot_imap(dovecot_home, ['LIST "" "*"', 'LSUB "" "*"'])
    assert '* LIST (\\Noselect \\HasChildren) "." Jobs' in output
    assert '* LIST (\\HasNoChildren) "." Jobs.Old' in output
    assert '* LIST (\\HasNoChildren) "." Entw&APw-rfe' in output
    assert "Gone" not in output and "Work" not in output
    assert '* LSUB () "." Entw&APw-rfe' in output


def test_an_open_session_sees_dovecots_flag_changes_and_expunges(dovecot_home: Path) -> None:
    box = dovecot_box(dovecot_home, 3)
    inbox = MailStore(box).select("INBOX")
    flags = ["SELECT INBOX", "UID STORE 3 +FLAGS (\\Answered Followup)", "UID STORE 1 +FLAGS (\\Deleted)"]
    run_dovecot_imap(dovecot_home, flags)
    run_dovecot_imap(
        dovecot_home, ["SELECT INBOX", "EXPUNGE"]
    )  # not pipelined: Dovecot runs them in parallel
    changes = inbox.sync()
    assert changes.expunged == (1,)
    assert changes.expunged_sequences == (1,)
    assert changes.flags_changed == (3,)
    assert changes.keywords_changed
    assert inbox.message(3).flags == {"\\Answered", "Followup"}  # type: ignore[union-attr]
    assert inbox.keywords == ("Followup",)
