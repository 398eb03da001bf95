"""Maildir++ delivery, folders, modified UTF-7, subscriptions, and Dovecot reading what we wrote."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.store import (
    CHUNK_SIZE,
    CrlfToLf,
    FolderNameError,
    Maildir,
    MaildirError,
    decode_mutf7,
    deliver_for_user,
    encode_mutf7,
    folder_directory_name,
    folder_name_from_directory,
)
from mailtoaster.store import subscriptions as subs
from tests.peers import require

NAME_PATTERN = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.([^/:,]+),S=(\d+)$")
MESSAGE = b"From: a@example.org\r\nSubject: hello\r\n\r\nline one\r\nline two\r\n"


@pytest.fixture
def maildir(tmp_path: Path) -> Maildir:
    box = Maildir(tmp_path / "Maildir", hostname="mx.example.com")
    box.ensure()
    return box


def files_in(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


# Layout and delivery


def test_ensure_creates_private_maildir_and_parents(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "mail" / "example.com" / "bob" / "Maildir")
    box.ensure()
    box.ensure()
    for directory in (box.path, box.path / "cur", box.path / "new", box.path / "tmp", box.path.parent.parent):
        assert directory.is_dir()
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_deliver_stores_lf_lines_with_a_maildir_name(maildir: Maildir) -> None:
    path = maildir.deliver(io.BytesIO(MESSAGE), prefix=b"Return-Path: <a@example.org>\r\n")
    expected = b"Return-Path: <a@example.org>\n" + MESSAGE.replace(b"\r\n", b"\n")
    assert path.parent == maildir.path / "new"
    assert path.read_bytes() == expected
    match = NAME_PATTERN.match(path.name)
    assert match is not None, path.name
    assert int(match.group(6)) == len(expected) == path.stat().st_size
    assert int(match.group(3)) == os.getpid()
    assert match.group(5) == "mx.example.com"
    assert abs(int(match.group(1)) - time.time()) < 60
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert files_in(maildir.path / "tmp") == []


def test_deliver_is_byte_exact_for_lf_and_binary_content(maildir: Maildir) -> None:
    content = bytes(range(256)).replace(b"\r", b"") * 3 + b"\rbare CR kept\r"
    path = maildir.deliver(io.BytesIO(content))
    assert path.read_bytes() == content


def test_deliver_from_a_path_and_into_a_missing_maildir(tmp_path: Path) -> None:
    source = tmp_path / "spooled.eml"
    source.write_bytes(MESSAGE)
    box = Maildir(tmp_path / "fresh" / "Maildir")
    path = box.deliver(source)
    assert path.read_bytes() == MESSAGE.replace(b"\r\n", b"\n")


def test_deliver_fsyncs_the_file_and_new_directory(maildir: Maildir, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = maildir.deliver(io.BytesIO(MESSAGE))
    temporary = str(maildir.path / "tmp" / path.name.split(",")[0])
    assert synced == [temporary, str(maildir.path / "new")]


def test_many_concurrent_deliveries_get_unique_names(tmp_path: Path) -> None:
    frozen_ns = 1_700_000_000_123_456_789
    box = Maildir(tmp_path / "Maildir", clock=lambda: frozen_ns)
    failures: list[BaseException] = []

    def deliver_many(worker: int) -> None:
        try:
            for index in range(40):
                box.deliver(io.BytesIO(b"worker %d message %d\r\n" % (worker, index)))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=deliver_many, args=(worker,)) for worker in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    delivered = files_in(box.path / "new")
    assert len(delivered) == 12 * 40
    assert len({path.name for path in delivered}) == 12 * 40
    contents = {path.read_bytes() for path in delivered}
    assert contents == {b"worker %d message %d\n" % (w, i) for w in range(12) for i in range(40)}
    assert all(path.name.startswith("1700000000.M123456P") for path in delivered)


def test_hostname_special_characters_are_escaped(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "Maildir", hostname="odd/host:name,x")
    path = box.deliver(io.BytesIO(b"x\n"))
    assert ".odd\\057host\\072name\\054x,S=2" in path.name


class FailingSource(io.RawIOBase):
    def __init__(self) -> None:
        self.calls = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls > 2:
            raise OSError(5, "Input/output error")
        return b"x" * 100


def test_failed_delivery_leaves_nothing_behind(maildir: Maildir) -> None:
    with pytest.raises(MaildirError, match="Input/output error"):
        maildir.deliver(FailingSource())  # type: ignore[arg-type]
    assert files_in(maildir.path / "tmp") == []
    assert files_in(maildir.path / "new") == []


# CRLF → LF across chunk boundaries


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


crlf_heavy = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\r\r\n", b"\x00"]), max_size=60).map(
    b"".join
)


@given(data=st.one_of(crlf_heavy, st.binary(max_size=300)), cuts=st.lists(st.integers(0, 300), max_size=12))
def test_crlf_to_lf_does_not_depend_on_chunking(data: bytes, cuts: list[int]) -> None:
    converter = CrlfToLf()
    out = b"".join(converter.feed(piece) for piece in split_at(data, cuts)) + converter.flush()
    assert out == data.replace(b"\r\n", b"\n")


class ChunkedSource(io.RawIOBase):
    """Returns the data in the given piece sizes, whatever size is asked for (like a socket or pipe)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = [piece for piece in pieces if piece]

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""


