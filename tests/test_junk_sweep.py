"""The nightly Junk sweep: ``mailtoaster.spam.sweep`` and ``mailtoaster junk sweep``.

Maildirs are made with the store's own :class:`Maildir`, file ages set with ``os.utime``; the learner
is a fake that remembers what it learned per user (by content), so learned / already known / moved
can be checked without the classifier.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from mailtoaster.cli import junk as junk_cli
from mailtoaster.cli import main
from mailtoaster.config import SpamSettings
from mailtoaster.spam.filter import LearnOutcome
from mailtoaster.spam.store import Label, TokenStoreUnavailable
from mailtoaster.spam.sweep import SweepOptions, sweep
from mailtoaster.store import Directory, Maildir, User
from tests.redisserver import RedisServer, flush

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
DAY = 86400.0
NOW = time.time()
ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.org"


@dataclass
class FakeLearner:
    """Learns by content digest per user, as the token store does; can be told to fail."""

    learned: dict[tuple[str, str], Label] = field(default_factory=dict)
    calls: list[tuple[str, Label, bytes]] = field(default_factory=list)
    fail_on: dict[bytes, Exception] = field(default_factory=dict)

    def __call__(self, data: bytes, label: Label, user: str) -> LearnOutcome:
        if data in self.fail_on:
            raise self.fail_on[data]
        self.calls.append((user, label, data))
        key = (user, hashlib.sha256(data).hexdigest())
        previous = self.learned.get(key)
        self.learned[key] = label
        if previous is None:
            return LearnOutcome.LEARNED
        return LearnOutcome.ALREADY if previous == label else LearnOutcome.MOVED

    def teach(self, user: str, data: bytes, label: Label) -> None:
        self.learned[(user, hashlib.sha256(data).hexdigest())] = label


def message(tag: str) -> bytes:
    return f"From: someone@example.net\nSubject: {tag}\n\nbody of {tag}\n".encode()


@dataclass
class World:
    data_dir: Path
    users: dict[str, User]

    def maildir(self, user: str) -> Path:
        return self.users[user].maildir

    def put(self, user: str, folder: str | None, tag: str, age_days: float, sub: str = "cur") -> Path:
        """Deliver message ``tag`` to ``folder`` (None: INBOX), into ``sub``, ``age_days`` old."""
        path = Maildir(self.maildir(user), hostname="test").deliver(io.BytesIO(message(tag)), folder=folder)
        if sub == "cur":
            path = path.rename(path.parent.parent / "cur" / (path.name + ":2,S"))
        when = NOW - age_days * DAY
        os.utime(path, (when, when))
        return path

    def all_users(self) -> list[User]:
        with Directory.open(self.data_dir / "directory.sqlite", hasher=FAST_HASHER) as directory:
            return directory.list_users()


@pytest.fixture
def world(tmp_path: Path) -> World:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    users = {}
    with Directory.open(data_dir / "directory.sqlite", hasher=FAST_HASHER) as directory:
        directory.add_domain("example.com")
        directory.add_domain("example.org")
        for address in (ALICE, BOB, CAROL):
            users[address] = directory.add_user(address, "secret")
    return World(data_dir, users)


@pytest.fixture
def learner() -> FakeLearner:
    return FakeLearner()


def tree(root: Path) -> dict[str, tuple[bytes, float]]:
    """Every file under ``root`` with its content and mtime: what a dry run must leave alone."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def learned_tags(learner: FakeLearner) -> set[tuple[str, Label, str]]:
    return {
        (user, label, data.decode().split("Subject: ")[1].split("\n")[0])
        for user, label, data in learner.calls
    }


# -- which messages -------------------------------------------------------------------------------


