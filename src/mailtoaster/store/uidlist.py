"""Dovecot's per-folder control files in a Maildir++, read and written as Dovecot 2.3 does, so that Dovecot
and mailtoaster can serve one Maildir at the same time and agree on UIDs, UIDVALIDITY and keywords.

- ``dovecot-uidlist`` (in each folder directory; INBOX's in the Maildir root), version 3: the header
  ``3 V<uidvalidity> N<next uid> G<mailbox guid>`` then one line per message, ascending by UID,
  ``<uid>[ <key><value>...] :<basename>``. The basename is the file name up to the ``:`` of the info
  suffix (``:2,<flags>``), so renaming a file to change its flags never touches the list. Extensions are
  kept as read; ``W<n>`` is the message's size with CRLF line ends (RFC822.SIZE). Dovecot appends new
  lines without rewriting the header, so ``N`` may be stale: the next UID is the larger of ``N`` and the
  last UID + 1. Version 1 (``1 <uidvalidity> <next uid>`` / ``<uid> <basename>``) is read too.
- ``dovecot-uidlist.lock``: the lock every writer of the list holds (a dotlock, below). New lines are
  appended under it; a rewrite goes to ``dovecot-uidlist.tmp``, is fsynced and renamed over the list.
- ``dovecot-keywords``: ``<index> <name>`` lines mapping IMAP keywords to the letters ``a``-``z``
  (index 0 is ``a``) of the info suffix; changed under the uidlist lock through ``dovecot-keywords.lock``.
- ``dovecot-uidvalidity`` (Maildir root): eight hex digits, and an empty marker file
  ``dovecot-uidvalidity.<hex>`` that is renamed to the next value to hand out a new UIDVALIDITY
  atomically across processes (Dovecot's ``mailbox-uidvalidity.c``).

A dotlock is ``<file>.lock`` created exclusively and holding ``<pid>:<hostname>``. It is stale when it has
not changed for :data:`LOCK_STALE_SECONDS`, or sooner (after :data:`STALE_PID_CHECK_SECONDS`) when it
names a process on this host that no longer exists; Dovecot's ``file-dotlock.c`` judges it the same way.
"""

from __future__ import annotations

import copy
import itertools
import logging
import operator
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from types import TracebackType

from mailtoaster.durable import fsync_directory, write_all
from mailtoaster.store.errors import MaildirError

UIDLIST_FILE = "dovecot-uidlist"
UIDLIST_TEMPORARY = "dovecot-uidlist.tmp"
KEYWORDS_FILE = "dovecot-keywords"
UIDVALIDITY_FILE = "dovecot-uidvalidity"
LOCK_SUFFIX = ".lock"
UIDLIST_VERSION = 3
MAX_UID = 2**32 - 2
"""The largest UID Dovecot accepts (it refuses ``(uint32_t)-1``)."""
MAX_KEYWORDS = 26
FIRST_KEYWORD_LETTER = "a"
LOCK_STALE_SECONDS = 120.0
"""Dovecot's ``MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT``: a lock unchanged this long is left by a crash."""
LOCK_TIMEOUT_SECONDS = LOCK_STALE_SECONDS + 2
"""How long to wait for a live lock, as Dovecot does (stale timeout + 2 s)."""
STALE_PID_CHECK_SECONDS = 2.0
FILE_MODE = 0o600
_UIDVALIDITY_ATTEMPTS = 10
_OVERRIDE_PAUSE_SECONDS = (0.1, 0.2)
_HEX8 = re.compile(r"[0-9a-fA-F]{1,8}")
_V3_EXTENSIONS = re.compile(r"(?:[A-Z][^ \n]*(?: [A-Z][^ \n]*)*)?(?:\n(?:[A-Z][^ \n]*(?: [A-Z][^ \n]*)*)?)*")
"""Lines of ``<key><value>`` fields as Dovecot writes them (single spaces, capital keys), or empty lines."""
_RECORDS_PER_WRITE = 4096
_PARSE_BLOCK = 256 * 1024

log = logging.getLogger("mailtoaster.store")


class UidListCorruptError(MaildirError):
    """The uid list cannot be parsed. Worth logging: the folder recovers with a new UIDVALIDITY, so every
    client has to fetch its UIDs again."""


class LockTimeoutError(MaildirError):
    """A dotlock stayed held by a live process for longer than the timeout."""


