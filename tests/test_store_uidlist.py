"""Dovecot's control files as mailtoaster reads and writes them: dovecot-uidlist (format, incremental reading,
corruption), the dotlock, dovecot-keywords and the dovecot-uidvalidity counter."""

from __future__ import annotations

import multiprocessing
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mailtoaster.store.errors import MaildirError
from mailtoaster.store.uidlist import (
    MAX_KEYWORDS,
    UIDLIST_FILE,
    UIDVALIDITY_FILE,
    DotLock,
    Keywords,
    LockTimeoutError,
    UidList,
    UidListCorruptError,
    format_record,
    lock_is_stale,
    next_uidvalidity,
)

# Written by Dovecot 2.3.19 (SELECT, then FETCH RFC822.SIZE): the header's N is stale after appends.
DOVECOT_UIDLIST = (
    "3 V1796044919 N1 G00f3af2577780d6b1d07000083ecc375\n"
    "1 W21 :1700000001.M1P1Q1.host,S=18\n"
    "2 W21 :1700000002.M1P1Q2.host,S=18\n"
    "3 :1700000003.M1P1Q3.host,S=18\n"
)


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def reread(directory: Path) -> UidList:
    uidlist = UidList(directory)
    uidlist.refresh()
    return uidlist


# dovecot-uidlist: reading


def test_reads_the_file_dovecot_wrote(tmp_path: Path) -> None:
    write(tmp_path / UIDLIST_FILE, DOVECOT_UIDLIST)
    uidlist = UidList(tmp_path)
    assert uidlist.refresh() is True
    assert uidlist.uidvalidity == 1796044919
    assert uidlist.guid == "00f3af2577780d6b1d07000083ecc375"
    assert uidlist.uids == {
        "1700000001.M1P1Q1.host,S=18": 1,
        "1700000002.M1P1Q2.host,S=18": 2,
        "1700000003.M1P1Q3.host,S=18": 3,
    }
    assert uidlist.next_uid == 4, "a stale N in the header does not lower the next UID"
    assert uidlist.extension(1, "W") == "21"
    assert uidlist.extension(3, "W") is None
    assert uidlist.current


def test_header_next_uid_above_the_last_record_is_kept(tmp_path: Path) -> None:
    write(tmp_path / UIDLIST_FILE, "3 V7 N40 G00f3af2577780d6b1d07000083ecc375\n12 :a\n")
    assert reread(tmp_path).next_uid == 40


def test_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    write(tmp_path / UIDLIST_FILE, DOVECOT_UIDLIST)
    uidlist = reread(tmp_path)
    assert uidlist.refresh() is False


def test_appended_lines_are_read_without_reading_the_rest(tmp_path: Path) -> None:
    path = tmp_path / UIDLIST_FILE
    write(path, DOVECOT_UIDLIST)
    uidlist = reread(tmp_path)
    # Damage the header in place (same length, same inode): only a full re-read would notice.
    with path.open("r+b") as stream:
        stream.write(b"9")
    with path.open("ab") as stream:
        stream.write(b"7 W30 :1700000009.M1P1Q9.host\n")
    assert uidlist.refresh() is True
    assert uidlist.uids["1700000009.M1P1Q9.host"] == 7
    assert uidlist.extension(7, "W") == "30"
    assert uidlist.next_uid == 8
    assert uidlist.uidvalidity == 1796044919


def test_a_partial_last_line_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / UIDLIST_FILE
    write(path, DOVECOT_UIDLIST)
    uidlist = reread(tmp_path)
    with path.open("ab") as stream:
        stream.write(b"4 :1700000004.M1P1")
    uidlist.refresh()
    assert "1700000004.M1P1" not in uidlist.uids
    assert uidlist.next_uid == 4
    with path.open("ab") as stream:
        stream.write(b"Q4.host\n")
    uidlist.refresh()
    assert uidlist.uids["1700000004.M1P1Q4.host"] == 4


