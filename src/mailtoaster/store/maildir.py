"""Maildir++ delivery that Dovecot and Courier-IMAP read as their own.

A delivery follows the Maildir protocol (cr.yp.to/proto/maildir.html): the message is streamed into
``tmp/<unique>``, fsynced, renamed to ``new/<unique>,S=<size>`` and ``new/`` is fsynced, so once
:meth:`Maildir.deliver` returns the message survives a crash and the SMTP server may answer 250.

- Unique names are ``<seconds>.M<microseconds>P<pid>Q<counter>.<host>``: the counter is per process and
  thread-safe, so no two deliveries of one process share a name even within a microsecond; ``/``, ``:``
  and ``,`` in the host name are written ``\\057``, ``\\072`` and ``\\054`` as Dovecot does.
- ``S=<size>`` is the size of the stored file, which Dovecot and Courier's quota code use unread.
- Line endings: messages are stored with LF line ends, as qmail-local and maildrop stored them and as
  Dovecot prefers (it converts to CRLF when serving IMAP and uses ``S=`` as the LF size). SMTP hands us
  CRLF, so every CRLF becomes LF while streaming; a CR not followed by LF is kept.
- Nothing is read whole: sources are copied in :data:`CHUNK_SIZE` pieces.

Folders are Maildir++ ``.Name`` directories (``.Junk``, sub-folder ``.Junk.Sub``) holding cur/new/tmp and
the ``maildirfolder`` marker, their names in modified UTF-7 (``.Entw&APw-rfe``). A folder that delivery
creates (the ``Junk`` quarantine) is subscribed in both Courier's and Dovecot's subscription files.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mailtoaster.durable import fsync_directory, write_all
from mailtoaster.store import subscriptions
from mailtoaster.store.errors import FolderNameError, MaildirError
from mailtoaster.store.mutf7 import decode_mutf7, encode_mutf7
from mailtoaster.store.subscriptions import INBOX, Subscriptions

CHUNK_SIZE = 64 * 1024
DIR_MODE = 0o700
FILE_MODE = 0o600
SUBDIRECTORIES = ("cur", "new", "tmp")
FOLDER_MARKER = "maildirfolder"
FOLDER_SEPARATOR = "."
JUNK_FOLDER = "Junk"
MAX_DIRECTORY_NAME = 255
_NAME_ATTEMPTS = 5
_HOSTNAME_ESCAPES = {"/": "\\057", ":": "\\072", ",": "\\054"}

_delivery_counter = itertools.count(1)
_delivery_counter_lock = threading.Lock()


class CrlfToLf:
    """Turns CRLF into LF in a stream cut into arbitrary chunks: a chunk's final CR waits for the next."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk
        if data.endswith(b"\r"):
            self._held, data = b"\r", data[:-1]
        else:
            self._held = b""
        return data.replace(b"\r\n", b"\n")

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held