class DotLock:
    """Dovecot's dotlock on ``path``: ``<path>.lock`` created with ``O_EXCL``, holding ``<pid>:<host>``.

    Used as a context manager; :meth:`replace` turns the lock file into the new ``path`` (write the new
    content into the lock, fsync, rename), as Dovecot changes ``dovecot-keywords``.
    """

    def __init__(
        self,
        path: Path,
        *,
        timeout: float = LOCK_TIMEOUT_SECONDS,
        stale_after: float = LOCK_STALE_SECONDS,
    ) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + LOCK_SUFFIX)
        self.timeout = timeout
        self.stale_after = stale_after
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Create the lock, waiting for a live holder up to ``timeout`` and overriding a stale one."""
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            except FileExistsError:
                if self._override_if_stale():
                    continue
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(f"timed out waiting for the lock {self.lock_path}") from None
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 2, 0.05)
                continue
            except OSError as exc:
                raise MaildirError(f"cannot create {self.lock_path}: {exc.strerror or exc}") from exc
            self._took(fd)
            return

    def release(self) -> None:
        """Remove the lock if it is still ours (a lock overridden as stale belongs to someone else now)."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if self._still_ours():
            self.lock_path.unlink(missing_ok=True)
        else:
            log.warning("lock %s was overridden while we held it", self.lock_path)
        self._identity = None

    def touch(self) -> None:
        """Tell other processes the holder is alive (long operations call this now and then)."""
        if self._fd is not None:
            os.utime(self.lock_path)

    def replace(self, content: bytes, *, mtime_ns: int | None = None) -> None:
        """Write ``content`` into the lock file (with modification time ``mtime_ns`` if given), fsync it and
        rename it over ``path``; the lock is released."""
        if self._fd is None:
            raise MaildirError(f"{self.lock_path} is not held")
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            write_all(fd, content)
            if mtime_ns is not None:
                os.utime(fd, ns=(time.time_ns(), mtime_ns))
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            self.lock_path.unlink(missing_ok=True)
            raise MaildirError(f"cannot write {self.lock_path}: {exc.strerror or exc}") from exc
        os.close(fd)
        os.replace(self.lock_path, self.path)
        self._identity = None

    def __enter__(self) -> DotLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()

    def _took(self, fd: int) -> None:
        try:
            write_all(fd, f"{os.getpid()}:{socket.gethostname()}".encode())
            status = os.fstat(fd)
        except OSError:
            os.close(fd)
            self.lock_path.unlink(missing_ok=True)
            raise
        self._fd = fd
        self._identity = (status.st_dev, status.st_ino)

    def _still_ours(self) -> bool:
        try:
            status = os.lstat(self.lock_path)
        except FileNotFoundError:
            return False
        return (status.st_dev, status.st_ino) == self._identity

    def _override_if_stale(self) -> bool:
        """Remove the existing lock if it is stale; True when the caller should try again at once."""
        try:
            status = os.lstat(self.lock_path)
        except FileNotFoundError:
            return True
        if not lock_is_stale(self.lock_path, status.st_mtime, self.stale_after):
            return False
        try:
            again = os.lstat(self.lock_path)
        except FileNotFoundError:
            return True
        if (again.st_ino, again.st_mtime_ns) != (status.st_ino, status.st_mtime_ns):
            return True  # someone else overrode it and took it meanwhile; judge the new one next time
        log.warning("overriding stale lock %s", self.lock_path)
        self.lock_path.unlink(missing_ok=True)
        # Like Dovecot: pause, so that another process overriding the same stale lock at the same moment
        # does not remove the lock we are about to create.
        time.sleep(random.uniform(*_OVERRIDE_PAUSE_SECONDS))
        return True


def lock_is_stale(lock_path: Path, mtime: float, stale_after: float) -> bool:
    """Dovecot's rule: unchanged for ``stale_after`` seconds, or naming a dead process of this host."""
    age = time.time() - mtime
    if age >= stale_after:
        return True
    if age < STALE_PID_CHECK_SECONDS:
        return False
    pid = _local_pid(lock_path)
    return pid is not None and not _process_exists(pid)


def _local_pid(lock_path: Path) -> int | None:
    try:
        content = lock_path.read_bytes()[:512].decode("ascii", errors="replace").strip()
    except OSError:
        return None
    pid, _, host = content.partition(":")
    if host != socket.gethostname() or not (pid.isascii() and pid.isdigit()):
        return None
    return int(pid)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# dovecot-uidlist


