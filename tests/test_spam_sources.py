"""``mailtoaster.spam.sources``: messages from a file, a Maildir, an mbox or a directory of files."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from mailtoaster.spam.sources import (
    MessageSourceError,
    UnreadableMessage,
    iter_messages,
    maildir_folders,
)
from mailtoaster.store import Maildir

ONE = b"From: a@example.com\nSubject: one\n\nbody one\n"
TWO = b"From: b@example.com\nSubject: two\n\nbody two\n"
THREE = b"From: c@example.com\nSubject: three\n\nbody three\n"

running_as_root = os.geteuid() == 0


def messages(path: Path, **options: object) -> list[tuple[str, bytes]]:
    return list(iter_messages(path, **options))  # type: ignore[arg-type]


def put(folder: Path, sub: str, name: str, data: bytes) -> Path:
    (folder / sub).mkdir(parents=True, exist_ok=True)
    path = folder / sub / name
    path.write_bytes(data)
    return path


def make_unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading ``path`` fails with EACCES, as for a file of another user (chmod does not stop root)."""
    original_open = Path.open
    original_read = Path.read_bytes

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return original_open(self, *args, **kwargs)

    def refuse_read(self: Path) -> bytes:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return original_read(self)

    monkeypatch.setattr(Path, "open", refuse)
    monkeypatch.setattr(Path, "read_bytes", refuse_read)


# -- single files ---------------------------------------------------------------------------------


def test_a_message_file_is_one_message(tmp_path: Path) -> None:
    path = tmp_path / "one.eml"
    path.write_bytes(ONE)
    assert messages(path) == [(str(path), ONE)]


def test_a_message_with_crlf_and_from_in_the_body_is_one_message(tmp_path: Path) -> None:
    data = b"Subject: x\r\n\r\nFrom here on\r\nFrom there\r\n"
    path = tmp_path / "crlf.eml"
    path.write_bytes(data)
    assert messages(path) == [(str(path), data)]


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MessageSourceError, match="no such file"):
        messages(tmp_path / "nothing")


# -- mbox -----------------------------------------------------------------------------------------


def mbox(*bodies: bytes, newline: bytes = b"\n") -> bytes:
    out = b""
    for number, body in enumerate(bodies):
        out += b"From sender@example.com Thu Nov 26 10:0%d:00 2026" % number + newline
        out += body + newline  # the blank line that ends each message
    return out


def test_an_mbox_is_split_at_from_lines(tmp_path: Path) -> None:
    path = tmp_path / "box"
    path.write_bytes(mbox(ONE, TWO, THREE))
    assert messages(path) == [(f"{path}[1]", ONE), (f"{path}[2]", TWO), (f"{path}[3]", THREE)]


def test_mbox_quoting_is_undone(tmp_path: Path) -> None:
    quoted = b"Subject: q\n\n>From the start\n>>From deeper\nnot >From mid-line\n> From spaced\n"
    path = tmp_path / "box"
    path.write_bytes(mbox(quoted, ONE))
    assert messages(path)[0][1] == (
        b"Subject: q\n\nFrom the start\n>From deeper\nnot >From mid-line\n> From spaced\n"
    )


def test_an_mbox_with_crlf_line_ends(tmp_path: Path) -> None:
    one, two = ONE.replace(b"\n", b"\r\n"), TWO.replace(b"\n", b"\r\n")
    path = tmp_path / "box"
    path.write_bytes(mbox(one, two, newline=b"\r\n"))
    assert [data for _, data in messages(path)] == [one, two]


def test_an_mbox_without_separating_blank_lines_or_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "box"
    path.write_bytes(b"From a\n" + ONE + b"From b\n" + b"Subject: last\n\nno newline")
    assert [data for _, data in messages(path)] == [ONE, b"Subject: last\n\nno newline"]


def test_a_corpus_file_with_one_from_line_is_one_message(tmp_path: Path) -> None:
    """The SpamAssassin corpus stores one message per file, after an mbox From_ line."""
    path = tmp_path / "00001.7c53336b37003a9286aba55d2945844c"
    path.write_bytes(b"From exmh-workers-admin@redhat.com  Thu Aug 22 12:36:23 2002\n" + ONE)
    assert messages(path) == [(f"{path}[1]", ONE)]


def test_empty_mbox_messages_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "box"
    path.write_bytes(b"From a\n\nFrom b\n" + ONE)
    assert [data for _, data in messages(path)] == [ONE]


