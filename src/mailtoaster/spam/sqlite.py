"""The embedded token store: one SQLite database in WAL mode.

Layout (``<data-dir>/spam/tokens.sqlite``)::

    tokens  (scope, token, spam, ham, learned)  WITHOUT ROWID, primary key (scope, token)
    totals  (scope, spam, ham)
    learned (scope, digest, label)              WITHOUT ROWID, primary key (scope, digest)
    scopes  (id, user)                          the global scope is 0 and has no row

``tokens`` is keyed by (scope, token) and stored without a rowid, so the row *is* the index entry:
a look-up is one B-tree descent and a scope's rows sit together. Scoring asks for all of a message's
tokens in one statement (the list travels as one JSON array, unpacked by ``json_each`` inside SQLite),
so a message costs one round trip however many tokens it has; learning writes them with one
``INSERT ... SELECT ... ON CONFLICT`` the same way.

WAL lets the server's scoring threads read while a learner writes; ``synchronous=NORMAL`` means a
commit is durable once the WAL is checkpointed (a power cut may lose the last learned messages, never
corrupt the database; for a statistical filter that is the right trade). Each ``learn`` is one
``BEGIN IMMEDIATE`` transaction, so a message is counted whole or not at all, even with several
processes learning at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from operator import itemgetter
from pathlib import Path

from mailtoaster.spam.counts import CountsTable
from mailtoaster.spam.store import Label, StoreStats, TokenCounts, TokenStoreUnavailable, Totals, as_label

GLOBAL_SCOPE = 0
CACHE_ENTRIES = 200_000
"""Token counts kept in memory between calls (about 30 MB); past it the cache starts again."""
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scopes (id INTEGER PRIMARY KEY, user TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS totals (
    scope INTEGER PRIMARY KEY,
    spam INTEGER NOT NULL DEFAULT 0,
    ham INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    scope INTEGER NOT NULL,
    token TEXT NOT NULL,
    spam INTEGER NOT NULL,
    ham INTEGER NOT NULL,
    learned REAL NOT NULL,
    PRIMARY KEY (scope, token)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS learned (
    scope INTEGER NOT NULL,
    digest TEXT NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (scope, digest)
) WITHOUT ROWID;
"""

_COUNTS = "SELECT token, spam, ham FROM tokens WHERE scope = ? AND token IN (SELECT value FROM json_each(?))"
_first = itemgetter(0)
_pair = itemgetter(1, 2)
_ADD = {
    label: f"INSERT INTO tokens (scope, token, spam, ham, learned) "
    f"SELECT ?, value, {int(label == 'spam')}, {int(label == 'ham')}, ? FROM json_each(?) WHERE true "
    f"ON CONFLICT (scope, token) DO UPDATE SET {label} = {label} + 1, learned = excluded.learned"
    for label in ("spam", "ham")
}
_REMOVE = {
    label: f"UPDATE tokens SET {label} = MAX({label} - 1, 0) "
    "WHERE scope = ? AND token IN (SELECT value FROM json_each(?))"
    for label in ("spam", "ham")
}
_DROP_EMPTY = (
    "DELETE FROM tokens WHERE scope = ? AND spam = 0 AND ham = 0 "
    "AND token IN (SELECT value FROM json_each(?))"
)
_TOTALS_STEP = {
    label: f"INSERT INTO totals (scope, {label}) VALUES (?, MAX(?, 0)) "
    f"ON CONFLICT (scope) DO UPDATE SET {label} = MAX({label} + ?, 0)"
    for label in ("spam", "ham")
}