class UidList:
    """One folder's ``dovecot-uidlist`` as last read: basename → UID, extensions, UIDVALIDITY, next UID.

    :meth:`refresh` follows the file cheaply: nothing is read when it is unchanged, only the new lines when
    it only grew (appends), all of it when it was replaced. Writers hold :meth:`lock` and call
    :meth:`refresh` under it first, then :meth:`append` or :meth:`rewrite`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / UIDLIST_FILE
        self._clear()

    def _clear(self) -> None:
        self.version = 0
        self.uidvalidity = 0
        self.next_uid = 1
        self.guid = ""
        self.header_extras = ""
        self.uids: dict[str, int] = {}
        """basename → UID, in file order (ascending UID)."""
        self.extensions: dict[int, str] = {}
        """UID → the record's extension fields as written (``"W1234 S1200"``), for records that have any."""
        self.last_uid = 0
        self._shared = False
        """``uids`` and ``extensions`` are shared with a copy: copy them before changing them."""
        self._identity: tuple[int, int] | None = None
        self._size = 0
        self._mtime_ns = 0
        self._offset = 0

    @property
    def exists(self) -> bool:
        return self._identity is not None

    def copy(self) -> UidList:
        """An independent copy of this view (for a session starting from another session's view). The
        two share their dictionaries until either changes them (copy on write): a folder of 50,000
        messages then holds one ``uids`` dictionary, not one per session and snapshot."""
        twin = copy.copy(self)
        self._shared = twin._shared = True
        return twin

    def _own(self) -> None:
        """Make ``uids`` and ``extensions`` this view's own before changing them."""
        if self._shared:
            self.uids = dict(self.uids)
            self.extensions = dict(self.extensions)
            self._shared = False

    @property
    def current(self) -> bool:
        """True when the file is version 3 with a mailbox GUID: appending keeps it what Dovecot writes."""
        return self.exists and self.version == UIDLIST_VERSION and bool(self.guid)

    def lock(self, *, timeout: float = LOCK_TIMEOUT_SECONDS) -> DotLock:
        return DotLock(self.path, timeout=timeout)

    def unchanged_on_disk(self) -> bool:
        """Whether the file is still the one this view last read (same inode, size and mtime): one
        ``stat``, nothing read or changed. False when it cannot be told."""
        try:
            status = os.stat(self.path)
        except OSError:
            return False
        return self._is_as_read(status)

    def _is_as_read(self, status: os.stat_result) -> bool:
        """Whether ``status`` is the file this view last read: same inode, size and mtime."""
        same_file = (status.st_dev, status.st_ino) == self._identity
        return same_file and (status.st_size, status.st_mtime_ns) == (self._size, self._mtime_ns)

    def refresh(self) -> bool:
        """Bring this view up to date with the file; True if anything changed.

        Raises :class:`UidListCorruptError` (and forgets everything) if the file cannot be parsed.
        """
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            changed = self.exists or bool(self.uids)
            self._clear()
            return changed
        except OSError as exc:
            raise MaildirError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if self._is_as_read(status):
            return False
        appended = (status.st_dev, status.st_ino) == self._identity and status.st_size > self._size
        try:
            self._read(from_offset=self._offset if appended else 0)
        except UidListCorruptError:
            self._clear()
            raise
        return True

    def _read(self, *, from_offset: int) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._clear()
            return
        except OSError as exc:
            raise MaildirError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            status = os.fstat(fd)
            identity = (status.st_dev, status.st_ino)
            if identity != self._identity:
                from_offset = 0
            os.lseek(fd, from_offset, os.SEEK_SET)
            data = _read_all(fd)
        finally:
            os.close(fd)
        previous = self.uids
        if from_offset == 0:
            self._clear()
        else:
            self._own()
            previous = {}
        self._identity = identity
        self._size = from_offset + len(data)
        self._mtime_ns = status.st_mtime_ns
        self._parse(data, from_offset, previous)

    def _parse(self, data: bytes, offset: int, previous: dict[str, int] | None = None) -> None:
        """Parse the complete lines of ``data`` (read at ``offset``); a partial last line waits for its
        end (a writer may be appending right now)."""
        complete = data.rfind(b"\n") + 1
        text = data[:complete].decode("utf-8", errors="surrogateescape")
        first_line = 1
        if offset == 0:
            end = text.find("\n")
            if end < 0:
                raise UidListCorruptError(f"{self.path}: empty or without a complete header line")
            self._parse_header(text[:end])
            text = text[end + 1 :]
            first_line = 2
        if not (self.version == UIDLIST_VERSION and self._add_all_v3(text, previous or {})):
            self._add_each(text, first_line)
        self._offset = offset + complete
        self.next_uid = max(self.next_uid, self.last_uid + 1)

    def _add_all_v3(self, text: str, previous: dict[str, int]) -> bool:
        """The fast path for well-formed version 3 records: bulk string operations, no per-line Python
        code, a block of about 256 KB at a time (so that what is made on the way stays small next to the
        result); False, having changed nothing, for anything unusual (:meth:`_add_each` then judges line
        by line). Basenames already known from ``previous`` (the list read before a rewrite) keep their
        string objects, so the views sharing them hold one copy."""
        names: list[str] = []
        uids: list[int] = []
        extensions: list[tuple[int, str]] = []
        known = dict(zip(previous, previous, strict=True)) if previous else None
        start = 0
        while start < len(text):
            end = text.find("\n", start + _PARSE_BLOCK) + 1 or len(text)
            block = _parse_v3_block(text[start:end])
            if block is None:
                return False
            block_names, block_uids, block_extensions = block
            names += block_names if known is None else map(known.get, block_names, block_names)
            uids += block_uids
            extensions += block_extensions
            start = end
        if not uids:
            return True
        if uids[0] <= self.last_uid or uids[-1] > MAX_UID or not all(map(operator.lt, uids, uids[1:])):
            return False
        added = dict(zip(names, uids, strict=True))
        if len(added) != len(uids) or (self.uids and not added.keys().isdisjoint(self.uids)):
            return False  # a file listed twice
        self.uids.update(added)
        self.extensions.update(extensions)
        self.last_uid = uids[-1]
        return True

    def _add_each(self, text: str, first_line: int) -> None:
        add = self._add_v3 if self.version == UIDLIST_VERSION else self._add_v1
        lines = text.split("\n")
        lines.pop()
        for number, line in enumerate(lines, start=first_line):
            try:
                add(line)
            except ValueError as exc:
                raise UidListCorruptError(f"{self.path} line {number}: {exc}") from None

    def _parse_header(self, line: str) -> None:
        version, _, rest = line.partition(" ")
        if version == "1":
            fields = rest.split()
            if len(fields) != 2 or not all(_is_number(field) for field in fields):
                raise UidListCorruptError(f"{self.path}: corrupt version 1 header {line!r}")
            self.uidvalidity, header_next = int(fields[0]), int(fields[1])
        elif version == str(UIDLIST_VERSION):
            header_next = self._parse_v3_header(rest)
        else:
            raise UidListCorruptError(f"{self.path}: unsupported version in header {line!r}")
        if not 0 < self.uidvalidity <= 0xFFFFFFFF or header_next <= 0:
            raise UidListCorruptError(f"{self.path}: broken header {line!r}")
        self.version = int(version)
        self.next_uid = header_next

    def _parse_v3_header(self, rest: str) -> int:
        header_next = 0
        extras = []
        for field in rest.split():
            key, value = field[0], field[1:]
            if key == "V" and _is_number(value):
                self.uidvalidity = int(value)
            elif key == "N" and _is_number(value):
                header_next = int(value)
            elif key == "G":
                if not re.fullmatch(r"[0-9a-fA-F]{32}", value):
                    raise UidListCorruptError(f"{self.path}: invalid mailbox GUID {value!r}")
                self.guid = value.lower()
            elif key in "VN":
                raise UidListCorruptError(f"{self.path}: invalid header field {field!r}")
            else:
                extras.append(field)
        self.header_extras = " ".join(extras)
        return header_next

    def _add_v3(self, line: str) -> None:
        head, separator, basename = line.partition(" :")
        if not separator:
            raise ValueError(f"no ' :' before the file name in {line!r}")
        uid_text, _, extensions = head.partition(" ")
        if extensions:
            # Dovecot drops fields whose key is not a capital letter (and rewrites the file later).
            extensions = " ".join(field for field in extensions.split() if "A" <= field[0] <= "Z")
        self._add(uid_text, extensions, basename)

    def _add_v1(self, line: str) -> None:
        uid_text, _, basename = line.partition(" ")
        self._add(uid_text, "", basename.partition(":")[0])

    def _add(self, uid_text: str, extensions: str, basename: str) -> None:
        """One record, checked (the slow path of :meth:`_read`), then kept as :meth:`_remember` keeps any."""
        if not _is_number(uid_text):
            raise ValueError(f"invalid UID {uid_text!r}")
        uid = int(uid_text)
        if not self.last_uid < uid <= MAX_UID:
            raise ValueError(f"UID {uid} out of order or out of range (previous {self.last_uid})")
        if not basename or "/" in basename:
            raise ValueError(f"invalid file name {basename!r}")
        self._remember(((uid, extensions, basename),))

    def extension(self, uid: int, key: str) -> str | None:
        """The value of extension ``key`` (one capital letter) of ``uid``'s record, if it has one."""
        fields = self.extensions.get(uid)
        if fields is None:
            return None
        for field in fields.split(" "):
            if field[:1] == key:
                return field[1:]
        return None

    def set_extension(self, uid: int, key: str, value: str) -> None:
        """Set extension ``key`` of ``uid``'s record in memory (a :meth:`rewrite` stores it)."""
        self._own()
        fields = [field for field in self.extensions.get(uid, "").split(" ") if field and field[0] != key]
        fields.append(f"{key}{value}")
        self.extensions[uid] = " ".join(fields)

    def create(self, uidvalidity: int) -> None:
        """Start a new, empty list with ``uidvalidity`` and write it (the lock must be held)."""
        self._clear()
        self.version = UIDLIST_VERSION
        self.uidvalidity = uidvalidity
        self.guid = uuid.uuid4().hex
        self.rewrite()

    def append(
        self, records: Sequence[tuple[int, str, str]], *, compact_to: Collection[str] | None = None
    ) -> None:
        """Add ``(uid, extensions, basename)`` records (ascending UIDs ≥ :attr:`next_uid`) at the end of the
        file, fdatasynced. With ``compact_to`` the file is rewritten instead, keeping only the records of
        those basenames (and the new ones). The lock must be held and :meth:`refresh` called under it."""
        if not records:
            return
        if records[0][0] < self.next_uid:
            raise MaildirError(f"{self.path}: UID {records[0][0]} below the next UID {self.next_uid}")
        if compact_to is not None or not self.current:
            self._remember(records)
            keep = None if compact_to is None else {*compact_to, *(basename for _, _, basename in records)}
            self.rewrite(keep=keep)
            return
        text = "".join(format_record(uid, extensions, basename) for uid, extensions, basename in records)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                write_all(fd, text.encode("utf-8", errors="surrogateescape"))
                os.fdatasync(fd)
                status = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise MaildirError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc
        self._remember(records)
        self._size = self._offset = status.st_size
        self._mtime_ns = status.st_mtime_ns

    def rewrite(self, *, keep: Collection[str] | None = None) -> None:
        """Write the whole list anew (version 3; records whose basename is not in ``keep`` are dropped):
        ``dovecot-uidlist.tmp``, fsync, rename, fsync of the directory. The lock must be held."""
        if keep is not None:
            self._own()
            dropped = [basename for basename in self.uids if basename not in keep]
            for basename in dropped:
                self.extensions.pop(self.uids.pop(basename), None)
        self.version = UIDLIST_VERSION
        self.guid = self.guid or uuid.uuid4().hex
        header = f"{UIDLIST_VERSION} V{self.uidvalidity} N{self.next_uid} G{self.guid}"
        if self.header_extras:
            header += " " + self.header_extras
        extensions = self.extensions
        records = iter(self.uids.items())
        temporary = self.directory / UIDLIST_TEMPORARY
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                write_all(fd, (header + "\n").encode("utf-8", errors="surrogateescape"))
                # A few thousand records at a time: the whole text of 50,000 would be several MB at once.
                while chunk := [
                    format_record(uid, extensions.get(uid, ""), name)
                    for name, uid in itertools.islice(records, _RECORDS_PER_WRITE)
                ]:
                    write_all(fd, "".join(chunk).encode("utf-8", errors="surrogateescape"))
                os.fsync(fd)
                status = os.fstat(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            fsync_directory(self.directory)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise MaildirError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._identity = (status.st_dev, status.st_ino)
        self._size = self._offset = status.st_size
        self._mtime_ns = status.st_mtime_ns

    def _remember(self, records: Iterable[tuple[int, str, str]]) -> None:
        self._own()
        for uid, extensions, basename in records:
            previous = self.uids.pop(basename, None)
            if previous is not None:
                # Dovecot: the same file listed again under a newer UID (moved back after an expunge): newer
                # wins.
                self.extensions.pop(previous, None)
            self.uids[basename] = uid
            if extensions:
                self.extensions[uid] = extensions
            self.last_uid = uid
        self.next_uid = max(self.next_uid, self.last_uid + 1)


def _parse_v3_block(text: str) -> tuple[list[str], list[int], list[tuple[int, str]]] | None:
    """Basenames, UIDs and ``(uid, extensions)`` of complete, well-formed version 3 record lines; None if
    any line is unusual. Bulk operations only: every line holds exactly one `` :`` (a basename has no
    ``:``, an extension field starts with a capital letter), so replacing it by a line feed and splitting
    gives head, basename, head, basename..."""
    count = text.count("\n")
    if text.count(" :") != count or "/" in text:
        return None
    parts = text.replace(" :", "\n").split("\n")
    if len(parts) != 2 * count + 1:
        return None
    parts.pop()
    heads, names = parts[0::2], parts[1::2]
    del parts
    if "" in names:
        return None
    extensions: list[tuple[int, str]] = []
    if " " in "".join(heads):
        uid_texts, _, fields = zip(*map(str.partition, heads, itertools.repeat(" ")), strict=True)
        if not _V3_EXTENSIONS.fullmatch("\n".join(fields)):
            return None
    else:
        uid_texts, fields = tuple(heads), ()
    digits = "".join(uid_texts)
    if "" in uid_texts or not (digits.isascii() and digits.isdigit()):
        return None
    uids = list(map(int, uid_texts))
    if fields:
        extensions = list(filter(operator.itemgetter(1), zip(uids, fields, strict=True)))
    return names, uids, extensions


def format_record(uid: int, extensions: str, basename: str) -> str:
    return f"{uid} {extensions} :{basename}\n" if extensions else f"{uid} :{basename}\n"


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


# dovecot-keywords


class Keywords:
    """A folder's ``dovecot-keywords``: keyword names for the info-suffix letters ``a``-``z``.

    Names are matched without regard to case (as Dovecot does) and kept as first written. A letter without
    a name (the file was lost) reads as ``unknown-<index>``, Dovecot's name for it.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / KEYWORDS_FILE
        self.names: list[str | None] = [None] * MAX_KEYWORDS
        self._stamp: tuple[int, int, int] | None = None

    def copy(self) -> Keywords:
        twin = copy.copy(self)
        twin.names = list(self.names)
        return twin

    def unchanged_on_disk(self) -> bool:
        """Whether the file is as this view last read it (or still missing): one ``stat``, nothing read or
        changed. False when it cannot be told."""
        try:
            return self._disk_stamp() == self._stamp
        except OSError:
            return False

    def refresh(self) -> bool:
        """Re-read the file if it changed (by inode, size or mtime); True if the names changed."""
        stamp = self._disk_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        before = list(self.names)
        self.names = _read_keywords(self.path) if stamp is not None else [None] * MAX_KEYWORDS
        return self.names != before

    def _disk_stamp(self) -> tuple[int, int, int] | None:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (status.st_ino, status.st_size, status.st_mtime_ns)

    def name(self, letter: str) -> str:
        index = ord(letter) - ord(FIRST_KEYWORD_LETTER)
        return self.names[index] or f"unknown-{index}"

    def letter(self, name: str) -> str | None:
        """The letter of keyword ``name``, or None if it has none yet."""
        folded = name.casefold()
        for index, known in enumerate(self.names):
            if known is not None and known.casefold() == folded:
                return chr(ord(FIRST_KEYWORD_LETTER) + index)
        match = re.fullmatch(r"unknown-(\d+)", folded)
        if match and int(match[1]) < MAX_KEYWORDS and self.names[int(match[1])] is None:
            return chr(ord(FIRST_KEYWORD_LETTER) + int(match[1]))
        return None

    @property
    def defined(self) -> tuple[str, ...]:
        return tuple(name for name in self.names if name is not None)

    @property
    def full(self) -> bool:
        return all(name is not None for name in self.names)

    def add(self, names: Iterable[str]) -> list[str]:
        """Give each name that has no letter the first free one and write the file (the uidlist lock must
        be held, and :meth:`refresh` called under it). Returns the names that found no free letter."""
        without_letter = []
        added = False
        for name in names:
            if self.letter(name) is not None:
                continue
            try:
                free = self.names.index(None)
            except ValueError:
                without_letter.append(name)
                continue
            self.names[free] = name
            added = True
        if added:
            self._write()
        return without_letter

    def _write(self) -> None:
        content = "".join(f"{index} {name}\n" for index, name in enumerate(self.names) if name is not None)
        lock = DotLock(self.path, timeout=0)
        lock.lock_path.unlink(missing_ok=True)  # we hold the uidlist lock, which guards this one (as Dovecot)
        lock.acquire()
        # Dovecot notices a changed keywords file by its mtime in whole seconds: make the second grow.
        previous_second = self._stamp[2] // 1_000_000_000 if self._stamp else 0
        now_second = time.time_ns() // 1_000_000_000
        mtime_ns = None if now_second > previous_second else (previous_second + 1) * 1_000_000_000
        lock.replace(content.encode("utf-8", errors="surrogateescape"), mtime_ns=mtime_ns)
        status = os.stat(self.path)
        self._stamp = (status.st_ino, status.st_size, status.st_mtime_ns)


def _read_keywords(path: Path) -> list[str | None]:
    names: list[str | None] = [None] * MAX_KEYWORDS
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return names
    except OSError as exc:
        raise MaildirError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for line in text.split("\n"):
        index, _, name = line.partition(" ")
        if _is_number(index) and int(index) < MAX_KEYWORDS and name:
            names[int(index)] = name
    return names


# dovecot-uidvalidity

_last_fallback = 0


def next_uidvalidity(root: Path, *, clock: Callable[[], float] = time.time) -> int:
    """A new UIDVALIDITY from the Maildir root's ``dovecot-uidvalidity`` counter, shared with Dovecot:
    the marker ``dovecot-uidvalidity.<hex>`` is renamed to the next value, so two processes never get the
    same one. A missing or broken counter starts again from the current time."""
    path = root / UIDVALIDITY_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return _rescan_uidvalidity(root, clock)
    try:
        text = os.read(fd, 8).decode("ascii", errors="replace")
        if not _HEX8.fullmatch(text):
            return _rescan_uidvalidity(root, clock)
        value = _advance_marker(path, int(text, 16))
        if value is None:
            return _rescan_uidvalidity(root, clock)
        os.pwrite(fd, f"{value:08x}".encode(), 0)
        return value
    finally:
        os.close(fd)


def _advance_marker(path: Path, value: int) -> int | None:
    """Rename ``<path>.<value>`` to ``<path>.<value + 1>``; after a lost race, try the next values (as
    Dovecot does, 10 times)."""
    for _ in range(_UIDVALIDITY_ATTEMPTS):
        source = path.with_name(f"{path.name}.{value:08x}")
        value += 1
        try:
            os.rename(source, path.with_name(f"{path.name}.{value:08x}"))
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return value
    return None


def _rescan_uidvalidity(root: Path, clock: Callable[[], float]) -> int:
    path = root / UIDVALIDITY_FILE
    prefix = UIDVALIDITY_FILE + "."
    try:
        values = [
            int(name[len(prefix) :], 16)
            for name in os.listdir(root)
            if name.startswith(prefix) and _HEX8.fullmatch(name[len(prefix) :])
        ]
    except OSError:
        return _fallback_uidvalidity(clock)
    if not values:
        value = _fallback_uidvalidity(clock)
        try:
            os.close(os.open(path.with_name(f"{prefix}{value:08x}"), os.O_WRONLY | os.O_CREAT, FILE_MODE))
        except OSError:
            return value
    else:
        if min(values) != max(values):
            path.with_name(f"{prefix}{min(values):08x}").unlink(missing_ok=True)
        advanced = _advance_marker(path, max(values))
        if advanced is None:
            return _fallback_uidvalidity(clock)
        value = advanced
    _write_uidvalidity(path, value)
    return value


def _write_uidvalidity(path: Path, value: int) -> None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            os.pwrite(fd, f"{value:08x}".encode(), 0)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc.strerror or exc)


def _fallback_uidvalidity(clock: Callable[[], float]) -> int:
    """The current time, but never the same value twice in this process (Dovecot's fallback)."""
    global _last_fallback
    now = int(clock())
    _last_fallback = now if now > _last_fallback else _last_fallback + 1
    return _last_fallback
