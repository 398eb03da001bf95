"""Spam learning from IMAP: moves into and out of Junk, COPY + STORE \\Deleted + EXPUNGE, APPEND into
Junk, ``$Junk``/``$NotJunk``; Trash learns nothing; the learning is per user, off the request path,
logged, and survives a disabled filter."""

from __future__ import annotations

import imaplib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtoaster.imap.learning import (
    JunkLearner,
    LearningEvent,
    is_junk,
    is_trash,
    label_for_keywords,
    label_for_transfer,
)
from mailtoaster.spam.filter import message_digest
from mailtoaster.spam.store import Label
from mailtoaster.store import Maildir
from tests.imapserver import ALICE, BOB, RunningImap, message, ok, running_imap


@pytest.fixture
def imap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[RunningImap]:
    caplog.set_level(logging.INFO)
    with running_imap(tmp_path / "imap") as running:
        yield running


def learned(imap: RunningImap, data: bytes, user: str | None = ALICE) -> Label | None:
    imap.wait_learned()
    assert imap.spam_filter is not None
    return imap.spam_filter.store.learned_as(message_digest(data), user)


def totals(imap: RunningImap, user: str | None = ALICE) -> tuple[int, int]:
    imap.wait_learned()
    assert imap.spam_filter is not None
    counts = imap.spam_filter.store.totals(user)
    return counts.spam, counts.ham


def inbox_with(imap: RunningImap, data: bytes, *folders: str) -> imaplib.IMAP4:
    client = imap.client()
    for folder in folders:
        ok(client.create(folder))
    ok(client.append("INBOX", "", None, data))
    ok(client.select("INBOX"))
    return client


def test_the_rules() -> None:
    assert is_junk("Junk") and is_junk("Junk.Phishing") and not is_junk("Junkyard") and not is_junk("INBOX")
    assert is_trash("Trash") and is_trash("Trash.Old") and not is_trash("Junk")
    assert label_for_transfer("INBOX", "Junk") == "spam"
    assert label_for_transfer(None, "Junk.Phishing") == "spam"
    assert label_for_transfer("Junk", "INBOX") == "ham"
    assert label_for_transfer("Junk.Phishing", "Archive.2024") == "ham"
    assert label_for_transfer("Junk", "Trash") is None
    assert label_for_transfer("Junk", "Junk.Sub") is None
    assert label_for_transfer("INBOX", "Archive") is None
    assert label_for_transfer(None, "INBOX") is None
    assert label_for_keywords(["$Junk"]) == "spam" and label_for_keywords(["junk"]) == "spam"
    assert label_for_keywords(["$NotJunk"]) == "ham" and label_for_keywords(["NonJunk"]) == "ham"
    assert label_for_keywords(["\\Seen", "$Work"]) is None


def test_move_into_junk_learns_spam(imap: RunningImap, caplog: pytest.LogCaptureFixture) -> None:
    data = message("Cheap watches", "Buy cheap watches now")
    client = inbox_with(imap, data, "Junk")
    ok(client._simple_command("MOVE", "1", "Junk"))
    assert learned(imap, data) == "spam"
    assert learned(imap, data, None) == "spam"  # the global scope learns from every user
    assert learned(imap, data, BOB) is None
    assert totals(imap) == (1, 0)
    assert (
        "learn user=alice@example.org action=move from=INBOX to=Junk uid=1 label=spam outcome=learned"
        in caplog.text
    )
    client.logout()


def test_copy_then_delete_into_junk_learns_spam_once(imap: RunningImap) -> None:
    data = message("Lottery", "You have won the lottery")
    client = inbox_with(imap, data, "Junk")
    ok(client.copy("1", "Junk"))
    ok(client.store("1", "+FLAGS", "(\\Deleted)"))
    ok(client.expunge())
    assert learned(imap, data) == "spam"
    assert totals(imap) == (1, 0)
    client.logout()


def test_junk_keyword_learns_spam_and_not_junk_learns_ham(imap: RunningImap) -> None:
    spam, ham = message("Pills", "Cheap pills"), message("Minutes", "Minutes of the meeting")
    client = imap.client()
    ok(client.append("INBOX", "", None, spam))
    ok(client.append("INBOX", "", None, ham))
    ok(client.select("INBOX"))
    ok(client.store("1", "+FLAGS", "($Junk)"))
    ok(client.store("2", "+FLAGS", "($NotJunk)"))
    assert learned(imap, spam) == "spam" and learned(imap, ham) == "ham"
    ok(client.store("1", "+FLAGS", "($Junk)"))  # already set: nothing new, nothing learned again
    assert totals(imap) == (1, 1)
    client.logout()