class SqliteTokenStore:
    """A :class:`~mailtoaster.spam.store.TokenStore` in one SQLite file; safe to share between
    threads (one connection behind a lock) and between processes (SQLite's locking)."""

    def __init__(
        self, path: str | Path, *, timeout: float = 10.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._scopes: dict[str, int] = {}
        self._batch_depth = 0
        self._cache: dict[int, dict[str, tuple[int, int] | None]] = {}
        """scope -> token -> (spam, ham), None for a token the scope does not know"""
        self._cache_version = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise TokenStoreUnavailable(f"{self.path}: cannot open the token database: {exc}") from exc
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._db.close()
            raise TokenStoreUnavailable(f"{self.path}: not a usable token database: {exc}") from exc

    def _setup(self) -> None:
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA cache_size = -65536")
        self._db.execute("PRAGMA mmap_size = 268435456")
        self._db.executescript(_SCHEMA)
        found = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if found is None:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif found[0] != str(SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"schema version {found[0]}, this program knows {SCHEMA_VERSION}")

    @contextmanager
    def _guard(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise TokenStoreUnavailable(f"{self.path}: {what}: {exc}") from exc

    # Reading --------------------------------------------------------------------------------------

    def _scope(self, user: str | None) -> int | None:
        """The scope id of ``user`` (None: that user never learned anything)."""
        if user is None:
            return GLOBAL_SCOPE
        scope = self._scopes.get(user)
        if scope is None:
            row = self._db.execute("SELECT id FROM scopes WHERE user = ?", (user,)).fetchone()
            if row is None:
                return None
            scope = self._scopes[user] = int(row[0])
        return scope

    def totals(self, user: str | None = None) -> Totals:
        with self._guard("reading totals") as db:
            scope = self._scope(user)
            if scope is None:
                return Totals(0, 0)
            row = db.execute("SELECT spam, ham FROM totals WHERE scope = ?", (scope,)).fetchone()
            return Totals(int(row[0]), int(row[1])) if row else Totals(0, 0)

    def counts(self, tokens: Collection[str], user: str | None = None) -> Mapping[str, TokenCounts]:
        """One statement for the tokens not in the read cache. The cache holds what earlier calls
        read (unknown tokens too) and is emptied whenever the database changes — by this connection's
        own writes, or by any other's commit, which ``PRAGMA data_version`` tells — so it never
        answers with an old count: scoring between learns reads most tokens from memory."""
        if not tokens:
            return CountsTable({})
        with self._guard("reading token counts") as db:
            scope = self._scope(user)
            if scope is None:
                return CountsTable({})
            cache = self._fresh_cache(db, scope)
            if len(cache) + len(tokens) > CACHE_ENTRIES:
                cache.clear()
            missing = set(tokens).difference(cache)
            if missing:
                rows = db.execute(_COUNTS, (scope, _json_list(missing))).fetchall()
                cache.update(dict.fromkeys(missing))
                cache.update(zip(map(_first, rows), map(_pair, rows), strict=True))
            # C-level throughout: unknown tokens stay in the table as None (see CountsTable)
            return CountsTable(dict(zip(tokens, map(cache.__getitem__, tokens), strict=True)))

    def _fresh_cache(self, db: sqlite3.Connection, scope: int) -> dict[str, tuple[int, int] | None]:
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._cache_version:
            self._cache.clear()
            self._cache_version = version
        return self._cache.setdefault(scope, {})

    def learned_as(self, digest: str, user: str | None = None) -> Label | None:
        with self._guard("reading learned messages") as db:
            scope = self._scope(user)
            if scope is None:
                return None
            row = db.execute(
                "SELECT label FROM learned WHERE scope = ? AND digest = ?", (scope, digest)
            ).fetchone()
        return as_label(row[0]) if row else None

    # Writing --------------------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group many :meth:`learn` calls into one transaction (``sa-learn`` over a folder): one
        commit instead of one per message. Everything in the batch is undone if it raises."""
        with self._guard("learning") as db:
            if self._batch_depth == 0:
                db.execute("BEGIN IMMEDIATE")
            self._batch_depth += 1
            try:
                yield
            except BaseException:
                self._batch_depth -= 1
                if self._batch_depth == 0:
                    self._scopes.clear()  # a scope made in this transaction is gone again
                    self._cache.clear()
                    db.execute("ROLLBACK")
                raise
            self._batch_depth -= 1
            if self._batch_depth == 0:
                db.execute("COMMIT")

    def learn(
        self, digest: str, tokens: Collection[str], label: Label | None, user: str | None = None
    ) -> Label | None:
        listed = _json_list(tokens)
        now = self._clock()
        with self.batch(), self._guard("learning") as db:
            self._cache.clear()
            before = self._learn_scope(db, GLOBAL_SCOPE, digest, listed, label, now)
            if user is not None:
                scope = self._scope(user)
                if scope is None and label is not None:
                    scope = self._new_scope(db, user)
                before = None if scope is None else self._learn_scope(db, scope, digest, listed, label, now)
            return before

    def _new_scope(self, db: sqlite3.Connection, user: str) -> int:
        cursor = db.execute("INSERT INTO scopes (user) VALUES (?)", (user,))
        scope = int(cursor.lastrowid or 0)
        self._scopes[user] = scope
        return scope

    def _learn_scope(
        self, db: sqlite3.Connection, scope: int, digest: str, tokens: str, label: Label | None, now: float
    ) -> Label | None:
        row = db.execute(
            "SELECT label FROM learned WHERE scope = ? AND digest = ?", (scope, digest)
        ).fetchone()
        before = as_label(row[0]) if row else None
        if before == label:
            return before
        if before is not None:
            db.execute(_REMOVE[before], (scope, tokens))
            db.execute(_DROP_EMPTY, (scope, tokens))
            db.execute(_TOTALS_STEP[before], (scope, -1, -1))
            db.execute("DELETE FROM learned WHERE scope = ? AND digest = ?", (scope, digest))
        if label is not None:
            db.execute(_ADD[label], (scope, now, tokens))
            db.execute(_TOTALS_STEP[label], (scope, 1, 1))
            db.execute("INSERT INTO learned (scope, digest, label) VALUES (?, ?, ?)", (scope, digest, label))
        return before

    def expire(self, unused_since: float) -> int:
        with self._guard("expiring tokens") as db:
            self._cache.clear()
            cursor = db.execute("DELETE FROM tokens WHERE learned < ? AND spam + ham <= 1", (unused_since,))
            return max(0, cursor.rowcount)

    # Looking after it -----------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        with self._guard("reading statistics") as db:
            tokens = db.execute("SELECT COUNT(*) FROM tokens WHERE scope = ?", (GLOBAL_SCOPE,)).fetchone()[0]
            users = db.execute("SELECT COUNT(*) FROM scopes").fetchone()[0]
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
        wal = self.path.with_name(self.path.name + "-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
        return StoreStats(self.totals(), int(tokens), int(users), int(pages) * int(page_size) + wal_size)

    def close(self) -> None:
        with self._lock, suppress(sqlite3.Error):
            self._db.close()


def _json_list(tokens: Collection[str]) -> str:
    """The distinct tokens as one JSON array (what ``json_each`` unpacks). A token that is not valid
    Unicode (a lone surrogate, which some codecs produce) is stored with ``?`` in its place."""
    text = json.dumps(list(dict.fromkeys(tokens)))
    if "\\ud" in text:  # maybe a lone surrogate, which SQLite would store as invalid UTF-8
        valid = [token.encode("utf-8", "replace").decode("utf-8") for token in dict.fromkeys(tokens)]
        text = json.dumps(valid)
    return text
