"""The header cache SEARCH keeps per folder (imap/cache.py), the fast header field reader it and SEARCH
use (search.header_field_values), and FETCH of whole messages without parsing their MIME structure."""

from __future__ import annotations

import os
import random
import sqlite3
from datetime import date
from pathlib import Path
from typing import BinaryIO

import pytest

from mailtoaster.imap import cache
from mailtoaster.imap.cache import CACHE_NAME, decode_values, encode_values
from mailtoaster.imap.fetch import BodySection, FetchMessage, Section
from mailtoaster.imap.mailbox import SelectedMailbox
from mailtoaster.imap.search import (
    And,
    DateRelation,
    HasFlag,
    HeaderContains,
    HeaderMatch,
    Not,
    SentDate,
    _parse_header_block,
    header_field_values,
    header_fields,
)
from mailtoaster.store import Folder, MailStore, Message
from mailtoaster.store.maildir import Maildir

EDGE_HEADERS = [
    b"",
    b"\n",
    b"\r\n",
    b"\r",
    b"Subject",
    b"Subject\n : x\n\nbody",
    b" Subject: lead\nSubject: a\n\tb\n c\r\n\r\nx",
    b"Subject: a\n\r\nSubject: after the header",
    b"SUBJECT : x\nsubjectx: y\nsubject:\n",
    b"Subject: x\r\r\n",
    b"X: 1\nSubject: t",
    b"Subject:x\n\n",
    b"a\nsubject\nsubject: 2",
    b"\tSubject: q\nSubject: r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?=\nFrom: a@b\n\nSubject: body\n",
]


def slow_values(data: bytes, name: str) -> list[bytes]:
    return [line.value for line in _parse_header_block(data, 0, ())[0] if line.lower_name == name]


@pytest.mark.parametrize("data", EDGE_HEADERS)
@pytest.mark.parametrize("name", ["subject", "from", "x", "a"])
def test_fast_field_reader_reads_as_the_header_parser(data: bytes, name: str) -> None:
    assert header_field_values(data, name) == slow_values(data, name)


def test_fast_field_reader_on_random_headers() -> None:
    rnd = random.Random(6)
    for _ in range(5000):
        data = bytes(rnd.choice(b"Subject: \t\r\nab") for _ in range(rnd.randint(0, 40)))
        for name in ("subject", "a", "b"):
            assert header_field_values(data, name) == slow_values(data, name), data


def test_header_fields_of_criteria() -> None:
    key = And(
        (
            HeaderContains("Subject", "x", HeaderMatch.SUBJECT),
            Not(HeaderContains("X-Spam", "")),
            HasFlag("\\Seen"),
            SentDate(DateRelation.ON, date(2024, 1, 1)),
        )
    )
    assert header_fields(key) == {"subject", "x-spam", "date"}
    assert header_fields(HeaderContains("with space", "x")) == frozenset()


@pytest.mark.parametrize("values", [[], [b""], [b"one"], [b"a", b"b\0c"], [b"\0", b""]])
def test_values_round_trip(values: list[bytes]) -> None:
    assert decode_values(encode_values(values)) == values


def test_damaged_blob_is_not_values() -> None:
    assert decode_values(b"") is None
    assert decode_values(b"\x02\x00\x00\x00\x09ab") is None
    assert decode_values(b"\x07") is None


# -- SEARCH through the cache ------------------------------------------------------------------------


def message(number: int, subject: str) -> bytes:
    header = f"From: a{number}@example.com\nSubject: {subject}\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"
    return f"{header}\nbody {number}\n".encode()


@pytest.fixture
def store(tmp_path: Path) -> MailStore:
    maildir = Maildir(tmp_path / "Maildir", hostname="test")
    maildir.ensure()
    return MailStore(maildir, snapshots=None)


def fill(store: MailStore, subjects: list[str]) -> Folder:
    for number, subject in enumerate(subjects, 1):
        store.append("INBOX", message(number, subject))
    return store.select("INBOX")