def test_an_mbox_is_streamed(tmp_path: Path) -> None:
    body = b"Subject: big\n\n" + b"x" * 70 + b"\n"
    big = body + b"y" * 100 * 1024 + b"\n"  # ~100 KB per message
    path = tmp_path / "big.mbox"
    with path.open("wb") as handle:
        for _ in range(200):  # ~20 MB in all
            handle.write(b"From someone Thu Nov 26 10:00:00 2026\n" + big + b"\n")
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_messages(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200
    assert peak < 2 * 1024 * 1024  # a few messages' worth, not the file


# -- Maildirs -------------------------------------------------------------------------------------


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    """A Maildir++ with INBOX (cur and new), a Junk folder with a subfolder and a Trash folder."""
    root = Maildir(tmp_path / "Maildir")
    root.ensure()
    put(root.path, "cur", "1000.M1P1.host:2,S", ONE)
    put(root.path, "new", "1001.M1P1.host", TWO)
    put(root.path, "tmp", "1002.M1P1.host", b"being delivered")
    put(root.path, "cur", ".hidden", b"not a message")
    for folder in ("Junk", "Junk.Old", "Trash"):
        root.create_folder(folder)
    put(root.path / ".Junk", "cur", "2000.M1P1.host:2,", THREE)
    put(root.path / ".Junk.Old", "new", "2001.M1P1.host", ONE)
    put(root.path / ".Trash", "cur", "3000.M1P1.host:2,T", TWO)
    return root.path


def test_a_maildir_root_means_its_inbox(maildir: Path) -> None:
    assert messages(maildir) == [
        (str(maildir / "cur" / "1000.M1P1.host:2,S"), ONE),
        (str(maildir / "new" / "1001.M1P1.host"), TWO),
    ]


def test_a_maildir_root_with_subfolders_means_every_folder(maildir: Path) -> None:
    names = [name for name, _ in messages(maildir, subfolders=True)]
    assert names == [
        str(maildir / "cur" / "1000.M1P1.host:2,S"),
        str(maildir / "new" / "1001.M1P1.host"),
        str(maildir / ".Junk" / "cur" / "2000.M1P1.host:2,"),
        str(maildir / ".Junk.Old" / "new" / "2001.M1P1.host"),
        str(maildir / ".Trash" / "cur" / "3000.M1P1.host:2,T"),
    ]


def test_a_folder_with_subfolders_means_its_maildirpp_children(maildir: Path) -> None:
    assert [data for _, data in messages(maildir / ".Junk")] == [THREE]
    assert [data for _, data in messages(maildir / ".Junk", subfolders=True)] == [THREE, ONE]
    assert maildir_folders(maildir / ".Junk", subfolders=True) == [maildir / ".Junk", maildir / ".Junk.Old"]


def test_a_maildir_file_starting_with_from_is_not_split(tmp_path: Path) -> None:
    put(tmp_path / "md", "cur", "1", b"From x\n" + ONE + b"From y\n" + TWO)
    assert [data for _, data in messages(tmp_path / "md")] == [b"From x\n" + ONE + b"From y\n" + TWO]


def test_a_directory_of_files_is_read_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(ONE)
    (tmp_path / "b.mbox").write_bytes(mbox(TWO, THREE))
    (tmp_path / ".hidden").write_bytes(b"skip")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deeper.eml").write_bytes(b"not read: no recursion")
    assert [data for _, data in messages(tmp_path)] == [ONE, TWO, THREE]


# -- unreadable files -----------------------------------------------------------------------------


def test_unreadable_files_are_reported_and_the_rest_read(
    maildir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = maildir / "cur" / "1000.M1P1.host:2,S"
    make_unreadable(bad, monkeypatch)
    problems: list[UnreadableMessage] = []
    found = messages(maildir, on_unreadable=problems.append)
    assert [data for _, data in found] == [TWO]
    assert [(problem.name, problem.reason) for problem in problems] == [(str(bad), "Permission denied")]


def test_without_a_handler_an_unreadable_file_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "one.eml"
    path.write_bytes(ONE)
    make_unreadable(path, monkeypatch)
    with pytest.raises(UnreadableMessage, match="Permission denied") as caught:
        messages(path)
    assert caught.value.name == str(path)


def test_an_unreadable_file_among_plain_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.eml").write_bytes(ONE)
    (tmp_path / "b.eml").write_bytes(TWO)
    make_unreadable(tmp_path / "a.eml", monkeypatch)
    problems: list[UnreadableMessage] = []
    assert [data for _, data in messages(tmp_path, on_unreadable=problems.append)] == [TWO]
    assert len(problems) == 1


@pytest.mark.skipif(running_as_root, reason="root reads files whatever their mode")
def test_a_file_without_read_permission(tmp_path: Path) -> None:
    path = tmp_path / "secret.eml"
    path.write_bytes(ONE)
    path.chmod(0)
    problems: list[UnreadableMessage] = []
    assert messages(path, on_unreadable=problems.append) == []
    assert len(problems) == 1


def test_a_read_error_inside_an_mbox_skips_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "box"
    path.write_bytes(mbox(ONE, TWO, THREE))
    original_open = Path.open

    class FailingAfter:
        """A file that fails with EIO once the third message's From_ line has been read."""

        def __init__(self, handle: BinaryIO) -> None:
            self.handle = handle
            self.from_lines = 0

        def readline(self) -> bytes:
            line = self.handle.readline()
            self.from_lines += line.startswith(b"From ")
            if self.from_lines == 3 and not line.startswith(b"From "):
                raise OSError(5, "Input/output error")
            return line

        def read(self) -> bytes:
            return self.handle.read()

        def __enter__(self) -> FailingAfter:
            return self

        def __exit__(self, *exc_info: object) -> None:
            self.handle.close()

    def failing_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = original_open(self, *args, **kwargs)
        return FailingAfter(handle) if self == path else handle

    monkeypatch.setattr(Path, "open", failing_open)
    problems: list[UnreadableMessage] = []
    assert [data for _, data in messages(path, on_unreadable=problems.append)] == [ONE, TWO]
    assert [problem.name for problem in problems] == [f"{path}[3]"]
    assert "Input/output error" in problems[0].reason
