"""FETCH of only UID, FLAGS and RFC822.SIZE takes a fast path: its bytes must be the general path's."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailtoaster.imap import mailbox as mailbox_module
from mailtoaster.imap import parser
from mailtoaster.imap.mailbox import FetchOutcome, SelectedMailbox, fetch_items, take_batch
from mailtoaster.imap.reader import RawCommand
from mailtoaster.store import Maildir, MailStore

FLAG_MIX = [
    (),
    ("\\Seen",),
    ("\\Seen", "\\Answered"),
    ("\\Flagged", "$Junk"),
    ("\\Deleted", "\\Draft", "Work", "$NotJunk"),
    ("\\Seen", "Work"),
]


def fetch_bytes(selected: SelectedMailbox, line: bytes) -> tuple[bytes, int]:
    command = parser.parse_command(RawCommand((line,)))
    assert isinstance(command, parser.Fetch)
    outcome = FetchOutcome()
    targets = selected.targets(command.uid, command.sequence_set)
    chunks = selected.fetch(targets, fetch_items(command.items, command.uid), outcome=outcome)
    out = []
    while batch := take_batch(chunks):
        out.append(batch)
    return b"".join(out), outcome.missing


@pytest.fixture
def selected(tmp_path: Path) -> SelectedMailbox:
    store = MailStore(Maildir(tmp_path / "Maildir", hostname="test"), snapshots=None)
    store.maildir.ensure()
    for index in range(60):
        body = b"Subject: %d\n\n" % index + b"line\n" * index
        store.append("INBOX", body, flags=FLAG_MIX[index % len(FLAG_MIX)])
    store.append("INBOX", b"Subject: recent\n\nnew\n")  # new/: \Recent for the first session
    store.append("INBOX", b"Subject: recent seen\n\nnew\n", flags=["\\Seen"])
    return SelectedMailbox(store.select("INBOX"))


COMMANDS = [
    b"f UID FETCH 1:* (FLAGS RFC822.SIZE)",
    b"f UID FETCH 1:* (RFC822.SIZE FLAGS)",
    b"f UID FETCH 5,7,1000:2000,40:* FLAGS",
    b"f UID FETCH 3:9,500 (UID RFC822.SIZE)",
    b"f UID FETCH 999 (FLAGS RFC822.SIZE)",
    b"f FETCH 1:* (FLAGS)",
    b"f FETCH 2,4:7,50:* (UID FLAGS RFC822.SIZE)",
    b"f FETCH * (RFC822.SIZE UID)",
    b"f FETCH 1:10 UID",
    b"f FETCH 1:* FAST",
]


@pytest.mark.parametrize("line", COMMANDS)
def test_fast_path_matches_the_general_path(
    selected: SelectedMailbox, line: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert selected.folder.recent
    fast = fetch_bytes(selected, line)
    monkeypatch.setattr(mailbox_module, "_CHEAP_ITEMS", {})
    general = fetch_bytes(selected, line)
    assert fast == general
    assert fast[0] or b"999" in line


def test_fast_path_batches_large_answers(selected: SelectedMailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailbox_module, "BATCH_BYTES", 200)
    command = parser.parse_command(RawCommand((b"f FETCH 1:* (UID FLAGS)",)))
    assert isinstance(command, parser.Fetch)
    targets = selected.targets(command.uid, command.sequence_set)
    chunks = list(selected.fetch(targets, fetch_items(command.items, command.uid), outcome=FetchOutcome()))
    assert len(chunks) > 1
    assert all(chunk.endswith(b"\r\n") for chunk in chunks)
    assert b"".join(chunks).count(b"\r\n") == len(selected.folder.messages)


def test_fast_path_counts_messages_gone_before_their_size_is_known(selected: SelectedMailbox) -> None:
    folder = selected.folder
    victim = folder.messages[3]
    victim.vsize = None
    (folder.path / victim.location).unlink()
    victim_basename = victim.basename
    assert all(message.basename != victim_basename or message is victim for message in folder.messages)
    answer, missing = fetch_bytes(selected, b"f FETCH 1:6 (FLAGS RFC822.SIZE)")
    if missing:
        assert answer.count(b"\r\n") == 5
        assert b"* 4 FETCH" not in answer