def test_a_replaced_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / UIDLIST_FILE
    write(path, DOVECOT_UIDLIST)
    uidlist = reread(tmp_path)
    replacement = tmp_path / "new-list"
    write(replacement, "3 V55 N9 G11111111111111111111111111111111\n8 :only\n")
    os.replace(replacement, path)
    assert uidlist.refresh() is True
    assert uidlist.uidvalidity == 55
    assert uidlist.uids == {"only": 8}
    assert uidlist.next_uid == 9


def test_a_removed_file_empties_the_view(tmp_path: Path) -> None:
    write(tmp_path / UIDLIST_FILE, DOVECOT_UIDLIST)
    uidlist = reread(tmp_path)
    (tmp_path / UIDLIST_FILE).unlink()
    assert uidlist.refresh() is True
    assert (uidlist.exists, uidlist.uids, uidlist.uidvalidity, uidlist.next_uid) == (False, {}, 0, 1)


def test_a_file_listed_again_under_a_newer_uid_takes_the_newer(tmp_path: Path) -> None:
    write(tmp_path / UIDLIST_FILE, "3 V7 N1 G00f3af2577780d6b1d07000083ecc375\n1 W5 :a\n2 :b\n3 :a\n")
    uidlist = reread(tmp_path)
    assert uidlist.uids == {"b": 2, "a": 3}
    assert uidlist.extension(1, "W") is None


def test_extension_fields_without_a_capital_key_are_dropped(tmp_path: Path) -> None:
    write(tmp_path / UIDLIST_FILE, "3 V7 N1 G00f3af2577780d6b1d07000083ecc375\n1 W5 x9  S4 :a\n")
    assert reread(tmp_path).extensions == {1: "W5 S4"}


def test_version_1_is_read(tmp_path: Path) -> None:
    write(tmp_path / UIDLIST_FILE, "1 1234 6\n3 1700000001.M1P1.host:2,S\n5 1700000002.M1P1.host\n")
    uidlist = reread(tmp_path)
    assert (uidlist.version, uidlist.uidvalidity, uidlist.next_uid) == (1, 1234, 6)
    assert uidlist.uids == {"1700000001.M1P1.host": 3, "1700000002.M1P1.host": 5}
    assert not uidlist.current


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("3 V7 N1 G00f3af2577780d6b1d07000083ecc375", "complete header"),
        ("4 V7 N1\n", "unsupported version"),
        ("3 N1 G00f3af2577780d6b1d07000083ecc375\n", "broken header"),
        ("3 V7 N1 Gxyz\n", "GUID"),
        ("3 Vx N1\n", "invalid header field"),
        ("3 V7 N1\n2 :a\n1 :b\n", "out of order"),
        ("3 V7 N1\n0 :a\n", "out of order"),
        ("3 V7 N1\n4294967295 :a\n", "out of range"),
        ("3 V7 N1\n1 a\n", "no ' :'"),
        ("3 V7 N1\nx :a\n", "invalid UID"),
        ("3 V7 N1\n1 :\n", "invalid file name"),
        ("3 V7 N1\n1 :../a\n", "invalid file name"),
        ("1 7\n", "version 1"),
    ],
)
def test_corrupt_files_raise_and_forget_everything(tmp_path: Path, text: str, problem: str) -> None:
    write(tmp_path / UIDLIST_FILE, DOVECOT_UIDLIST)
    uidlist = reread(tmp_path)
    replacement = tmp_path / "broken"
    write(replacement, text)
    os.replace(replacement, tmp_path / UIDLIST_FILE)
    with pytest.raises(UidListCorruptError, match=problem):
        uidlist.refresh()
    assert (uidlist.uids, uidlist.uidvalidity, uidlist.exists) == ({}, 0, False)


# dovecot-uidlist: writing