def test_moving_out_of_junk_learns_ham_in_place_of_spam(
    imap: RunningImap, caplog: pytest.LogCaptureFixture
) -> None:
    data = message("Newsletter", "The monthly newsletter you asked for")
    client = inbox_with(imap, data, "Junk")
    ok(client._simple_command("MOVE", "1", "Junk"))
    assert learned(imap, data) == "spam"
    ok(client.select("Junk"))
    ok(client._simple_command("MOVE", "1", "INBOX"))
    assert learned(imap, data) == "ham"
    assert totals(imap) == (0, 1)  # moved over, not counted twice
    assert "action=move from=Junk to=INBOX uid=2 label=ham outcome=moved" in caplog.text
    client.logout()


def test_copy_out_of_junk_counts_as_ham(imap: RunningImap) -> None:
    data = message("Invoice", "Your invoice is attached")
    client = imap.client()
    ok(client.create("Junk"))
    ok(client.append("Junk", "", None, data))
    assert learned(imap, data) == "spam"  # APPEND into Junk
    ok(client.select("Junk"))
    ok(client.copy("1", "INBOX"))
    ok(client.store("1", "+FLAGS", "(\\Deleted)"))
    ok(client.expunge())
    assert learned(imap, data) == "ham"
    client.logout()


def test_moving_to_trash_learns_nothing(imap: RunningImap) -> None:
    data = message("Old", "An old message")
    client = inbox_with(imap, data, "Junk", "Trash")
    ok(client._simple_command("MOVE", "1", "Trash"))
    assert learned(imap, data) is None
    ok(client.append("Junk", "", None, data))
    assert learned(imap, data) == "spam"
    ok(client.select("Junk"))
    ok(client._simple_command("MOVE", "1", "Trash"))  # out of Junk, but into Trash: still spam
    assert learned(imap, data) == "spam"
    assert totals(imap) == (1, 0)
    client.logout()


def test_a_folder_below_junk_is_junk(imap: RunningImap) -> None:
    data = message("Phish", "Confirm your bank password")
    client = inbox_with(imap, data, "Junk", "Junk.Phishing")
    ok(client.uid("MOVE", "1", "Junk.Phishing"))
    assert learned(imap, data) == "spam"
    client.logout()


def test_learning_is_per_user(imap: RunningImap) -> None:
    data = message("Shared", "Sent to both")
    for user in (ALICE, BOB):
        client = inbox_with(imap, data, "Junk") if user == ALICE else imap.client(BOB)
        if user == BOB:
            ok(client.create("Junk"))
            ok(client.append("INBOX", "", None, data))
            ok(client.select("INBOX"))
            ok(client.copy("1", "Junk"))
        else:
            ok(client.copy("1", "Junk"))
            assert learned(imap, data, BOB) is None
        client.logout()
    assert learned(imap, data, ALICE) == "spam" and learned(imap, data, BOB) == "spam"


def test_without_a_spam_filter_commands_still_work(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with running_imap(tmp_path, spam=False) as imap:
        client = inbox_with(imap, message("Whatever"), "Junk")
        ok(client._simple_command("MOVE", "1", "Junk"))
        imap.wait_learned()
        assert "label=spam outcome=not-learned (spam filter disabled)" in caplog.text
        client.logout()


def test_large_messages_are_not_learned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with running_imap(tmp_path) as imap:
        imap.server.learner._max_size = 1000
        big = message("Big", "x" * 2000)
        client = inbox_with(imap, big, "Junk")
        ok(client.copy("1", "Junk"))
        assert learned(imap, big) is None
        assert "outcome=not-learned (larger than [spam] max_size 1000)" in caplog.text
        client.logout()


def test_a_full_queue_drops_events_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    learner = JunkLearner(None, max_size=1000, queue_size=1)
    event = LearningEvent(ALICE, Maildir(tmp_path / "Maildir"), "Junk", (1,), "spam", "move", "INBOX")
    learner.submit(event)
    assert "learning stopped, not queued" in caplog.text  # not started yet
    learner._thread = object()  # type: ignore[assignment]  # pretend it runs, but never takes anything
    learner.submit(event)
    learner.submit(event)
    assert "learning queue full (1 events), dropped" in caplog.text


def test_a_broken_store_is_logged_and_the_command_succeeds(
    imap: RunningImap, caplog: pytest.LogCaptureFixture
) -> None:
    from mailtoaster.spam import TokenStoreUnavailable

    assert imap.spam_filter is not None

    def unavailable(*args: object, **kwargs: object) -> object:
        raise TokenStoreUnavailable("database is locked")

    imap.spam_filter.learn = unavailable  # type: ignore[method-assign, assignment]
    client = inbox_with(imap, message("Locked"), "Junk")
    ok(client._simple_command("MOVE", "1", "Junk"))
    imap.wait_learned()
    assert "outcome=not-learned (token store unavailable: database is locked)" in caplog.text
    ok(client.noop())
    client.logout()