def test_old_junk_of_every_user_is_learned_as_spam_for_that_user(world: World, learner: FakeLearner) -> None:
    world.put(ALICE, "Junk", "alice-old", 6)
    world.put(ALICE, "Junk", "alice-old-unread", 10, sub="new")
    world.put(ALICE, "Junk", "alice-young", 2)
    world.put(ALICE, "Junk.Phishing", "alice-sub-old", 30)
    world.put(ALICE, "Junk.Phishing.Banks", "alice-subsub-old", 30)
    world.put(ALICE, "JunkMail", "not-junk", 30)  # a different folder, whatever its name starts with
    world.put(ALICE, "Trash", "alice-trash", 30)
    world.put(ALICE, None, "alice-inbox", 30)
    world.put(CAROL, "Junk", "carol-old", 5.01)
    world.put(CAROL, "Junk", "carol-just-young", 4.99)

    report = sweep(world.all_users(), learner, SweepOptions(older_than=5 * DAY))

    assert learned_tags(learner) == {
        (ALICE, "spam", "alice-old"),
        (ALICE, "spam", "alice-old-unread"),
        (ALICE, "spam", "alice-sub-old"),
        (ALICE, "spam", "alice-subsub-old"),
        (CAROL, "spam", "carol-old"),
    }
    by_user = {user.user: user for user in report.users}
    assert set(by_user) == {ALICE, BOB, CAROL}  # Bob has no Junk at all
    assert by_user[ALICE].spam.as_dict() == {
        "found": 4,
        "learned": 4,
        "already_known": 0,
        "moved": 0,
        "deleted": 0,
        "errors": 0,
    }
    assert by_user[BOB].spam.found == 0
    assert report.total("spam").learned == 5
    assert report.total("ham").found == 0
    assert report.errors == 0 and report.aborted is None


def test_nothing_is_deleted_without_delete(world: World, learner: FakeLearner) -> None:
    old = world.put(ALICE, "Junk", "old", 6)
    sweep(world.all_users(), learner, SweepOptions(older_than=5 * DAY))
    assert old.exists()


def test_delete_removes_exactly_the_learned_messages(world: World, learner: FakeLearner) -> None:
    old = world.put(ALICE, "Junk", "old", 6)
    old_sub = world.put(ALICE, "Junk.Sub", "old-sub", 6, sub="new")
    young = world.put(ALICE, "Junk", "young", 1)
    trash = world.put(ALICE, "Trash", "trash", 60)
    inbox = world.put(ALICE, None, "inbox", 60)

    report = sweep(world.all_users(), learner, SweepOptions(older_than=5 * DAY, delete=True))

    assert not old.exists() and not old_sub.exists()
    assert young.exists() and trash.exists() and inbox.exists()
    assert report.total("spam").deleted == 2
    # The folders themselves stay, for the IMAP server and the next delivery.
    assert (world.maildir(ALICE) / ".Junk" / "cur").is_dir()
    assert (world.maildir(ALICE) / ".Junk.Sub" / "maildirfolder").exists()


def test_known_and_moved_messages_are_counted_as_such(world: World, learner: FakeLearner) -> None:
    world.put(ALICE, "Junk", "known-spam", 6)
    world.put(ALICE, "Junk", "was-ham", 6)
    world.put(ALICE, "Junk", "new-one", 6)
    learner.teach(ALICE, message("known-spam"), "spam")
    learner.teach(ALICE, message("was-ham"), "ham")

    report = sweep(world.all_users(), learner, SweepOptions(older_than=5 * DAY))

    counts = report.total("spam")
    assert (counts.learned, counts.already_known, counts.moved) == (1, 1, 1)
    # A second night without --delete: everything is known now.
    again = sweep(world.all_users(), learner, SweepOptions(older_than=5 * DAY)).total("spam")
    assert (again.learned, again.already_known, again.moved) == (0, 3, 0)


