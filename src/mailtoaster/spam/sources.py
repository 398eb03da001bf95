"""Where messages to learn come from: a message file, a Maildir (or one of its folders), an mbox file,
or a plain directory of such files — what ``sa-learn`` reads.

:func:`iter_messages` yields ``(display name, raw bytes)`` one message at a time: a Maildir is listed,
not read, up front, and an mbox is streamed line by line, so memory holds one message however large
the source. A message file that cannot be read does not end the walk: it is handed to ``on_unreadable``
(the CLI counts it and goes on); without that callback it is raised as :class:`UnreadableMessage`.

- **Maildir**: a directory with ``cur/`` or ``new/``. Messages in ``cur/`` then ``new/``, each sorted by
  name; ``tmp/`` (deliveries in progress) and dot-files are skipped. A Maildir++ root means its INBOX
  only; ``subfolders=True`` adds its ``.Folder`` directories. Given a folder (``.Junk``), subfolders are
  its Maildir++ children, the siblings ``.Junk.*``.
- **mbox**: a file whose first line starts with ``From ``. It is split at every line starting with
  ``From `` (the From_ line itself is dropped), the blank line that ends each message is removed, and
  ``>From `` quoting is undone the mboxrd way (one ``>`` less on any ``>…>From `` line).
- **message file**: anything else, read as one message.
- **directory of files**: a directory that is not a Maildir; each regular file in it (not recursing)
  is a message file or an mbox.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

MAILDIR_SUBDIRECTORIES = ("cur", "new")
FOLDER_MARKER = "maildirfolder"
FROM_LINE = b"From "
_QUOTED_FROM = re.compile(rb"^>+From ")

Message = tuple[str, bytes]


class MessageSourceError(Exception):
    """The path given is not something messages can be read from (missing, or unreadable itself)."""


class UnreadableMessage(MessageSourceError):
    """One message (file, or the rest of an mbox) could not be read; the others still can."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


UnreadableHandler = Callable[[UnreadableMessage], None]


def iter_messages(
    path: Path, *, subfolders: bool = False, on_unreadable: UnreadableHandler | None = None
) -> Iterator[Message]:
    """Every message in ``path`` as ``(display name, raw bytes)``; see the module docstring.

    Raises :class:`MessageSourceError` if ``path`` does not exist or cannot be listed.
    """
    report = on_unreadable or _raise
    try:
        is_directory = path.is_dir()
        exists = is_directory or path.exists()
    except OSError as exc:
        raise MessageSourceError(f"{path}: {_reason(exc)}") from exc
    if not exists:
        raise MessageSourceError(f"{path}: no such file or directory")
    if not is_directory:
        yield from _file_messages(path, report)
    elif is_maildir(path):
        for folder in maildir_folders(path, subfolders=subfolders):
            yield from _maildir_messages(folder, report)
    else:
        for file in _listing(path, report):
            yield from _file_messages(file, report)


def is_maildir(path: Path) -> bool:
    """A directory with ``cur/`` or ``new/``: a Maildir, or a Maildir++ folder."""
    return any((path / name).is_dir() for name in MAILDIR_SUBDIRECTORIES)


def maildir_folders(path: Path, *, subfolders: bool) -> list[Path]:
    """``path`` and, when asked, its Maildir++ subfolders (sorted): for a root its ``.Name``
    directories, for a folder ``.Name`` the siblings ``.Name.*`` (Maildir++ keeps the hierarchy flat)."""
    folders = [path]
    if not subfolders:
        return folders
    if path.name.startswith(".") and (path / FOLDER_MARKER).exists():
        parent, prefix = path.parent, path.name + "."
    else:
        parent, prefix = path, "."
    try:
        names = sorted(entry.name for entry in os.scandir(parent) if entry.is_dir())
    except OSError as exc:
        raise MessageSourceError(f"{parent}: {_reason(exc)}") from exc
    folders += [
        parent / name
        for name in names
        if name.startswith(prefix) and name not in (".", "..") and is_maildir(parent / name)
    ]
    return folders


def maildir_files(folder: Path) -> Iterator[Path]:
    """The message files of one Maildir folder: ``cur/`` then ``new/``, sorted, without dot-files.

    A missing ``cur/`` or ``new/`` is simply empty (a folder made by hand may lack one).
    """
    for sub in MAILDIR_SUBDIRECTORIES:
        try:
            entries = sorted(
                (entry.name for entry in os.scandir(folder / sub) if not entry.name.startswith(".")),
            )
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise MessageSourceError(f"{folder / sub}: {_reason(exc)}") from exc
        for name in entries:
            file = folder / sub / name
            if not file.is_dir():
                yield file


def _maildir_messages(folder: Path, report: UnreadableHandler) -> Iterator[Message]:
    """Maildir files are messages as they are, never mbox-split (a delivered message starting with
    ``From `` is still one message)."""
    for file in maildir_files(folder):
        data = _read(file, report)
        if data is not None:
            yield str(file), data


def _listing(directory: Path, report: UnreadableHandler) -> list[Path]:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        raise MessageSourceError(f"{directory}: {_reason(exc)}") from exc
    files = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_file():
                files.append(Path(entry.path))
        except OSError as exc:
            report(UnreadableMessage(entry.path, _reason(exc)))
    return files


def _file_messages(path: Path, report: UnreadableHandler) -> Iterator[Message]:
    """One file: an mbox (streamed) when its first line is a From_ line, else one message."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        report(UnreadableMessage(str(path), _reason(exc)))
        return
    with handle:
        try:
            first = handle.readline()
            if first.startswith(FROM_LINE):
                yield from _mbox_messages(str(path), handle, report)
                return
            data = first + handle.read()
        except OSError as exc:
            report(UnreadableMessage(str(path), _reason(exc)))
            return
    yield str(path), data


def _mbox_messages(name: str, handle: BinaryIO, report: UnreadableHandler) -> Iterator[Message]:
    """The messages after the first From_ line (already read) of an open mbox, numbered from 1 in
    their names (``box.mbox[3]``); empty ones are skipped. A read error mid-way reports the rest of
    the file as unreadable; the messages before it were yielded already."""
    number = 1
    lines: list[bytes] = []
    while True:
        try:
            line = handle.readline()
        except OSError as exc:
            report(
                UnreadableMessage(f"{name}[{number}]", f"{_reason(exc)} (the rest of the mbox is skipped)")
            )
            return
        if not line or line.startswith(FROM_LINE):
            data = _mbox_message(lines)
            if data:
                yield f"{name}[{number}]", data
            if not line:
                return
            number += 1
            lines = []
        else:
            lines.append(line)


def _mbox_message(lines: list[bytes]) -> bytes:
    """One mbox message's lines: quoting undone, the separating blank line removed."""
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines = lines[:-1]  # the last real line keeps its own line end; only the blank separator goes
    return b"".join(line[1:] if _QUOTED_FROM.match(line) else line for line in lines)


def _read(path: Path, report: UnreadableHandler) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError as exc:
        report(UnreadableMessage(str(path), _reason(exc)))
        return None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _raise(problem: UnreadableMessage) -> None:
    raise problem
