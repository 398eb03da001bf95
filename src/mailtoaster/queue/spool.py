"""The durable on-disk queue: one message file and one JSON envelope per queued message.

Layout under the queue directory (``<data-dir>/queue``)::

    lock                 flock(2) target: serialises envelope rewrites between the server and the CLI
    tmp/                 files being written; anything left here after a crash is garbage
    messages/<id>        the message exactly as it will be sent (prefix + accepted data), mode 0600
    envelopes/<id>.json  sender, per-recipient state, attempts, times: the entry's commit point
    corrupt/             envelopes that cannot be read (and their messages), kept for the postmaster

The enqueue protocol, each step finished before the next starts:

1. write the message to ``tmp/<id>.message`` and fsync it;
2. rename it to ``messages/<id>`` and fsync ``messages/``;
3. write the envelope to ``tmp/<id>.envelope`` and fsync it;
4. rename it to ``envelopes/<id>.json`` and fsync ``envelopes/`` — **the commit point**.

A crash before step 4's rename leaves only a temporary file or a message without an envelope, which
:meth:`Queue.recover` deletes; after it the entry is complete, because the message was durable before
the envelope could be. Only then may the SMTP server answer ``250``. Removal runs the other way round
(envelope first), so an interrupted removal leaves an orphan message that recovery deletes, never an
envelope pointing at nothing. Envelope rewrites are a fsynced temporary file renamed over the old
one, under the ``lock`` file so the CLI's ``flush`` never overwrites a state the runner just saved.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, BinaryIO, TypeAlias

from mailtoaster.durable import fsync_directory
from mailtoaster.queue.address import check_address

log = logging.getLogger("mailtoaster.queue")

QUEUE_DIR_NAME = "queue"
CHUNK_SIZE = 64 * 1024
DIR_MODE = 0o700
FILE_MODE = 0o600
ENVELOPE_VERSION = 1
_ID_PATTERN = re.compile(r"^[0-9a-f]{13}-[0-9a-f]{10}$")

Clock: TypeAlias = Callable[[], float]
MessageSource: TypeAlias = Path | bytes | BinaryIO


class QueueError(Exception):
    """The queue cannot do what was asked; the message says what and why, in one line."""


class QueueNotFoundError(QueueError):
    """No queue exists at the directory given (and it was not to be created)."""


class EntryNotFoundError(QueueError):
    """No entry with this id (never queued, already delivered, or deleted)."""


class InvalidQueueIdError(QueueError):
    """A string that cannot be a queue id (ids are checked before they become file names)."""


class CorruptEntryError(QueueError):
    """An envelope file that does not hold a valid envelope."""


class RecipientState(enum.StrEnum):
    PENDING = "pending"
    """Not yet delivered: retried on schedule."""
    DELIVERED = "delivered"
    """A receiving server answered 2xx to the data."""
    BOUNCED = "bounced"
    """Failed permanently (5xx, or the queue lifetime ran out): the sender gets a DSN."""


@dataclass(frozen=True)
class Recipient:
    address: str
    state: RecipientState = RecipientState.PENDING
    status: str = ""
    """RFC 3463 enhanced status of the last result, e.g. ``4.4.1`` or ``5.1.1``."""
    diagnostic: str = ""
    """The last reply in RFC 3464 Diagnostic-Code form, e.g. ``smtp; 550 5.1.1 no such user``."""
    remote_mta: str = ""
    """The host that gave that reply (empty when the result was decided locally, e.g. by DNS)."""
    reported: bool = False
    """For a bounced recipient: the DSN has been handed over (or dropped, for the null sender).
    Stored so a crash between recording a bounce and sending its DSN resends the DSN, not loses it."""


@dataclass(frozen=True)
class QueueEntry:
    id: str
    sender: str
    """The reverse-path; ``""`` is the null sender of bounces, which never get a bounce back."""
    recipients: tuple[Recipient, ...]
    created: float
    next_attempt: float
    size: int
    attempts: int = 0

    @property
    def pending(self) -> tuple[Recipient, ...]:
        return tuple(r for r in self.recipients if r.state is RecipientState.PENDING)

    @property
    def unreported_bounces(self) -> tuple[Recipient, ...]:
        return tuple(r for r in self.recipients if r.state is RecipientState.BOUNCED and not r.reported)

    @property
    def finished(self) -> bool:
        """Nothing left to do: every recipient delivered, or bounced and reported."""
        return not self.pending and not self.unreported_bounces

    def age(self, now: float) -> float:
        return max(0.0, now - self.created)


@dataclass(frozen=True)
class RecoveryReport:
    """What :meth:`Queue.recover` cleaned up (file names for temporary files, ids otherwise)."""

    temporary_files: tuple[str, ...] = ()
    orphan_messages: tuple[str, ...] = ()
    corrupt_entries: tuple[str, ...] = ()
    complete_entries: int = 0


@dataclass
class _Paths:
    root: Path
    tmp: Path = field(init=False)
    messages: Path = field(init=False)
    envelopes: Path = field(init=False)
    corrupt: Path = field(init=False)
    lock: Path = field(init=False)

    def __post_init__(self) -> None:
        self.tmp = self.root / "tmp"
        self.messages = self.root / "messages"
        self.envelopes = self.root / "envelopes"
        self.corrupt = self.root / "corrupt"
        self.lock = self.root / "lock"

    def directories(self) -> tuple[Path, ...]:
        return (self.root, self.tmp, self.messages, self.envelopes, self.corrupt)

    def message(self, entry_id: str) -> Path:
        return self.messages / entry_id

    def envelope(self, entry_id: str) -> Path:
        return self.envelopes / f"{entry_id}.json"


def queue_directory(data_dir: Path | str) -> Path:
    """Where the queue of a data directory lives: ``<data-dir>/queue``."""
    return Path(data_dir) / QUEUE_DIR_NAME


def new_queue_id(now: float) -> str:
    """A fresh id: 13 hex digits of microseconds since the epoch, ``-``, 10 random hex digits.

    Fixed width, so ids sort by arrival time as strings; only ``[0-9a-f-]``, so safe as file names.
    """
    return f"{max(0, int(now * 1_000_000)):013x}-{secrets.token_hex(5)}"


def check_queue_id(entry_id: str) -> str:
    if not _ID_PATTERN.match(entry_id):
        raise InvalidQueueIdError(f"{entry_id!r} is not a queue id (like 0614a3b2c1d00-7f3a9c21e4)")
    return entry_id


def _source_chunks(message: MessageSource, prefix: bytes) -> Iterator[bytes]:
    """The message as chunks of at most :data:`CHUNK_SIZE` bytes, never all of it at once."""
    if prefix:
        yield prefix
    if isinstance(message, bytes | bytearray | memoryview):
        yield bytes(message)
        return
    if isinstance(message, Path):
        with message.open("rb") as stream:
            yield from _stream_chunks(stream)
        return
    yield from _stream_chunks(message)


def _stream_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_SIZE):
        yield chunk


def _write_durably(path: Path, chunks: Iterable[bytes]) -> int:
    """Create ``path`` (it must not exist), write the chunks, fsync; return the number of bytes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    size = 0
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