@settings(max_examples=60, deadline=None)
@given(prefix=crlf_heavy, data=crlf_heavy, cuts=st.lists(st.integers(0, 300), max_size=12))
def test_delivered_file_and_size_match_for_any_chunking(prefix: bytes, data: bytes, cuts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        box = Maildir(Path(scratch) / "Maildir")
        path = box.deliver(ChunkedSource(split_at(data, cuts)), prefix=prefix)  # type: ignore[arg-type]
        expected = (prefix + data).replace(b"\r\n", b"\n")
        assert path.read_bytes() == expected
        assert path.name.endswith(f",S={len(expected)}")


def test_chunk_boundary_inside_crlf_at_the_read_size(maildir: Maildir) -> None:
    body = b"a" * (CHUNK_SIZE - 1) + b"\r\n" + b"b" * (CHUNK_SIZE - 2) + b"\r\n\r"
    path = maildir.deliver(io.BytesIO(body))
    assert path.read_bytes() == b"a" * (CHUNK_SIZE - 1) + b"\n" + b"b" * (CHUNK_SIZE - 2) + b"\n\r"


class GeneratedMessage(io.RawIOBase):
    """``total`` bytes of CRLF lines made on the fly: nothing of it exists in memory at once."""

    LINE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef\r\n"

    def __init__(self, total: int) -> None:
        self.remaining = total
        self.offset = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.remaining if size < 0 else min(size, self.remaining)
        self.remaining -= size
        repeated = self.LINE * ((self.offset + size) // len(self.LINE) + 1)
        chunk = repeated[self.offset : self.offset + size]
        self.offset = (self.offset + size) % len(self.LINE)
        return chunk


def test_large_message_is_streamed_with_bounded_memory(maildir: Maildir) -> None:
    total = 50 * 1024 * 1024
    line = GeneratedMessage.LINE
    assert total % len(line) == 0
    tracemalloc.start()
    try:
        path = maildir.deliver(GeneratedMessage(total))  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected_size = total - total // len(line)
    assert path.stat().st_size == expected_size
    assert path.name.endswith(f",S={expected_size}")
    assert peak < 2 * 1024 * 1024, f"peak traced memory {peak} bytes"
    stored_line = line.replace(b"\r\n", b"\n")
    with path.open("rb") as stored:
        assert stored.read(len(stored_line) * 3) == stored_line * 3
        stored.seek(-len(stored_line) * 3, os.SEEK_END)
        assert stored.read() == stored_line * 3


# Modified UTF-7


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("&", "&-"),
        ("☺☺", "&JjomOg-"),
        ("📧", "&2D3c5w-"),
        ("", ""),
    ],
)
def test_mutf7_known_values(name: str, encoded: str) -> None:
    assert encode_mutf7(name) == encoded
    assert decode_mutf7(encoded) == name


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40))
def test_mutf7_round_trip(name: str) -> None:
    encoded = encode_mutf7(name)
    assert encoded.isascii()
    assert all(" " <= char <= "~" for char in encoded)
    assert decode_mutf7(encoded) == name