def test_create_then_append_writes_dovecots_format(tmp_path: Path) -> None:
    uidlist = UidList(tmp_path)
    uidlist.create(1796044919)
    uidlist.append([(1, "W21", "1700000001.M1P1Q1.host,S=18"), (2, "", "1700000002.M1P1Q2.host,S=18")])
    text = (tmp_path / UIDLIST_FILE).read_text()
    assert text == (
        f"3 V1796044919 N1 G{uidlist.guid}\n"
        "1 W21 :1700000001.M1P1Q1.host,S=18\n"
        "2 :1700000002.M1P1Q2.host,S=18\n"
    )
    assert len(uidlist.guid) == 32
    assert stat.S_IMODE((tmp_path / UIDLIST_FILE).stat().st_mode) == 0o600
    assert uidlist.refresh() is False, "our own append is already in the view"
    assert reread(tmp_path).uids == uidlist.uids


def test_rewrite_keeps_extensions_and_header_extras_and_drops_what_is_not_kept(tmp_path: Path) -> None:
    write(
        tmp_path / UIDLIST_FILE, "3 V7 N9 G00f3af2577780d6b1d07000083ecc375 Xfuture\n1 W5 P9 :a\n2 :b\n3 :c\n"
    )
    uidlist = reread(tmp_path)
    uidlist.set_extension(2, "W", "44")
    uidlist.set_extension(1, "W", "6")
    uidlist.rewrite(keep={"a", "b"})
    assert (tmp_path / UIDLIST_FILE).read_text() == (
        "3 V7 N9 G00f3af2577780d6b1d07000083ecc375 Xfuture\n1 P9 W6 :a\n2 W44 :b\n"
    )
    assert not (tmp_path / "dovecot-uidlist.tmp").exists()


def test_append_with_compaction_rewrites(tmp_path: Path) -> None:
    write(tmp_path / UIDLIST_FILE, "3 V7 N1 G00f3af2577780d6b1d07000083ecc375\n1 :a\n2 :b\n")
    uidlist = reread(tmp_path)
    inode = (tmp_path / UIDLIST_FILE).stat().st_ino
    uidlist.append([(3, "W1", "c")], compact_to={"b"})
    assert (
        tmp_path / UIDLIST_FILE
    ).read_text() == "3 V7 N4 G00f3af2577780d6b1d07000083ecc375\n2 :b\n3 W1 :c\n"
    assert (tmp_path / UIDLIST_FILE).stat().st_ino != inode


def test_append_to_an_old_version_file_rewrites_it_as_version_3(tmp_path: Path) -> None:
    write(tmp_path / UIDLIST_FILE, "1 1234 6\n3 a\n")
    uidlist = reread(tmp_path)
    uidlist.append([(6, "", "b")])
    lines = (tmp_path / UIDLIST_FILE).read_text().splitlines()
    assert lines[0].startswith("3 V1234 N7 G")
    assert lines[1:] == ["3 :a", "6 :b"]


def test_append_never_reuses_a_uid(tmp_path: Path) -> None:
    write(tmp_path / UIDLIST_FILE, DOVECOT_UIDLIST)
    uidlist = reread(tmp_path)
    with pytest.raises(MaildirError, match="below the next UID"):
        uidlist.append([(3, "", "x")])


def test_format_record() -> None:
    assert format_record(5, "", "a,S=3") == "5 :a,S=3\n"
    assert format_record(5, "W9 S3", "a") == "5 W9 S3 :a\n"


# The dotlock


def test_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    target = tmp_path / UIDLIST_FILE
    with DotLock(target) as lock:
        assert lock.lock_path.read_text() == f"{os.getpid()}:{socket.gethostname()}"
        with pytest.raises(LockTimeoutError):
            DotLock(target, timeout=0.05).acquire()
    assert not lock.lock_path.exists()
    with DotLock(target, timeout=0.05):
        pass


def test_lock_waits_for_a_live_holder(tmp_path: Path) -> None:
    target = tmp_path / UIDLIST_FILE
    first = DotLock(target)
    first.acquire()
    timer = threading.Timer(0.2, first.release)
    timer.start()
    started = time.monotonic()
    with DotLock(target, timeout=5):
        waited = time.monotonic() - started
    timer.join()
    assert 0.1 < waited < 4


def dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(child.stdout)