class CountingOpens:
    """Counts the message files SEARCH opens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, folder: Folder) -> None:
        self.opened = 0
        original = folder.open_message

        def counting(target: Message) -> BinaryIO:
            self.opened += 1
            return original(target)

        monkeypatch.setattr(folder, "open_message", counting)


def test_repeated_header_search_reads_no_file(store: MailStore, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = fill(store, ["mortgage rates", "hello", "Re: MORTGAGE", "other"])
    selected = SelectedMailbox(folder)
    opens = CountingOpens(monkeypatch, folder)
    key = HeaderContains("Subject", "mortgage")
    assert selected.search(key, by_uid=False) == [1, 3]
    assert opens.opened == 4
    assert (folder.path / CACHE_NAME).exists()
    assert selected.search(key, by_uid=False) == [1, 3]
    assert selected.search(HeaderContains("SUBJECT", "hello", HeaderMatch.SUBJECT), by_uid=True) == [2]
    assert selected.search(And((HasFlag("\\Seen"), key)), by_uid=False) == []
    assert opens.opened == 4
    # another field is read from the files once
    assert selected.search(HeaderContains("From", "a2@", HeaderMatch.ADDRESS), by_uid=False) == [2]
    assert opens.opened == 8
    assert selected.search(HeaderContains("From", "a4@", HeaderMatch.ADDRESS), by_uid=False) == [4]
    assert opens.opened == 8


def test_cache_survives_flag_changes_and_expunge(store: MailStore) -> None:
    folder = fill(store, ["mortgage one", "two", "mortgage three"])
    selected = SelectedMailbox(folder)
    key = HeaderContains("Subject", "mortgage")
    assert selected.search(key, by_uid=True) == [1, 3]
    folder.store([1, 3], ["\\Seen", "$Junk"], "add")  # renames the files
    folder.store([1], ["\\Deleted"], "add")
    folder.expunge()
    folder.sync()
    assert selected.search(key, by_uid=True) == [3]
    store.append("INBOX", message(9, "new mortgage"))
    folder.sync()
    assert selected.search(key, by_uid=True) == [3, 4]
    assert selected.search(Not(key), by_uid=True) == [2]


def test_new_session_uses_the_file(store: MailStore, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(store, ["a mortgage", "b"])
    assert SelectedMailbox(store.select("INBOX")).search(
        HeaderContains("Subject", "mortgage"), by_uid=True
    ) == [1]
    folder = store.select("INBOX", readonly=True)
    opens = CountingOpens(monkeypatch, folder)
    assert SelectedMailbox(folder).search(HeaderContains("Subject", "mortgage"), by_uid=True) == [1]
    assert opens.opened == 0


def test_damaged_cache_file_is_replaced(store: MailStore) -> None:
    folder = fill(store, ["a mortgage", "b"])
    (folder.path / CACHE_NAME).write_bytes(b"this is not a database" * 100)
    selected = SelectedMailbox(folder)
    assert selected.search(HeaderContains("Subject", "mortgage"), by_uid=True) == [1]
    assert selected.search(HeaderContains("Subject", "mortgage"), by_uid=True) == [1]
    with sqlite3.connect(folder.path / CACHE_NAME) as db:
        assert db.execute("SELECT count(*) FROM header_fields").fetchone() == (2,)


def test_unwritable_folder_searches_without_cache(store: MailStore, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = fill(store, ["a mortgage", "b"])
    monkeypatch.setattr(cache, "CACHE_NAME", os.path.join("missing-directory", "x.cache"))
    assert SelectedMailbox(folder).search(HeaderContains("Subject", "mortgage"), by_uid=True) == [1]


def test_stale_entries_are_pruned(store: MailStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "PRUNE_SLACK", 1)
    folder = fill(store, ["x1", "x2", "x3", "x4"])
    selected = SelectedMailbox(folder)
    assert selected.search(HeaderContains("Subject", "x"), by_uid=True) == [1, 2, 3, 4]
    folder.store([1, 2, 3], ["\\Deleted"], "add")
    folder.expunge()
    folder.sync()
    assert selected.search(HeaderContains("Subject", "x"), by_uid=True) == [4]
    with sqlite3.connect(folder.path / CACHE_NAME) as db:
        assert db.execute("SELECT count(*) FROM header_fields").fetchone() == (1,)


def test_large_values_are_not_cached(store: MailStore) -> None:
    folder = fill(store, ["x" * (cache.MAX_ENTRY_BYTES + 10), "small"])
    selected = SelectedMailbox(folder)
    assert selected.search(HeaderContains("Subject", "xxx"), by_uid=True) == [1]
    assert selected.search(HeaderContains("Subject", "xxx"), by_uid=True) == [1]
    with sqlite3.connect(folder.path / CACHE_NAME) as db:
        assert db.execute("SELECT count(*) FROM header_fields").fetchone() == (1,)


# -- FETCH of whole messages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"Subject: x\n\nbody\n", b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nA\r\n--b--\nend"],
)
def test_whole_message_without_parsing(data: bytes) -> None:
    fast = FetchMessage(data)
    whole = fast.render(BodySection(Section(), (3, 7)))
    full = fast.render(BodySection())
    assert fast._root is None
    parsed = FetchMessage(data)
    parsed._pieces(Section(kind="TEXT"))  # parses
    assert parsed.render(BodySection()) == full
    assert parsed.render(BodySection(Section(), (3, 7))) == whole
    assert fast.render("RFC822") == parsed.render("RFC822")