@pytest.mark.parametrize(
    "text",
    ["&Jjo", "&Jjo!-", "&AGE-", "&Jjo-&Jjo-", "&2D0-", "ü", "&Jjp-", "a\tb"],
)
def test_mutf7_rejects_invalid_and_non_canonical_text(text: str) -> None:
    with pytest.raises(FolderNameError):
        decode_mutf7(text)


def test_mutf7_rejects_lone_surrogates() -> None:
    with pytest.raises(FolderNameError, match="surrogate"):
        encode_mutf7("a\ud800b")


# Folders


def test_create_folder_makes_a_maildirplusplus_folder(maildir: Maildir) -> None:
    assert maildir.create_folder("Entwürfe.Sub")
    directory = maildir.path / ".Entw&APw-rfe.Sub"
    for sub in ("cur", "new", "tmp"):
        assert (directory / sub).is_dir()
        assert stat.S_IMODE((directory / sub).stat().st_mode) == 0o700
    assert (directory / "maildirfolder").is_file()
    assert not maildir.create_folder("Entwürfe.Sub")
    maildir.create_folder("Archive")
    (maildir.path / ".not-a-folder").mkdir()
    (maildir.path / ".&bad").mkdir()
    (maildir.path / ".&bad" / "cur").mkdir()
    assert maildir.list_folders() == ["Archive", "Entwürfe.Sub"]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("INBOX", "INBOX is the Maildir itself"),
        ("inbox.Junk", "relative to INBOX"),
        ("", "empty level"),
        ("Junk.", "empty level"),
        ("a..b", "empty level"),
        ("a/b", "'/'"),
        ("bell\x07", "control characters"),
        ("x" * 300, "longer than a directory name"),
    ],
)
def test_invalid_folder_names(maildir: Maildir, name: str, fragment: str) -> None:
    with pytest.raises(FolderNameError, match=re.escape(fragment)):
        maildir.create_folder(name)


def test_folder_directory_names_round_trip() -> None:
    assert folder_directory_name("Junk.Sub") == ".Junk.Sub"
    assert folder_name_from_directory(".Junk.Sub") == "Junk.Sub"
    assert folder_name_from_directory(folder_directory_name("Été.Ünter & Co")) == "Été.Ünter & Co"
    for bad in ("Junk", ".", "..", ".a..b"):
        with pytest.raises(FolderNameError):
            folder_name_from_directory(bad)


def test_delivery_into_a_folder_creates_and_subscribes_it(maildir: Maildir) -> None:
    path = maildir.deliver(io.BytesIO(b"x\r\n"), folder="Junk")
    assert path.parent == maildir.path / ".Junk" / "new"
    assert maildir.deliver(io.BytesIO(b"y\r\n"), folder="inbox").parent == maildir.path / "new"
    assert (maildir.path / "courierimapsubscribed").read_text() == "INBOX.Junk\n"
    assert (maildir.path / "subscriptions").read_text() == "V\t2\n\nJunk\n"


def test_quarantine_rule(maildir: Maildir) -> None:
    assert (
        deliver_for_user(maildir, io.BytesIO(b"s\n"), spam=True, quarantine=True).parent.parent.name
        == ".Junk"
    )
    assert (
        deliver_for_user(maildir, io.BytesIO(b"s\n"), spam=True, quarantine=False).parent.parent
        == maildir.path
    )
    assert (
        deliver_for_user(maildir, io.BytesIO(b"h\n"), spam=False, quarantine=True).parent.parent
        == maildir.path
    )
    assert len(files_in(maildir.path / ".Junk" / "new")) == 1
    assert len(files_in(maildir.path / "new")) == 2