def test_old_inbox_mail_is_learned_as_ham_and_kept(world: World, learner: FakeLearner) -> None:
    kept = world.put(BOB, None, "kept", 40, sub="cur")
    world.put(BOB, None, "unread-kept", 40, sub="new")
    world.put(BOB, None, "recent", 10)
    world.put(BOB, "Archive", "archived", 40)  # INBOX means INBOX, not its folders
    world.put(BOB, "Junk", "spam", 40)
    options = SweepOptions(older_than=5 * DAY, delete=True, ham_folder="INBOX", ham_older_than=30 * DAY)

    report = sweep(world.all_users(), learner, options)

    assert learned_tags(learner) == {(BOB, "ham", "kept"), (BOB, "ham", "unread-kept"), (BOB, "spam", "spam")}
    assert kept.exists()  # ham is never deleted
    assert report.total("ham").as_dict() == {
        "found": 2,
        "learned": 2,
        "already_known": 0,
        "moved": 0,
        "deleted": 0,
        "errors": 0,
    }
    assert report.total("spam").deleted == 1


def test_ham_from_a_named_folder(world: World, learner: FakeLearner) -> None:
    world.put(BOB, "Archive", "archived", 40)
    world.put(BOB, None, "inbox", 40)
    options = SweepOptions(older_than=5 * DAY, ham_folder="Archive", ham_older_than=30 * DAY)
    sweep(world.all_users(), learner, options)
    assert learned_tags(learner) == {(BOB, "ham", "archived")}


# -- dry run --------------------------------------------------------------------------------------


def test_a_dry_run_touches_nothing(world: World, learner: FakeLearner) -> None:
    world.put(ALICE, "Junk", "old", 6)
    world.put(ALICE, "Junk.Sub", "old-sub", 6)
    world.put(ALICE, "Junk", "young", 1)
    world.put(BOB, None, "old-inbox", 40)
    before = tree(world.data_dir / "mail")
    options = SweepOptions(
        older_than=5 * DAY, delete=True, ham_folder="INBOX", ham_older_than=30 * DAY, dry_run=True
    )

    report = sweep(world.all_users(), learner, options)

    assert tree(world.data_dir / "mail") == before
    assert learner.calls == []
    assert report.dry_run
    assert (report.total("spam").found, report.total("spam").deleted) == (2, 2)
    assert (report.total("ham").found, report.total("ham").deleted) == (1, 0)


# -- errors ---------------------------------------------------------------------------------------


def test_a_message_that_cannot_be_learned_is_an_error_and_is_kept(world: World, learner: FakeLearner) -> None:
    bad = world.put(ALICE, "Junk", "bad", 6)
    good = world.put(ALICE, "Junk", "good", 6)
    learner.fail_on[message("bad")] = ValueError("cannot parse")

    report = sweep(world.all_users(), learner, SweepOptions(older_than=5 * DAY, delete=True))

    assert bad.exists() and not good.exists()
    alice = next(user for user in report.users if user.user == ALICE)
    assert (alice.spam.learned, alice.spam.errors, alice.spam.deleted) == (1, 1, 1)
    assert alice.problems == [f"{bad}: cannot learn: ValueError: cannot parse"]