class Maildir:
    """One Maildir++ (a user's ``.../Maildir``): delivery, folders, subscriptions."""

    def __init__(
        self, path: Path | str, *, hostname: str | None = None, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.path = Path(path)
        self.hostname = safe_hostname(hostname if hostname is not None else socket.gethostname())
        self._clock = clock

    def ensure(self) -> None:
        """Create the Maildir (and missing parents), cur/new/tmp, all mode 0700; nothing if it exists."""
        _make_maildir(self.path)

    def folder_path(self, folder: str | None) -> Path:
        """The directory of ``folder`` (None or ``INBOX``: the Maildir itself)."""
        if is_inbox(folder):
            return self.path
        assert folder is not None
        return self.path / folder_directory_name(folder)

    def deliver(self, source: BinaryIO | Path, *, prefix: bytes = b"", folder: str | None = None) -> Path:
        """Store ``prefix`` then ``source`` as one new message (CRLF → LF); returns its path in ``new/``.

        ``folder`` None means INBOX; another folder is created (and subscribed) if missing.
        Raises :class:`MaildirError` if the message could not be stored; nothing is left behind then.
        """
        target = self._delivery_target(folder)
        temporary, fd = self._create_temporary(target)
        try:
            size = _write_message(fd, prefix, source)
            final = target / "new" / f"{temporary.name},S={size}"
            os.rename(temporary, final)
            fsync_directory(final.parent)
        except BaseException as exc:
            temporary.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise MaildirError(f"cannot deliver to {target}: {exc.strerror or exc}") from exc
            raise
        return final

    def create_folder(self, name: str, *, subscribe: bool = True) -> bool:
        """Create folder ``name`` (levels separated by ``.``); True if it was new.

        The ``maildirfolder`` marker is written last, after the subscription: a folder whose creation
        was interrupted is completed (and subscribed) by the next call.
        """
        directory = self.folder_path(name)
        if directory == self.path:
            raise FolderNameError("INBOX is the Maildir itself, not a folder to create")
        marker = directory / FOLDER_MARKER
        if marker.exists():
            return False
        try:
            self.ensure()
            _make_maildir(directory)
            if subscribe:
                subscriptions.subscribe(self.path, directory.name[1:])
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, FILE_MODE))
            fsync_directory(self.path)
        except OSError as exc:
            raise MaildirError(f"cannot create folder {directory}: {exc.strerror or exc}") from exc
        return True

    def list_folders(self) -> list[str]:
        """The folders (decoded names, sorted); directories that are not folders are skipped."""
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return []
        names = []
        for entry in entries:
            if (
                entry.name.startswith(".")
                and entry.is_dir()
                and os.path.isdir(os.path.join(entry.path, "cur"))
            ):
                try:
                    names.append(folder_name_from_directory(entry.name))
                except FolderNameError:
                    continue
        return sorted(names)

    def subscribe(self, folder: str) -> bool:
        """Subscribe ``folder`` in both subscription files; True if either changed."""
        directory = self.folder_path(folder)
        storage_name = INBOX if directory == self.path else directory.name[1:]
        self.ensure()
        return subscriptions.subscribe(self.path, storage_name)

    def unsubscribe(self, folder: str) -> bool:
        """Remove ``folder`` from both subscription files (also a line naming it in UTF-8, as Courier-IMAP 5
        writes); True if either changed. A folder need not exist to be unsubscribed."""
        storage_name = INBOX if is_inbox(folder) else folder_directory_name(folder)[1:]
        wanted = INBOX if is_inbox(folder) else folder
        return subscriptions.unsubscribe(
            self.path, storage_name, also=lambda stored: display_name(stored) == wanted
        )

    def write_temporary(
        self, directory: Path, source: BinaryIO | Path | bytes, *, prefix: bytes = b""
    ) -> tuple[Path, int]:
        """Store ``prefix`` then ``source`` (CRLF → LF) as ``directory/tmp/<unique>``, fsynced; returns the
        path and the stored size. For IMAP APPEND, which renames the file into place itself (with flags
        and under the folder's uid list lock) instead of into ``new/`` as :meth:`deliver` does."""
        temporary, fd = self._create_temporary(directory)
        stream: BinaryIO | Path = io.BytesIO(source) if isinstance(source, bytes) else source
        try:
            size = _write_message(fd, prefix, stream)
        except BaseException as exc:
            temporary.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise MaildirError(f"cannot write {temporary}: {exc.strerror or exc}") from exc
            raise
        return temporary, size

    def subscriptions(self) -> Subscriptions:
        """What each subscription file lists, as decoded folder names."""
        stored = subscriptions.read_subscriptions(self.path)
        return Subscriptions(
            tuple(display_name(name) for name in stored.courier),
            tuple(display_name(name) for name in stored.dovecot),
        )

    def _delivery_target(self, folder: str | None) -> Path:
        """The directory to deliver into, made first if missing: one ``stat`` when it exists."""
        if not (self.path / "tmp").is_dir():
            self.ensure()
        if is_inbox(folder):
            return self.path
        assert folder is not None
        self.create_folder(folder)
        return self.folder_path(folder)

    def _create_temporary(self, target: Path) -> tuple[Path, int]:
        for _ in range(_NAME_ATTEMPTS):
            path = target / "tmp" / unique_name(self._clock(), self.hostname)
            try:
                return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            except FileExistsError:
                continue
            except OSError as exc:
                raise MaildirError(
                    f"cannot create a file in {target / 'tmp'}: {exc.strerror or exc}"
                ) from exc
        raise MaildirError(f"no unique file name in {target / 'tmp'} after {_NAME_ATTEMPTS} attempts")


def deliver_for_user(
    maildir: Maildir, source: BinaryIO | Path, prefix: bytes = b"", *, spam: bool, quarantine: bool
) -> Path:
    """The classic toaster's maildrop rule: spam goes to ``Junk`` when the user quarantines, else INBOX
    (``if (/^X-Spam-Status: Yes/) { to "$HOME/Maildir/.Junk/" }``)."""
    folder = JUNK_FOLDER if spam and quarantine else None
    return maildir.deliver(source, prefix=prefix, folder=folder)