def _unlink_quietly(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def envelope_json(entry: QueueEntry) -> bytes:
    document = {
        "version": ENVELOPE_VERSION,
        "id": entry.id,
        "sender": entry.sender,
        "created": entry.created,
        "next_attempt": entry.next_attempt,
        "attempts": entry.attempts,
        "size": entry.size,
        "recipients": [
            {
                "address": r.address,
                "state": r.state.value,
                "status": r.status,
                "diagnostic": r.diagnostic,
                "remote_mta": r.remote_mta,
                "reported": r.reported,
            }
            for r in entry.recipients
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"


def _value(document: dict[str, object], name: str) -> object:
    if name not in document:
        raise CorruptEntryError(f"envelope field {name!r} is missing")
    return document[name]


def _wrong_type(name: str, value: object) -> CorruptEntryError:
    return CorruptEntryError(f"envelope field {name!r} has the wrong type ({type(value).__name__})")


def _text(document: dict[str, object], name: str) -> str:
    value = _value(document, name)
    if not isinstance(value, str):
        raise _wrong_type(name, value)
    return value


def _integer(document: dict[str, object], name: str) -> int:
    value = _value(document, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type(name, value)
    return value


def _time(document: dict[str, object], name: str) -> float:
    value = _value(document, name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _wrong_type(name, value)
    return float(value)


def _flag(document: dict[str, object], name: str) -> bool:
    value = _value(document, name)
    if not isinstance(value, bool):
        raise _wrong_type(name, value)
    return value


def _recipient_from_json(value: object) -> Recipient:
    if not isinstance(value, dict):
        raise CorruptEntryError("envelope recipient is not an object")
    try:
        state = RecipientState(_text(value, "state"))
    except ValueError:
        raise CorruptEntryError(f"unknown recipient state {value.get('state')!r}") from None
    return Recipient(
        address=_text(value, "address"),
        state=state,
        status=_text(value, "status"),
        diagnostic=_text(value, "diagnostic"),
        remote_mta=_text(value, "remote_mta"),
        reported=_flag(value, "reported"),
    )


def entry_from_json(data: bytes) -> QueueEntry:
    """Parse an envelope file; :class:`CorruptEntryError` for anything that is not a valid envelope."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptEntryError(f"envelope is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CorruptEntryError("envelope is not a JSON object")
    if document.get("version") != ENVELOPE_VERSION:
        raise CorruptEntryError(f"unknown envelope version {document.get('version')!r}")
    recipients = _value(document, "recipients")
    if not isinstance(recipients, list) or not recipients:
        raise CorruptEntryError("envelope has no list of recipients")
    try:
        entry_id = check_queue_id(_text(document, "id"))
    except InvalidQueueIdError as exc:
        raise CorruptEntryError(str(exc)) from None
    return QueueEntry(
        id=entry_id,
        sender=_text(document, "sender"),
        recipients=tuple(_recipient_from_json(r) for r in recipients),
        created=_time(document, "created"),
        next_attempt=_time(document, "next_attempt"),
        size=_integer(document, "size"),
        attempts=_integer(document, "attempts"),
    )


@contextlib.contextmanager
def _reported_as_queue_error(action: str) -> Iterator[None]:
    """Turn an operating-system error into a one-line :class:`QueueError` naming the action."""
    try:
        yield
    except OSError as exc:
        raise QueueError(f"cannot {action}: {exc.strerror or exc} ({exc.filename or 'queue'})") from exc


class Queue:
    """The queue in one directory. Safe for one server process plus CLI commands at the same time.

    ``clock`` gives the time of arrival for new entries (tests pass a fake one); every other time is
    an argument. The methods do blocking file I/O with fsync: call them from a worker thread in
    asyncio code (the runner does).
    """

    def __init__(self, directory: Path | str, *, clock: Clock = time.time, create: bool = True) -> None:
        self._paths = _Paths(Path(directory))
        self._clock = clock
        if create:
            for path in self._paths.directories():
                path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        elif not self._paths.envelopes.is_dir():
            raise QueueNotFoundError(f"no queue at {self._paths.root}")

    @property
    def directory(self) -> Path:
        return self._paths.root

    def message_path(self, entry_id: str) -> Path:
        return self._paths.message(check_queue_id(entry_id))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._paths.lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    # -- adding ---------------------------------------------------------------------------------

    def enqueue(
        self,
        message: MessageSource,
        sender: str,
        recipients: Sequence[str],
        *,
        prefix: bytes = b"",
    ) -> QueueEntry:
        """Store a message durably; when this returns, the message survives a crash.

        ``prefix`` (e.g. ``Received:`` and ``DKIM-Signature:`` fields) is written before the message.
        A path or stream is copied in chunks, never read whole. On any error nothing is left queued
        (:class:`QueueError`, or :class:`~mailtoaster.queue.address.InvalidAddressError` for a bad
        address, before anything is written).
        """
        check_address(sender, role="sender", allow_null=True)
        unique_recipients = tuple(dict.fromkeys(check_address(r) for r in recipients))
        if not unique_recipients:
            raise QueueError("a message needs at least one recipient")
        now = self._clock()
        entry_id = new_queue_id(now)
        temporary = self._paths.tmp / f"{entry_id}.message"
        try:
            size = _write_durably(temporary, _source_chunks(message, prefix))
            os.replace(temporary, self._paths.message(entry_id))
            fsync_directory(self._paths.messages)
            entry = QueueEntry(
                id=entry_id,
                sender=sender,
                recipients=tuple(Recipient(address) for address in unique_recipients),
                created=now,
                next_attempt=now,
                size=size,
            )
            self._commit_envelope(entry)
        except Exception as exc:
            self._discard(entry_id)
            raise QueueError(f"cannot queue the message: {exc}") from exc
        return entry

    def _commit_envelope(self, entry: QueueEntry) -> None:
        """Write the envelope to a temporary file, fsync, rename into place, fsync the directory."""
        temporary = self._paths.tmp / f"{entry.id}.envelope"
        _unlink_quietly(temporary)
        _write_durably(temporary, [envelope_json(entry)])
        os.replace(temporary, self._paths.envelope(entry.id))
        fsync_directory(self._paths.envelopes)

    def _discard(self, entry_id: str) -> None:
        """Best-effort undo of a failed enqueue (a crash instead leaves what :meth:`recover` removes)."""
        paths = self._paths
        _unlink_quietly(paths.envelope(entry_id), paths.message(entry_id))
        _unlink_quietly(paths.tmp / f"{entry_id}.message", paths.tmp / f"{entry_id}.envelope")

    # -- reading --------------------------------------------------------------------------------

    def _read_entry(self, entry_id: str) -> QueueEntry:
        try:
            data = self._paths.envelope(entry_id).read_bytes()
        except FileNotFoundError:
            raise EntryNotFoundError(f"no message {entry_id} in the queue") from None
        entry = entry_from_json(data)
        if entry.id != entry_id:
            raise CorruptEntryError(f"envelope {entry_id}.json holds the id {entry.id}")
        return entry

    def _entry_ids(self) -> list[str]:
        names = (path.name.removesuffix(".json") for path in self._paths.envelopes.glob("*.json"))
        return sorted(name for name in names if _ID_PATTERN.match(name))

    def get(self, entry_id: str) -> QueueEntry:
        return self._read_entry(check_queue_id(entry_id))

    def entries(self) -> list[QueueEntry]:
        """Every complete entry, oldest first. Unreadable envelopes are logged and skipped."""
        found: list[QueueEntry] = []
        for entry_id in self._entry_ids():
            try:
                found.append(self._read_entry(entry_id))
            except EntryNotFoundError:
                continue  # removed since the directory was listed
            except CorruptEntryError as exc:
                log.warning("queue id=%s unreadable envelope skipped: %s", entry_id, exc)
        return found

    def due(self, now: float) -> list[QueueEntry]:
        """Entries whose next attempt is at or before ``now``, earliest first."""
        ready = [entry for entry in self.entries() if entry.next_attempt <= now]
        return sorted(ready, key=lambda entry: (entry.next_attempt, entry.id))

    def open_message(self, entry_id: str) -> BinaryIO:
        try:
            return self.message_path(entry_id).open("rb")
        except FileNotFoundError:
            raise EntryNotFoundError(f"no message {entry_id} in the queue") from None

    # -- changing -------------------------------------------------------------------------------

    def update(self, entry: QueueEntry) -> None:
        """Atomically replace the stored envelope of ``entry``.

        :class:`EntryNotFoundError` if the entry was removed meanwhile (e.g. ``queue delete`` while a
        delivery was in flight): a removed entry is never brought back.
        """
        check_queue_id(entry.id)
        with _reported_as_queue_error(f"update {entry.id}"), self._locked():
            if not self._paths.envelope(entry.id).exists():
                raise EntryNotFoundError(f"no message {entry.id} in the queue")
            self._commit_envelope(entry)

    def flush(self, now: float) -> int:
        """Make every entry due at ``now`` (``queue flush``); return how many were rescheduled."""
        rescheduled = 0
        with _reported_as_queue_error("flush the queue"), self._locked():
            for entry_id in self._entry_ids():
                try:
                    entry = self._read_entry(entry_id)
                except QueueError:
                    continue
                if entry.next_attempt > now:
                    self._commit_envelope(replace(entry, next_attempt=now))
                    rescheduled += 1
        return rescheduled

    def remove(self, entry_id: str) -> None:
        """Delete an entry: the envelope first (un-commit), then the message."""
        paths = self._paths
        check_queue_id(entry_id)
        with _reported_as_queue_error(f"remove {entry_id}"), self._locked():
            try:
                paths.envelope(entry_id).unlink()
            except FileNotFoundError:
                raise EntryNotFoundError(f"no message {entry_id} in the queue") from None
            fsync_directory(paths.envelopes)
            paths.message(entry_id).unlink(missing_ok=True)

    # -- start-up -------------------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Clean up after a crash; call at start-up, before anything is enqueued.

        Deletes temporary files and messages without an envelope (enqueues that never reached their
        commit point), moves unreadable envelopes and envelopes without a message to ``corrupt/``, and
        keeps every complete entry.
        """
        with _reported_as_queue_error("recover the queue"), self._locked():
            temporary = self._remove_temporary_files()
            envelope_ids = set(self._entry_ids())
            orphans = self._remove_orphan_messages(envelope_ids)
            corrupt = [entry_id for entry_id in sorted(envelope_ids) if not self._is_complete(entry_id)]
            for entry_id in corrupt:
                self._move_to_corrupt(entry_id)
        report = RecoveryReport(
            temporary_files=tuple(temporary),
            orphan_messages=tuple(orphans),
            corrupt_entries=tuple(corrupt),
            complete_entries=len(envelope_ids) - len(corrupt),
        )
        if temporary or orphans or corrupt:
            log.warning(
                "queue recovery: removed %d temporary file(s) and %d orphan message(s); "
                "moved %d corrupt entr(y/ies) to %s",
                len(temporary),
                len(orphans),
                len(corrupt),
                self._paths.corrupt,
            )
        return report

    def _remove_temporary_files(self) -> list[str]:
        removed = sorted(path.name for path in self._paths.tmp.iterdir())
        _unlink_quietly(*(self._paths.tmp / name for name in removed))
        return removed

    def _remove_orphan_messages(self, envelope_ids: set[str]) -> list[str]:
        orphans = sorted(
            path.name
            for path in self._paths.messages.iterdir()
            if _ID_PATTERN.match(path.name) and path.name not in envelope_ids
        )
        _unlink_quietly(*(self._paths.message(entry_id) for entry_id in orphans))
        return orphans

    def _is_complete(self, entry_id: str) -> bool:
        try:
            self._read_entry(entry_id)
        except CorruptEntryError as exc:
            log.error("queue id=%s corrupt envelope: %s", entry_id, exc)
            return False
        if not self._paths.message(entry_id).is_file():
            log.error("queue id=%s envelope without a message file", entry_id)
            return False
        return True

    def _move_to_corrupt(self, entry_id: str) -> None:
        for path in (self._paths.envelope(entry_id), self._paths.message(entry_id)):
            if path.exists():
                os.replace(path, self._paths.corrupt / path.name)