def test_lock_of_a_dead_process_is_stale_after_two_seconds(tmp_path: Path) -> None:
    lock_path = tmp_path / "dovecot-uidlist.lock"
    lock_path.write_text(f"{dead_pid()}:{socket.gethostname()}")
    now = time.time()
    assert not lock_is_stale(lock_path, now, 120), "a young lock is trusted, as in Dovecot"
    assert lock_is_stale(lock_path, now - 3, 120)
    os.utime(lock_path, (now - 3, now - 3))
    started = time.monotonic()
    with DotLock(tmp_path / UIDLIST_FILE, timeout=5) as lock:
        assert lock.lock_path.read_text().startswith(f"{os.getpid()}:")
    assert time.monotonic() - started < 2


def test_lock_of_a_live_or_foreign_process_is_stale_only_when_old(tmp_path: Path) -> None:
    lock_path = tmp_path / "dovecot-uidlist.lock"
    lock_path.write_text(f"{os.getpid()}:{socket.gethostname()}")
    assert not lock_is_stale(lock_path, time.time() - 100, 120)
    assert lock_is_stale(lock_path, time.time() - 121, 120)
    lock_path.write_text(f"{dead_pid()}:another-host")
    assert not lock_is_stale(lock_path, time.time() - 100, 120)
    os.utime(lock_path, (time.time() - 200, time.time() - 200))
    with DotLock(tmp_path / UIDLIST_FILE, timeout=5):
        pass


def test_release_leaves_a_lock_that_was_overridden(tmp_path: Path) -> None:
    target = tmp_path / UIDLIST_FILE
    first = DotLock(target)
    first.acquire()
    first.lock_path.unlink()  # as if judged stale and taken over
    second = DotLock(target, timeout=0.1)
    second.acquire()
    first.release()
    assert second.lock_path.exists()
    second.release()
    assert not second.lock_path.exists()


def test_replace_turns_the_lock_into_the_file(tmp_path: Path) -> None:
    target = tmp_path / "dovecot-keywords"
    lock = DotLock(target)
    lock.acquire()
    lock.replace(b"0 foo\n", mtime_ns=2_000_000_000_000_000_000)
    assert target.read_bytes() == b"0 foo\n"
    assert target.stat().st_mtime_ns == 2_000_000_000_000_000_000
    assert not lock.lock_path.exists()


# dovecot-keywords


def test_keywords_read_dovecots_file_and_match_without_case(tmp_path: Path) -> None:
    write(tmp_path / "dovecot-keywords", "0 $Forwarded\n1 Work\n3 later\njunk line\n30 toolarge\n")
    keywords = Keywords(tmp_path)
    assert keywords.refresh() is True
    assert keywords.defined == ("$Forwarded", "Work", "later")
    assert keywords.letter("work") == "b"
    assert keywords.letter("$forwarded") == "a"
    assert keywords.letter("nothing") is None
    assert keywords.name("d") == "later"
    assert keywords.name("c") == "unknown-2", "Dovecot's name for a letter whose name was lost"
    assert keywords.letter("unknown-2") == "c"
    assert keywords.refresh() is False


def test_keywords_add_takes_free_letters_and_writes_the_file(tmp_path: Path) -> None:
    write(tmp_path / "dovecot-keywords", "1 Work\n")
    keywords = Keywords(tmp_path)
    keywords.refresh()
    before = (tmp_path / "dovecot-keywords").stat().st_mtime
    assert keywords.add(["WORK", "Later", "$Label1"]) == []
    assert (tmp_path / "dovecot-keywords").read_text() == "0 Later\n1 Work\n2 $Label1\n"
    assert int((tmp_path / "dovecot-keywords").stat().st_mtime) > int(before), "Dovecot notices by the second"
    assert keywords.refresh() is False
    other = Keywords(tmp_path)
    other.refresh()
    assert other.letter("$label1") == "c"
    assert not (tmp_path / "dovecot-keywords.lock").exists()


def test_keywords_run_out_after_26(tmp_path: Path) -> None:
    keywords = Keywords(tmp_path)
    keywords.refresh()
    assert keywords.add([f"k{index}" for index in range(MAX_KEYWORDS + 2)]) == ["k26", "k27"]
    assert keywords.full
    assert keywords.letter("k25") == "z"