def unique_name(now_ns: int, hostname: str) -> str:
    seconds, nanoseconds = divmod(now_ns, 1_000_000_000)
    with _delivery_counter_lock:
        sequence = next(_delivery_counter)
    return f"{seconds}.M{nanoseconds // 1000}P{os.getpid()}Q{sequence}.{hostname}"


def safe_hostname(hostname: str) -> str:
    return "".join(_HOSTNAME_ESCAPES.get(char, char) for char in hostname) or "localhost"


def is_inbox(folder: str | None) -> bool:
    return folder is None or folder.upper() == INBOX


def folder_directory_name(name: str) -> str:
    """The Maildir++ directory of folder ``name``: ``Junk.Sub`` → ``.Junk.Sub``, levels in modified UTF-7."""
    levels = name.split(FOLDER_SEPARATOR)
    if levels[0].upper() == INBOX:
        raise FolderNameError(
            f"folder {name!r}: names are relative to INBOX (write 'Junk', not 'INBOX.Junk')"
        )
    for level in levels:
        _check_level(name, level)
    directory = "." + FOLDER_SEPARATOR.join(encode_mutf7(level) for level in levels)
    if len(directory.encode("ascii")) > MAX_DIRECTORY_NAME:
        raise FolderNameError(f"folder {name!r}: longer than a directory name may be")
    return directory


def folder_name_from_directory(directory: str) -> str:
    """The folder name a ``.Name`` directory holds; raises :class:`FolderNameError` if it is not one."""
    if not directory.startswith(".") or directory in (".", ".."):
        raise FolderNameError(f"{directory!r} is not a Maildir++ folder directory")
    levels = directory[1:].split(FOLDER_SEPARATOR)
    if any(not level for level in levels):
        raise FolderNameError(f"{directory!r} has an empty folder level")
    return FOLDER_SEPARATOR.join(decode_mutf7(level) for level in levels)


def display_name(storage_name: str) -> str:
    """A storage name from a subscriptions file as a folder name; kept as is if not modified UTF-7
    (Courier-IMAP 5 and Dovecot's ``mailbox_list_utf8`` store UTF-8)."""
    if storage_name == INBOX or not storage_name.isascii():
        return storage_name
    try:
        return FOLDER_SEPARATOR.join(decode_mutf7(level) for level in storage_name.split(FOLDER_SEPARATOR))
    except FolderNameError:
        return storage_name


def _check_level(name: str, level: str) -> None:
    if not level:
        raise FolderNameError(f"folder {name!r}: empty level (a leading, trailing or doubled '.')")
    if "/" in level:
        raise FolderNameError(f"folder {name!r}: '/' is not allowed in Maildir++ folder names")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in level):
        raise FolderNameError(f"folder {name!r}: control characters are not allowed")


def _make_maildir(path: Path) -> None:
    _make_private_directories(path)
    for sub in SUBDIRECTORIES:
        try:
            (path / sub).mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise MaildirError(f"cannot create {path / sub}: {exc.strerror or exc}") from exc


def _make_private_directories(path: Path) -> None:
    """``mkdir -p`` where every directory made is 0700 (``os.makedirs`` leaves parents at the umask)."""
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise MaildirError(f"cannot create {directory}: {exc.strerror or exc}") from exc


def _write_message(fd: int, prefix: bytes, source: BinaryIO | Path) -> int:
    """Write prefix + source through CRLF → LF to ``fd``, fsync and close it; the stored size."""
    converter = CrlfToLf()
    try:
        size = _write_converted(fd, converter, prefix)
        if isinstance(source, Path):
            with source.open("rb") as stream:
                size += _copy(fd, converter, stream)
        else:
            size += _copy(fd, converter, source)
        size += _write_converted(fd, converter, None)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def _copy(fd: int, converter: CrlfToLf, stream: BinaryIO) -> int:
    size = 0
    while chunk := stream.read(CHUNK_SIZE):
        size += _write_converted(fd, converter, chunk)
    return size


def _write_converted(fd: int, converter: CrlfToLf, chunk: bytes | None) -> int:
    data = converter.flush() if chunk is None else converter.feed(chunk)
    write_all(fd, data)
    return len(data)
