"""The header cache of a folder: the values of the header fields SEARCH has looked for, per message, in
a file in the folder (``mailtoaster-header.cache``, SQLite), so that a repeated header search reads no
message file, as Dovecot answers one from ``dovecot.index.cache``.

What is kept: for each field name a search asked for (``subject``, ``from``, ``date``...), and for each
message whose header was read for it, the field's values as the search reads them (every instance,
unfolded, in order; none when the message has no such field). Keys are the message's Maildir base name
(the file name up to ``:2,``): it stays when the flags (and so the file name) change, and names one
message's content for good, so an entry never goes stale; entries of messages that are gone are
dropped when they are many (:data:`PRUNE_SLACK`). A message whose values take more than
:data:`MAX_ENTRY_BYTES` is not kept and read from its file each time.

The cache is only ever a copy: the file can be deleted at any time; if it cannot be read or written
(a read-only folder directory, a corrupt file, a lock held too long), searches read the message files
as before. A corrupt file is removed. Dovecot and Courier ignore the file (not a folder: no leading
dot, not a directory); DELETE and RENAME of the folder take it along with the directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import struct
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

log = logging.getLogger("mailtoaster.imap")

CACHE_NAME = "mailtoaster-header.cache"
SCHEMA_VERSION = 1
MAX_ENTRY_BYTES = 16 * 1024
"""The values of one field of one message kept at most (larger: read from the file every time)."""
PRUNE_SLACK = 1000
"""Entries of messages no longer in the folder tolerated per field before they are deleted."""
LOCK_TIMEOUT = 2.0
"""Seconds to wait for another writer; after that the cache is skipped this time."""

_NONE = b"\x00"
_ONE = b"\x01"
_MANY = b"\x02"
_LENGTH = struct.Struct(">I")


def encode_values(values: list[bytes]) -> bytes:
    """Field values as one blob: a tag byte, then the one value or length-prefixed values."""
    if not values:
        return _NONE
    if len(values) == 1:
        return _ONE + values[0]
    return _MANY + b"".join(_LENGTH.pack(len(value)) + value for value in values)


def decode_values(blob: bytes) -> list[bytes] | None:
    """What :func:`encode_values` made (None for a blob it did not make)."""
    tag = blob[:1]
    if tag == _ONE:
        return [blob[1:]]
    if tag == _NONE and len(blob) == 1:
        return []
    if tag != _MANY:
        return None
    values = []
    position = 1
    while position < len(blob):
        if position + _LENGTH.size > len(blob):
            return None
        (size,) = _LENGTH.unpack_from(blob, position)
        position += _LENGTH.size
        if position + size > len(blob):
            return None
        values.append(blob[position : position + size])
        position += size
    return values


class HeaderCache:
    """The cache file of one folder directory. Each call opens the file, does its work in one
    transaction and closes it, so any thread (and any process) may use it."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / CACHE_NAME

    def load(self, field: str, basenames: Collection[str]) -> dict[str, bytes]:
        """The encoded values (:func:`decode_values`) of ``field`` for those of ``basenames`` that are
        cached. Drops the field's entries of other messages when there are more than
        :data:`PRUNE_SLACK` of them. Empty when the cache cannot be read."""
        if not self.path.exists():
            return {}
        try:
            with self._connection() as db:
                rows = db.execute("SELECT basename, value FROM header_fields WHERE field = ?", (field,))
                found: dict[str, bytes] = dict(rows)
                stale = found.keys() - basenames
                if len(stale) > PRUNE_SLACK:
                    db.executemany(
                        "DELETE FROM header_fields WHERE field = ? AND basename = ?",
                        ((field, basename) for basename in stale),
                    )
        except sqlite3.Error as error:
            self._failed(error)
            return {}
        return found

    def save(self, field: str, entries: Mapping[str, bytes]) -> None:
        """Add encoded values of ``field`` (base name → :func:`encode_values`), skipping any larger
        than :data:`MAX_ENTRY_BYTES`."""
        rows = [
            (field, basename, value) for basename, value in entries.items() if len(value) <= MAX_ENTRY_BYTES
        ]
        if not rows:
            return
        try:
            with self._connection(create=True) as db:
                db.executemany(
                    "INSERT OR REPLACE INTO header_fields (field, basename, value) VALUES (?, ?, ?)", rows
                )
        except sqlite3.Error as error:
            self._failed(error)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @contextlib.contextmanager
    def _connection(self, *, create: bool = False) -> Iterator[sqlite3.Connection]:
        if not create and not self.path.exists():
            raise sqlite3.OperationalError("no cache file")
        db = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous = OFF")  # a copy: a torn file is found corrupt and rebuilt
            db.execute("BEGIN IMMEDIATE" if create else "BEGIN")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                if not create:
                    raise sqlite3.OperationalError("cache file of another version")
                db.execute("DROP TABLE IF EXISTS header_fields")
                db.execute(
                    "CREATE TABLE header_fields (field TEXT NOT NULL, basename TEXT NOT NULL,"
                    " value BLOB NOT NULL, PRIMARY KEY (field, basename)) WITHOUT ROWID"
                )
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            yield db
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _failed(self, error: sqlite3.Error) -> None:
        if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
            log.warning("header cache %s is damaged, removing it: %s", self.path, error)
            with contextlib.suppress(OSError):
                self.clear()
            return
        log.debug("header cache %s skipped: %s", self.path, error)