# Subscriptions


def test_subscriptions_have_no_duplicates_and_nested_names_use_tabs(maildir: Maildir) -> None:
    for _ in range(3):
        deliver_for_user(maildir, io.BytesIO(b"s\n"), spam=True, quarantine=True)
    maildir.create_folder("Junk.Ärger")
    assert (maildir.path / "courierimapsubscribed").read_text() == "INBOX.Junk\nINBOX.Junk.&AMQ-rger\n"
    assert (maildir.path / "subscriptions").read_text() == "V\t2\n\nJunk\nJunk\t&AMQ-rger\n"
    found = maildir.subscriptions()
    assert found.courier == found.dovecot == ("Junk", "Junk.Ärger")
    assert not maildir.subscribe("Junk")
    assert list(maildir.path.glob("*.lock")) == []


def test_folder_created_without_subscription(maildir: Maildir) -> None:
    maildir.create_folder("Quiet", subscribe=False)
    assert maildir.subscriptions() == subs.Subscriptions((), ())


def test_existing_files_keep_their_entries_and_their_version(maildir: Maildir) -> None:
    (maildir.path / "courierimapsubscribed").write_text("INBOX\nINBOX.Sent")
    (maildir.path / "subscriptions").write_text("Sent\nTrash.\n")
    maildir.create_folder("Junk.Sub")
    assert (maildir.path / "courierimapsubscribed").read_text() == "INBOX\nINBOX.Sent\nINBOX.Junk.Sub\n"
    assert (maildir.path / "subscriptions").read_text() == "Sent\nTrash.\nJunk.Sub\n"
    assert maildir.subscriptions().dovecot == ("Sent", "Trash", "Junk.Sub")
    assert maildir.subscriptions().courier == ("INBOX", "Sent", "Junk.Sub")


def test_existing_version_2_file_is_extended_in_version_2(maildir: Maildir) -> None:
    (maildir.path / "subscriptions").write_text("V\t2\n\nSent\nArchive\t2024\n")
    maildir.create_folder("Junk")
    assert (maildir.path / "subscriptions").read_text() == "V\t2\n\nSent\nArchive\t2024\nJunk\n"
    assert maildir.subscriptions().dovecot == ("Sent", "Archive.2024", "Junk")


def test_dovecot_format_both_versions_and_tab_escaping() -> None:
    odd = "a\tb\x01c\rd\ne"
    assert subs.tab_unescape(subs.tab_escape(odd)) == odd
    assert "\t" not in subs.tab_escape(odd) and "\n" not in subs.tab_escape(odd)
    names = ["Junk", "Junk.Sub", "Entw&APw-rfe"]
    assert subs.format_dovecot(names) == "V\t2\n\nJunk\nJunk\tSub\nEntw&APw-rfe\n"
    assert subs.format_dovecot(names, version=1) == "Junk\nJunk.Sub\nEntw&APw-rfe\n"
    assert subs.parse_dovecot(subs.format_dovecot(names)) == names
    assert subs.parse_dovecot(subs.format_dovecot(names, version=1)) == names
    assert subs.parse_dovecot("V\t2\n\nweird\x01tname\tsub\n") == ["weird\tname.sub"]
    assert subs.parse_courier("INBOX\ninbox.Sent\nNotOurs\n\n") == ["INBOX", "Sent"]