def test_an_unreadable_message_is_an_error(
    world: World, learner: FakeLearner, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = world.put(ALICE, "Junk", "bad", 6)
    original = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == bad:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    report = sweep(world.all_users(), learner, SweepOptions(older_than=5 * DAY, delete=True))
    assert bad.exists()
    assert report.errors == 1
    assert report.users[0].problems == [f"{bad}: Permission denied"]


def test_an_unavailable_store_stops_the_sweep(world: World, learner: FakeLearner) -> None:
    first = world.put(ALICE, "Junk", "a-first", 6)
    stuck = world.put(ALICE, "Junk", "b-store-down", 6)
    later = world.put(CAROL, "Junk", "later", 6)
    learner.fail_on[message("b-store-down")] = TokenStoreUnavailable("Redis at 127.0.0.1:6379 db 0: refused")

    report = sweep(world.all_users(), learner, SweepOptions(older_than=5 * DAY, delete=True))

    assert report.aborted == "Redis at 127.0.0.1:6379 db 0: refused"
    assert not first.exists() and stuck.exists() and later.exists()
    assert [user.user for user in report.users] == [ALICE]
    assert report.total("spam").learned == 1


# -- the command ----------------------------------------------------------------------------------


@pytest.fixture
def cli_learner(learner: FakeLearner, monkeypatch: pytest.MonkeyPatch) -> FakeLearner:
    @contextmanager
    def open_learner(data_dir: Path, settings: SpamSettings) -> Iterator[FakeLearner]:
        yield learner

    monkeypatch.setattr(junk_cli, "open_learner", open_learner)
    return learner


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["junk", "sweep", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_sweeps_and_summarises(
    world: World, cli_learner: FakeLearner, capsys: pytest.CaptureFixture[str]
) -> None:
    old = world.put(ALICE, "Junk", "old", 6)
    world.put(CAROL, "Junk.Sub", "old", 8)
    world.put(CAROL, "Junk", "young", 1)

    code, out, err = run(capsys, "--data-dir", str(world.data_dir), "--older-than", "5d", "--delete")

    assert (code, err) == (0, "")
    assert not old.exists()
    assert out.splitlines() == [
        f"{ALICE}: spam 1 old, 1 learned, 0 already known, 0 moved, 1 deleted, 0 errors",
        f"{CAROL}: spam 1 old, 1 learned, 0 already known, 0 moved, 1 deleted, 0 errors",
        "total (3 users): spam 2 old, 2 learned, 0 already known, 0 moved, 2 deleted, 0 errors",
    ]


def test_the_command_json_with_ham(
    world: World, cli_learner: FakeLearner, capsys: pytest.CaptureFixture[str]
) -> None:
    world.put(ALICE, "Junk", "old", 13 / 24, sub="new")
    world.put(BOB, None, "kept", 31)
    argv = ["--data-dir", str(world.data_dir), "--older-than", "12h", "--json"]
    code, out, _ = run(capsys, *argv, "--learn-ham-from", "INBOX", "--ham-older-than", "30d")
    assert code == 0
    report = json.loads(out)
    assert report["older_than_seconds"] == 43200 and report["ham_older_than_seconds"] == 30 * DAY
    assert report["total"]["spam"]["learned"] == 1 and report["total"]["ham"]["learned"] == 1
    users = {entry["user"]: entry for entry in report["users"]}
    assert users[BOB]["ham"]["learned"] == 1 and users[BOB]["spam"]["found"] == 0
    assert report["dry_run"] is False and report["aborted"] is None


def test_the_command_dry_run_needs_no_spam_filter(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_learner(data_dir: Path, settings: SpamSettings) -> None:
        raise AssertionError("a dry run must not open the spam filter")

    monkeypatch.setattr(junk_cli, "open_learner", no_learner)
    world.put(ALICE, "Junk", "old", 6)
    before = tree(world.data_dir / "mail")
    code, out, _ = run(capsys, "--data-dir", str(world.data_dir), "--delete", "--dry-run")
    assert code == 0
    assert tree(world.data_dir / "mail") == before
    assert f"{ALICE}: spam would learn 1, would delete 1" in out.splitlines()


def test_the_command_exit_codes_for_failures(
    world: World, cli_learner: FakeLearner, capsys: pytest.CaptureFixture[str]
) -> None:
    world.put(ALICE, "Junk", "bad", 6)
    cli_learner.fail_on[message("bad")] = ValueError("broken")
    code, _, err = run(capsys, "--data-dir", str(world.data_dir))
    assert code == 1
    assert f"mailtoaster junk: {ALICE}: " in err and "cannot learn: ValueError: broken" in err

    cli_learner.fail_on[message("bad")] = TokenStoreUnavailable("Redis at 127.0.0.1:1 db 0: refused")
    code, out, err = run(capsys, "--data-dir", str(world.data_dir))
    assert code == 75
    assert "Redis at 127.0.0.1:1 db 0: refused; sweep stopped" in err
    assert out.splitlines() == [  # what was done before the store went away
        f"{ALICE}: spam 1 old, 0 learned, 0 already known, 0 moved, 0 deleted, 0 errors",
        "total (1 user): spam 1 old, 0 learned, 0 already known, 0 moved, 0 deleted, 0 errors",
    ]


def test_the_command_reports_a_store_down_at_start(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextmanager
    def unavailable(data_dir: Path, settings: SpamSettings) -> Iterator[FakeLearner]:
        raise TokenStoreUnavailable("Redis at 127.0.0.1:1 db 0: refused")
        yield FakeLearner()  # pragma: no cover

    monkeypatch.setattr(junk_cli, "open_learner", unavailable)
    code, out, err = run(capsys, "--data-dir", str(world.data_dir))
    assert (code, out) == (75, "")
    assert "refused; nothing was swept" in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--older-than", "soon"], "--older-than: expected a duration"),
        (["--older-than", "0"], "--older-than: must be more than zero"),
        (["--ham-older-than", "30d"], "--ham-older-than needs --learn-ham-from"),
        (["--learn-ham-from", "Junk"], "the Junk folder holds spam, not ham"),
        (["--learn-ham-from", "junk.Sub"], "the Junk folder holds spam, not ham"),
        (["--junk-folder", "INBOX.Junk"], "--junk-folder: folder 'INBOX.Junk': names are relative to INBOX"),
        (["--learn-ham-from", "a..b"], "--learn-ham-from: folder 'a..b': empty level"),
        (["--junk-folder", "inbox"], "the inbox is not a spam folder"),
    ],
)
def test_the_command_refuses_bad_options(
    world: World, cli_learner: FakeLearner, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    code, out, err = run(capsys, "--data-dir", str(world.data_dir), *argv)
    assert (code, out) == (2, "")
    assert fragment in err and len(err.splitlines()) == 1


def test_the_command_needs_an_existing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--data-dir", str(tmp_path / "nowhere"))
    assert code == 2
    assert "no directory at" in err
    assert not (tmp_path / "nowhere").exists()


def test_another_junk_folder_name_in_modified_utf7(world: World, learner: FakeLearner) -> None:
    world.put(ALICE, "Unerwünscht", "german-spam", 6)
    world.put(ALICE, "Unerwünscht.Alt", "german-spam-sub", 6)
    world.put(ALICE, "Junk", "not-this-one", 6)
    assert (world.maildir(ALICE) / ".Unerw&APw-nscht.Alt").is_dir()
    sweep(world.all_users(), learner, SweepOptions(older_than=5 * DAY, junk_folder="Unerwünscht"))
    assert learned_tags(learner) == {(ALICE, "spam", "german-spam"), (ALICE, "spam", "german-spam-sub")}


def test_the_command_learns_with_the_real_spam_filter(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """No fake: ``junk sweep`` on the data directory's own SQLite token store."""
    from mailtoaster.spam import SpamFilter

    kept = world.put(BOB, None, "kept", 40)
    world.put(BOB, "Junk.Sub", "spam", 6)
    argv = ["--data-dir", str(world.data_dir), "--learn-ham-from", "INBOX", "--json"]

    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    first = json.loads(out)["total"]
    assert (first["spam"]["learned"], first["ham"]["learned"]) == (1, 1)

    # Bob changes his mind and moves the old message to Junk (a rename: its mtime stays).
    Maildir(world.maildir(BOB)).create_folder("Junk")
    thrown = kept.rename(world.maildir(BOB) / ".Junk" / "cur" / kept.name)
    code, out, _ = run(capsys, *argv, "--delete")
    again = json.loads(out)["total"]
    assert code == 0
    assert (again["spam"]["learned"], again["spam"]["moved"], again["spam"]["already_known"]) == (0, 1, 1)
    assert again["spam"]["deleted"] == 2 and again["ham"]["found"] == 0
    assert not thrown.exists()

    spam_filter = SpamFilter.open(world.data_dir)
    try:
        assert (spam_filter.store.totals(BOB).spam, spam_filter.store.totals(BOB).ham) == (2, 0)
        assert (spam_filter.store.totals().spam, spam_filter.store.totals().ham) == (2, 0)
    finally:
        spam_filter.close()


def test_the_command_learns_into_the_configured_store(
    world: World, capsys: pytest.CaptureFixture[str], redis_server: RedisServer
) -> None:
    """``--config``: the store the server scores from (here a Redis), not the data directory's file."""
    from mailtoaster.spam.redisstore import RedisTokenStore

    flush(redis_server.url)
    config = world.data_dir.parent / "serve.toml"
    config.write_text(f'[server]\ndata_dir = "{world.data_dir}"\n\n[spam]\nstore = "{redis_server.url}"\n')
    world.put(ALICE, "Junk", "old", 6)
    code, out, err = run(capsys, "--config", str(config), "--delete")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].startswith("total (3 users): spam 1 old, 1 learned")
    store = RedisTokenStore(redis_server.url)
    try:
        assert store.totals(ALICE).spam == 1
    finally:
        store.close()
    assert not (world.data_dir / "spam").exists()


def _campaign(index: int) -> bytes:
    """A spam campaign the trained filter has never seen: plain text, its own words and sender."""
    return (
        f"From: Portugal Estates <offers{index % 3}@sunny-villas.example>\n"
        f"To: {BOB}\n"
        f"Subject: Exclusive timeshare auction, lot {index}\n"
        f"Message-ID: <lot{index}@sunny-villas.example>\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0000\n"
        "\n"
        f"Dear investor, the exclusive timeshare auction of Algarve villas closes soon: lot {index}\n"
        "comes with ocean views, a guaranteed rental yield and free flights for the bidders.\n"
        "Reserve your bidding number at sunny-villas dot example today.\n"
    ).encode()


def test_swept_junk_is_learned_removed_and_its_likes_score_higher(
    world: World, trained_spam_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 5's acceptance end to end, with the real filter and the ``junk sweep`` command: old
    messages in Bob's ``.Junk/cur`` are learned as spam and removed, and a new message of the same
    campaign then scores higher, in Bayes and in points, than it did before the sweep: high enough
    to go to Junk, where before it went to the inbox."""
    from mailtoaster.spam import SpamFilter
    from tests.spamtraining import install_trained

    install_trained(trained_spam_store, world.data_dir)
    probe = _campaign(99)
    before_filter = SpamFilter.open(world.data_dir)
    try:
        before = before_filter.score(probe, BOB)
    finally:
        before_filter.close()
    junk = Maildir(world.maildir(BOB), hostname="test")
    junk.create_folder("Junk")
    swept = []
    for index in range(12):
        delivered = junk.deliver(io.BytesIO(_campaign(index)), folder="Junk")
        path = delivered.rename(delivered.parent.parent / "cur" / (delivered.name + ":2,S"))
        os.utime(path, (NOW - 6 * DAY, NOW - 6 * DAY))
        swept.append(path)

    code, out, err = run(
        capsys, "--data-dir", str(world.data_dir), "--older-than", "5d", "--delete", "--json"
    )

    assert (code, err) == (0, "")
    total = json.loads(out)["total"]["spam"]
    assert (total["learned"], total["deleted"]) == (12, 12)
    assert not any(path.exists() for path in swept)
    after_filter = SpamFilter.open(world.data_dir)
    try:
        after = after_filter.score(probe, BOB)
    finally:
        after_filter.close()
    assert before.bayes is not None and after.bayes is not None
    assert after.bayes > before.bayes
    assert after.points > before.points
    assert (before.verdict, after.verdict) == ("ham", "spam")  # 2.8 points before, 9.0 after, here