# dovecot-uidvalidity


def test_uidvalidity_counter_starts_at_the_time_and_counts_up(tmp_path: Path) -> None:
    later = int(time.time()) + 1000
    first = next_uidvalidity(tmp_path, clock=lambda: later + 0.25)
    assert first == later
    assert (tmp_path / UIDVALIDITY_FILE).read_text() == f"{first:08x}"
    assert (tmp_path / f"{UIDVALIDITY_FILE}.{first:08x}").exists()
    assert next_uidvalidity(tmp_path) == first + 1
    assert next_uidvalidity(tmp_path) == first + 2
    assert (tmp_path / UIDVALIDITY_FILE).read_text() == f"{first + 2:08x}"
    assert sorted(os.listdir(tmp_path)) == [UIDVALIDITY_FILE, f"{UIDVALIDITY_FILE}.{first + 2:08x}"]


def test_uidvalidity_counter_recovers_from_a_broken_file(tmp_path: Path) -> None:
    first = next_uidvalidity(tmp_path, clock=lambda: 1_600_000_000)
    write(tmp_path / UIDVALIDITY_FILE, "zz")
    assert next_uidvalidity(tmp_path) == first + 1, "the marker file still knows the last value"
    (tmp_path / UIDVALIDITY_FILE).unlink()
    assert next_uidvalidity(tmp_path) == first + 2


def _take_uidvalidities(root: str, count: int, results: multiprocessing.Queue[list[int]]) -> None:
    results.put([next_uidvalidity(Path(root)) for _ in range(count)])


def test_uidvalidity_is_never_handed_out_twice_across_processes(tmp_path: Path) -> None:
    next_uidvalidity(tmp_path)
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[list[int]] = context.Queue()
    workers = [
        context.Process(target=_take_uidvalidities, args=(str(tmp_path), 30, results)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    values = [value for _ in workers for value in results.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=60)
    assert len(values) == 120
    assert len(set(values)) == 120


def test_a_large_list_is_parsed_in_blocks_like_line_by_line(tmp_path: Path) -> None:
    records = "".join(
        f"{uid} W{uid * 7} S{uid}X :{uid}.M{uid}P1.host,S={uid}\n" if uid % 3 else f"{uid} :{uid}.name\n"
        for uid in range(1, 20_001)
    )
    (tmp_path / UIDLIST_FILE).write_text(f"3 V7 N1 G{'a' * 32}\n" + records)
    fast = UidList(tmp_path)
    fast.refresh()
    assert len(fast.uids) == 20_000 and fast.last_uid == 20_000 and fast.next_uid == 20_001
    assert fast.uids["20000.M20000P1.host,S=20000"] == 20_000
    assert fast.extension(19_999, "W") == str(19_999 * 7) and fast.extension(19_999, "S") == "19999X"
    assert fast.extension(3, "W") is None
    # One unusual line (a lower-case key, dropped as Dovecot does) sends the whole file line by line.
    (tmp_path / UIDLIST_FILE).write_text(f"3 V7 N1 G{'a' * 32}\n" + records + "20001 W5 x1 :last\n")
    slow = UidList(tmp_path)
    slow.refresh()
    assert slow.extensions.pop(20_001) == "W5" and slow.uids.pop("last") == 20_001
    assert (slow.uids, slow.extensions) == (fast.uids, fast.extensions)


def test_copies_share_their_records_until_one_changes(tmp_path: Path) -> None:
    (tmp_path / UIDLIST_FILE).write_text(f"3 V7 N1 G{'a' * 32}\n1 W10 :one\n")
    original = UidList(tmp_path)
    original.refresh()
    twin = original.copy()
    assert twin.uids is original.uids
    twin.set_extension(1, "W", "11")
    assert original.extension(1, "W") == "10" and twin.extension(1, "W") == "11"
    with open(tmp_path / UIDLIST_FILE, "a") as stream:
        stream.write("2 :two\n")
    original.refresh()
    assert "two" in original.uids and "two" not in twin.uids