def test_concurrent_folder_creation_keeps_every_subscription(maildir: Maildir) -> None:
    names = [f"Folder{index}" for index in range(12)]
    threads = [threading.Thread(target=maildir.create_folder, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    found = maildir.subscriptions()
    assert sorted(found.courier) == sorted(found.dovecot) == sorted(names)


def test_stale_lock_is_broken_and_a_live_lock_times_out(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = maildir.path / "subscriptions.lock"
    lock.write_text("left by a crash")
    old = time.time() - subs.STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    maildir.subscribe("Junk")
    assert maildir.subscriptions().dovecot == ("Junk",)
    assert not lock.exists()

    lock.write_text("held right now")
    monkeypatch.setattr(subs, "LOCK_TIMEOUT_SECONDS", 0.2)
    with pytest.raises(MaildirError, match="timed out waiting for the lock"):
        maildir.subscribe("Other")
    assert lock.read_text() == "held right now"


# Dovecot reads what we wrote

DOVECOT_IMAP = Path("/usr/lib/dovecot/imap")


def run_dovecot_imap(root: Path, commands: list[str]) -> str:
    """Run Dovecot's imap binary in PREAUTH mode on the Maildir at ``root``/Maildir; its output."""
    owner = "nobody" if os.getuid() == 0 else str(os.getuid())
    group = "nogroup" if os.getuid() == 0 else str(os.getgid())
    if os.getuid() == 0:
        shutil.chown(root, "nobody", "nogroup")
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                shutil.chown(os.path.join(dirpath, name), "nobody", "nogroup")
    config = root.parent / "dovecot.conf"
    config.write_text(
        f"mail_location = maildir:{root / 'Maildir'}\n"
        "log_path = /dev/stderr\nssl = no\n"
        f"mail_uid = {owner}\nmail_gid = {group}\nfirst_valid_uid = 1\nfirst_valid_gid = 1\n"
    )
    script = "".join(f"t{index} {command}\r\n" for index, command in enumerate(commands)) + "z LOGOUT\r\n"
    completed = subprocess.run(
        [str(DOVECOT_IMAP), "-c", str(config)],
        input=script.encode(),
        capture_output=True,
        timeout=30,
        env={"USER": "bob", "HOME": str(root), "PATH": os.environ.get("PATH", "")},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return completed.stdout.decode("utf-8", errors="replace")


def test_dovecot_reads_delivered_mail_folders_and_subscriptions() -> None:
    require(None if DOVECOT_IMAP.exists() else "Dovecot is not installed (apt-get install dovecot-imapd)")
    base = Path(tempfile.mkdtemp(prefix="mailtoaster-dovecot-"))
    try:
        os.chmod(base, 0o755)  # Dovecot runs as an unprivileged user and must reach the Maildir
        root = base / "home"
        root.mkdir(mode=0o755)
        box = Maildir(root / "Maildir")
        box.deliver(io.BytesIO(MESSAGE))
        deliver_for_user(box, io.BytesIO(b"Subject: spam\r\n\r\nbuy now\r\n"), spam=True, quarantine=True)
        box.deliver(io.BytesIO(b"Subject: draft\r\n\r\nx\r\n"), folder="Entwürfe.Sub")
        out = run_dovecot_imap(
            root,
            [
                'LIST "" "*"',
                'LSUB "" "*"',
                "STATUS Junk (MESSAGES)",
                'STATUS "Entw&APw-rfe.Sub" (MESSAGES)',
                "SELECT INBOX",
                "FETCH 1 (RFC822.SIZE BODY.PEEK[])",
                "CREATE Archive.2024",
                "SUBSCRIBE Archive.2024",
            ],
        )
        assert '* LSUB () "." Junk' in out
        assert '* LSUB () "." Entw&APw-rfe.Sub' in out
        assert "* STATUS Junk (MESSAGES 1)" in out
        assert re.search(r'\* STATUS "?Entw&APw-rfe\.Sub"? \(MESSAGES 1\)', out), out
        assert f"* 1 FETCH (RFC822.SIZE {len(MESSAGE)} BODY[] {{{len(MESSAGE)}}}\r\n" in out
        assert MESSAGE.decode() in out.replace("\r\n", "\n").replace("\n", "\r\n")
        assert box.subscriptions().dovecot == ("Junk", "Entwürfe.Sub", "Archive.2024")
        assert (root / "Maildir" / "subscriptions").read_text().endswith("\nArchive\t2024\n")
    finally:
        shutil.rmtree(base)
