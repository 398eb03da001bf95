"""When the reflector stays silent: mail that must not be answered automatically (RFC 3834), and the
per-address hourly limit.

RFC 3834 §2: an automatic response must not go to the null reverse-path (bounces), and should not
answer mail that is itself automatic (``Auto-Submitted`` other than ``no``) or that comes from a
mailing list (``Precedence: bulk|list|junk``, the ``List-*`` fields of RFC 2369 and RFC 2919).
Without these rules two responders, or a responder and a list, would answer each other forever.

The limit must hold across ``mailtoaster serve``'s worker processes (one per core by default), which
share nothing in memory; so the reports sent are counted in a small SQLite table in the data
directory, read and written in one ``BEGIN IMMEDIATE`` transaction, which SQLite serialises across
processes. Each check opens its own connection: forked workers never share one, and a check costs
well under a millisecond next to the DNS work of a report.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mailtoaster.message import Message

RATE_WINDOW = 3600.0
"""Seconds over which reports to one address are counted."""
RATE_LIMIT_FILE = "reflector.sqlite"
"""In the data directory."""
BUSY_TIMEOUT = 10.0
"""Seconds a check waits for another process's transaction on the table."""
BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
LIST_FIELDS = (
    "list-id",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-help",
    "list-owner",
    "list-archive",
)
"""RFC 2369 and RFC 2919: any of them marks mail from a mailing list."""
MAILER_DAEMON = frozenset({"mailer-daemon", "postmaster-daemon"})
"""Senders that are mail systems, not people (bounces sometimes come with a real reverse-path)."""


def suppression_reason(message: Message, mail_from: str) -> str | None:
    """Why this message gets no automatic answer (RFC 3834 §2), or None when it may get one."""
    if not mail_from:
        return "null sender"
    if mail_from.rpartition("@")[0].lower() in MAILER_DAEMON:
        return f"the sender <{mail_from}> is a mail system"
    auto = message.get("Auto-Submitted")
    if auto is not None and auto.value.split(";")[0].strip().lower() not in ("", "no"):
        return f"Auto-Submitted: {_short(auto.value)}"
    precedence = message.get("Precedence")
    if precedence is not None and precedence.value.strip().lower() in BULK_PRECEDENCE:
        return f"Precedence: {_short(precedence.value)}"
    for header in message.headers:
        if header.lower_name in LIST_FIELDS:
            return f"mailing-list mail ({header.name})"
    return None


def _short(value: str, limit: int = 60) -> str:
    printable = "".join(character if character.isprintable() else "?" for character in value)
    return printable if len(printable) <= limit else printable[:limit] + "..."


class RateLimitError(OSError):
    """The table of reports sent cannot be read or written."""


class ReportRateLimit:
    """At most ``limit`` reports to one address per hour, counted in ``<data_dir>/reflector.sqlite``.

    :meth:`reserve` counts a report before it is built; :meth:`release` takes the count back when
    storing it then failed (the client retries, and the retry must not find the quota used)."""

    def __init__(self, path: Path, limit: int, *, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._limit = limit
        self._clock = clock

    def reserve(self, address: str) -> bool:
        """Count one report to ``address`` if it is under the limit; False (nothing counted) if not."""
        now = self._clock()
        with self._transaction() as db:
            db.execute("DELETE FROM sent WHERE at <= ?", (now - RATE_WINDOW,))
            (count,) = db.execute(
                "SELECT count(*) FROM sent WHERE address = ? AND at > ?", (address.lower(), now - RATE_WINDOW)
            ).fetchone()
            if count >= self._limit:
                return False
            db.execute("INSERT INTO sent (address, at) VALUES (?, ?)", (address.lower(), now))
            return True

    def release(self, address: str) -> None:
        """Take back the latest count for ``address``."""
        with self._transaction() as db:
            db.execute(
                "DELETE FROM sent WHERE rowid = (SELECT max(rowid) FROM sent WHERE address = ?)",
                (address.lower(),),
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One connection and one ``BEGIN IMMEDIATE`` transaction, committed when the block ends
        normally; closing the connection rolls back anything else."""
        try:
            connection = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as error:
            raise RateLimitError(f"{self._path}: {error}") from error
        try:
            connection.execute("CREATE TABLE IF NOT EXISTS sent (address TEXT NOT NULL, at REAL NOT NULL)")
            connection.execute("CREATE INDEX IF NOT EXISTS sent_address ON sent (address, at)")
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            raise RateLimitError(f"{self._path}: {error}") from error
        finally:
            connection.close()
