"""The embedded token store: one SQLite database in WAL mode.

Layout (``<data-dir>/spam/tokens.sqlite``, schema version 2)::

    tokens  (scope, id, spam, ham, learned)     WITHOUT ROWID, primary key (scope, id)
    journal (seq, scope, label, learned, ids)   learned messages not yet folded into tokens
    totals  (scope, spam, ham)
    learned (scope, digest, label)              WITHOUT ROWID, primary key (scope, digest)
    scopes  (id, user)                          the global scope is 0 and has no row
    meta    (key, value)                        'schema' = '2'; 'folds', a counter of folds;
                                                'tokens', a random value new at each change of tokens

``tokens`` is keyed by (scope, token id) and stored without a rowid, so the row *is* the index entry:
a look-up is one B-tree descent and a scope's rows sit together. The token id is a 63-bit integer
computed from the token's text (:func:`token_id`), as SpamAssassin keeps 5-byte token ids rather than
the text: the rows are about half as long, the file less than half as large. The text itself is not
kept (``counts()`` answers by the tokens it was asked about). ``learned`` is Unix time in whole
seconds.

Scoring reads a scope's whole ``tokens`` table into memory once (an image, see
:meth:`SqliteTokenStore._image`; read again after ``tokens`` changes, which a new random
``meta.tokens`` marks; kept in a file for the next connection, see :mod:`~mailtoaster.spam.imagefile`)
and answers from it. Without an image (inside a learning batch, or a scope past :data:`IMAGE_ROWS`),
it asks for all of a message's tokens in one statement (the ids travel as one JSON array, unpacked by
``json_each`` inside SQLite), so a message costs one round trip however many tokens it has.

Learning appends one ``journal`` row per message and scope (its token ids as one JSON array): a
commit writes a page or two, where updating ``tokens`` row by row rewrote the ~300 leaf pages a
message's tokens are spread over. Every :data:`JOURNAL_FOLD` rows the journal is folded into
``tokens`` with one ``INSERT ... SELECT ... GROUP BY ... ON CONFLICT`` (each page written once for
all of them) and emptied, in the same transaction. Reading adds the journal's counts, which every
connection keeps summed in memory (read again only when the file changed), to what ``tokens`` says,
so a learn is seen at once. Taking counts away (moving or forgetting a message), ``expire`` and
``stats`` fold first.

Schema version 1 (the token text as the key) is rewritten to version 2 once, when a program that
knows version 2 first opens the file (one transaction; the counts are kept).

WAL lets the server's scoring threads read while a learner writes; ``synchronous=NORMAL`` means a
commit is durable once the WAL is checkpointed (a power cut may lose the last learned messages, never
corrupt the database; for a statistical filter that is the right trade). Each ``learn`` is one
``BEGIN IMMEDIATE`` transaction, so a message is counted whole or not at all, even with several
processes learning at once.
"""

from __future__ import annotations

import json
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from operator import itemgetter
from pathlib import Path

import numpy as np

from mailtoaster.spam.counts import CountImage, Counts, CountsTable
from mailtoaster.spam.imagefile import load_image, save_image
from mailtoaster.spam.store import Label, StoreStats, TokenCounts, TokenStoreUnavailable, Totals, as_label

GLOBAL_SCOPE = 0
CACHE_ENTRIES = 200_000
"""Token counts kept in memory between calls (about 30 MB); past it the cache starts again."""
IMAGE_ROWS = 2_000_000
"""The most ``tokens`` rows of one scope read into memory as a whole (see :class:`_Image`); a larger
scope is read a message at a time instead."""
IMAGE_SCOPES = 4
"""Scopes whose images are kept at once (the global one and the users scored last)."""
IMAGE_FILE_ROWS = 50_000
"""A scope with at least this many ``tokens`` rows keeps its image in a file too (see
:meth:`SqliteTokenStore._image`); a smaller one is read from the database as fast."""
SCHEMA_VERSION = 2
"""1: tokens keyed by their text; 2: by :func:`token_id` (version 1 is migrated on open)."""

TOKEN_ID_MODULUS = 9_223_372_036_854_775_783
"""The largest prime below 2**63: token ids are the token's UTF-8 octets, read as one big-endian
number, modulo this prime (a Karp-Rabin fingerprint), so they fit SQLite's signed 64-bit integers."""

_TOKENS_TABLE = """(
    scope INTEGER NOT NULL,
    id INTEGER NOT NULL,
    spam INTEGER NOT NULL,
    ham INTEGER NOT NULL,
    learned INTEGER NOT NULL,
    PRIMARY KEY (scope, id)
) WITHOUT ROWID"""
"""The ``tokens`` table's columns (schema version 2), for the schema and the migration from version 1."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scopes (id INTEGER PRIMARY KEY, user TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS totals (
    scope INTEGER PRIMARY KEY,
    spam INTEGER NOT NULL DEFAULT 0,
    ham INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens {_TOKENS_TABLE};
CREATE TABLE IF NOT EXISTS learned (
    scope INTEGER NOT NULL,
    digest TEXT NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (scope, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    scope INTEGER NOT NULL,
    label TEXT NOT NULL,
    learned INTEGER NOT NULL,
    ids TEXT NOT NULL
);
INSERT OR IGNORE INTO meta VALUES ('folds', '0');
INSERT OR IGNORE INTO meta VALUES ('tokens', '0');
"""

_TOKENS_V2 = f"CREATE TABLE tokens_v2 {_TOKENS_TABLE}"
_MIGRATE_V1 = (
    "INSERT INTO tokens_v2 (scope, id, spam, ham, learned) "
    "SELECT scope, mailtoaster_token_id(token), spam, ham, CAST(learned AS INTEGER) FROM tokens "
    "ORDER BY 1, 2 "
    "ON CONFLICT (scope, id) DO UPDATE SET spam = spam + excluded.spam, ham = ham + excluded.ham, "
    "learned = MAX(learned, excluded.learned)"
)

_COUNTS = "SELECT id, spam, ham FROM tokens WHERE scope = ? AND id IN (SELECT value FROM json_each(?))"
_first = itemgetter(0)
_pair = itemgetter(1, 2)
_REMOVE = {
    label: f"UPDATE tokens SET {label} = MAX({label} - 1, 0) "
    "WHERE scope = ? AND id IN (SELECT value FROM json_each(?))"
    for label in ("spam", "ham")
}
_DROP_EMPTY = (
    "DELETE FROM tokens WHERE scope = ? AND spam = 0 AND ham = 0 AND id IN (SELECT value FROM json_each(?))"
)
_JOURNAL_ADD = "INSERT INTO journal (scope, label, learned, ids) VALUES (?, ?, ?, ?)"
_FOLD = (
    "INSERT INTO tokens (scope, id, spam, ham, learned) "
    "SELECT journal.scope, value, SUM(label = 'spam'), SUM(label = 'ham'), MAX(learned) "
    "FROM journal, json_each(journal.ids) WHERE true GROUP BY journal.scope, value "
    "ON CONFLICT (scope, id) DO UPDATE SET spam = spam + excluded.spam, ham = ham + excluded.ham, "
    "learned = MAX(learned, excluded.learned)"
)
JOURNAL_FOLD = 256
"""Learned messages (one journal row per scope each) that wait in the journal before their counts are
folded into ``tokens``, in one statement."""
_TOTALS_STEP = {
    label: f"INSERT INTO totals (scope, {label}) VALUES (?, MAX(?, 0)) "
    f"ON CONFLICT (scope) DO UPDATE SET {label} = MAX({label} + ?, 0)"
    for label in ("spam", "ham")
}


def token_id(token: str) -> int:
    """The token's key in the store: its UTF-8 octets as one big-endian number modulo
    :data:`TOKEN_ID_MODULUS` (a prime just below 2**63). Stable across processes, versions and
    machines (not Python's ``hash()``, which is salted per process). A token that is not valid
    Unicode (a lone surrogate, which some codecs produce) counts with ``?`` in its place, as the
    text-keyed store kept it.

    Two different tokens share an id only when the prime divides the difference of their numbers:
    for the half million tokens of a trained store, about one chance in 70 million that any two of
    the tokens do (birthday bound n²/2p); the two would then share their counts, as two spellings of
    one word would. Someone crafting such a pair gains nothing he could not have by writing the
    other token itself. Tokens never start with a NUL character, the one case where two texts
    read as the same number."""
    try:
        octets = token.encode()
    except UnicodeEncodeError:
        octets = token.encode("utf-8", "replace")
    return int.from_bytes(octets) % TOKEN_ID_MODULUS


def token_ids(tokens: Iterable[str]) -> list[int]:
    """:func:`token_id` of each token, in C-level calls (``map``) for the usual all-valid list."""
    listed = tokens if isinstance(tokens, list | tuple) else list(tokens)
    try:
        return list(map(TOKEN_ID_MODULUS.__rmod__, map(int.from_bytes, map(str.encode, listed))))
    except UnicodeEncodeError:
        return list(map(token_id, listed))


_IMAGE_READ = (
    "SELECT group_concat(id, ','), group_concat(spam, ','), group_concat(ham, ',') "
    "FROM tokens WHERE scope = ?"
)
"""A scope's rows as three texts of comma-separated numbers (one aggregate scan, so in the same order):
parsed by numpy in C, that is a fifth of the time of making a Python tuple of every row."""


def _read_image(db: sqlite3.Connection, scope: int) -> CountImage | None:
    """The scope's ``tokens`` rows as a :class:`~mailtoaster.spam.counts.CountImage`, or None past
    :data:`IMAGE_ROWS` rows."""
    rows = db.execute("SELECT count(*) FROM tokens WHERE scope = ?", (scope,)).fetchone()[0]
    if rows > IMAGE_ROWS:
        return None
    columns = db.execute(_IMAGE_READ, (scope,)).fetchone()
    ids, spam, ham = (np.fromstring(column or "", dtype=np.int64, sep=",") for column in columns)
    return CountImage.of_rows(np.stack([ids, spam, ham], axis=1))


_Sums = tuple[Counts, Counts, Counts]
"""(token ids, spam, ham): counts to add, the ids distinct."""


def _journal_sums(rows: list[tuple[int, int, str, str]]) -> dict[int, _Sums]:
    """Each scope's counts in journal rows (seq, scope, label, ids as a JSON array), summed. The arrays
    of all the rows are parsed as one text by numpy, in C: a Python loop over their hundred thousand ids
    took longer than reading the whole image."""
    sums = {}
    for scope in {row[1] for row in rows}:
        spam_ids = _ids([ids for _seq, at, label, ids in rows if at == scope and label == "spam"])
        ham_ids = _ids([ids for _seq, at, label, ids in rows if at == scope and label != "spam"])
        unique, inverse = np.unique(np.concatenate([spam_ids, ham_ids]), return_inverse=True)
        spam = np.bincount(inverse[: len(spam_ids)], minlength=len(unique)).astype(np.int64)
        ham = np.bincount(inverse[len(spam_ids) :], minlength=len(unique)).astype(np.int64)
        sums[scope] = (unique, spam, ham)
    return sums


def _ids(arrays: list[str]) -> Counts:
    """The ids of JSON arrays of integers, one after the other (json.loads should numpy not read them)."""
    numbers = ",".join(text for array in arrays if (text := array.strip().strip("[]").strip()))
    ids = np.fromstring(numbers, dtype=np.int64, sep=",") if numbers else np.empty(0, dtype=np.int64)
    if len(ids) != (numbers.count(",") + 1 if numbers else 0):
        ids = np.array([found for array in arrays for found in json.loads(array)], dtype=np.int64)
    return ids


def _tokens_changed(db: sqlite3.Connection) -> None:
    """Mark a change of the ``tokens`` table (in the caller's transaction) with a new random
    ``meta.tokens``, which makes every connection read its images again. Random rather than a
    counter: it also names the state of ``tokens`` an image file was made from
    (:mod:`~mailtoaster.spam.imagefile`), and a database restored from a backup must not meet the
    file of a later state that happened to have the same count."""
    db.execute("UPDATE meta SET value = ? WHERE key = 'tokens'", (secrets.token_hex(16),))


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
        self._overlay: dict[int, CountImage] = {}
        """scope -> the counts of the journal, not yet in ``tokens``"""
        self._overlay_folds: object = None
        self._overlay_seq = 0
        self._images: dict[int, CountImage | None] = {}
        """scope -> its ``tokens`` rows in memory (see :meth:`_image`), None for a scope too large"""
        self._images_written: object = None
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
        elif found[0] == "1":
            self._migrate_v1()
        elif found[0] != str(SCHEMA_VERSION):
            raise sqlite3.DatabaseError(
                f"schema version {found[0]}, this program knows {SCHEMA_VERSION} (a newer mailtoaster "
                "made it: use that, or move the file away and learn again)"
            )

    def _migrate_v1(self) -> None:
        """Version 1 kept the token text as the key: rewrite ``tokens`` keyed by :func:`token_id`,
        once, in one transaction (another process opening the file at the same time waits, then
        finds version 2). Every count is kept."""
        db = self._db
        db.create_function("mailtoaster_token_id", 1, token_id, deterministic=True)
        db.execute("BEGIN IMMEDIATE")
        try:
            found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if found is not None and found[0] == "1":
                db.execute("DROP TABLE IF EXISTS tokens_v2")
                db.execute(_TOKENS_V2)
                db.execute(_MIGRATE_V1)
                db.execute("DROP TABLE tokens")
                db.execute("ALTER TABLE tokens_v2 RENAME TO tokens")
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
                _tokens_changed(db)
            db.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

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
            return CountsTable.of_pairs([], [])
        with self._guard("reading token counts") as db:
            scope = self._scope(user)
            if scope is None:
                return CountsTable.of_pairs([], [])
            if db.in_transaction:  # in a batch: this connection's own view
                return self._counts(db, scope, tokens)
            # One read transaction: the journal and ``tokens`` from the same snapshot, so a fold by
            # another process between the two reads cannot count a message twice.
            db.execute("BEGIN")
            try:
                return self._counts(db, scope, tokens)
            finally:
                db.execute("COMMIT")

    def _counts(self, db: sqlite3.Connection, scope: int, tokens: Collection[str]) -> CountsTable:
        cache = self._fresh_cache(db, scope)
        # In a batch this connection's own uncommitted writes are in view: read them, not an image.
        image = None if self._batch_depth else self._image(db, scope)
        if image is not None:
            return self._image_counts(image, tokens)
        if len(cache) + len(tokens) > CACHE_ENTRIES:
            cache.clear()
        missing = list(set(tokens).difference(cache))
        if missing:
            ids = token_ids(missing)
            rows = db.execute(_COUNTS, (scope, json.dumps(ids))).fetchall()
            cache.update(dict.fromkeys(missing))
            by_id = dict(zip(ids, missing, strict=True))
            if rows:
                cache.update(zip(map(by_id.__getitem__, map(_first, rows)), map(_pair, rows), strict=True))
            self._add_journal(scope, ids, missing, cache)
        listed = tokens if isinstance(tokens, list | tuple) else list(tokens)
        return CountsTable.of_pairs(listed, map(cache.__getitem__, listed))

    @staticmethod
    def _image_counts(image: CountImage, tokens: Collection[str]) -> CountsTable:
        """The counts from the scope's image, which holds the journal too."""
        listed = tokens if isinstance(tokens, list | tuple) else list(tokens)
        ids = np.fromiter(token_ids(listed), dtype=np.int64, count=len(listed))
        return CountsTable(listed, *image.lookup(ids))

    def _add_journal(
        self, scope: int, ids: list[int], tokens: list[str], found: dict[str, tuple[int, int] | None]
    ) -> None:
        """Add the journal's counts to ``found`` (token -> counts in ``tokens``) for ``tokens``, whose
        token ids are ``ids``."""
        overlay = self._overlay.get(scope)
        if overlay is None:
            return
        spam, ham = overlay.lookup(np.array(ids, dtype=np.int64))
        for index in np.flatnonzero(spam | ham).tolist():
            token = tokens[index]
            old = found[token] or (0, 0)
            found[token] = (old[0] + int(spam[index]), old[1] + int(ham[index]))

    def _fresh_cache(self, db: sqlite3.Connection, scope: int) -> dict[str, tuple[int, int] | None]:
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._cache_version:
            self._cache.clear()
            self._cache_version = version
            written = db.execute("SELECT value FROM meta WHERE key = 'tokens'").fetchone()
            if written != self._images_written:
                self._images.clear()
                self._images_written = written
            self._read_journal(db)
        return self._cache.setdefault(scope, {})

    def _image(self, db: sqlite3.Connection, scope: int) -> CountImage | None:
        """The scope's whole ``tokens`` table in memory, read when first needed after it last changed
        (None when it has more than :data:`IMAGE_ROWS` rows).

        Why: a message's tokens are mostly ones the read cache does not hold (a store knows hundreds of
        thousands, the cache a fraction), and SQLite spends about 2.5 µs of CPU on each row it looks
        up, which made the look-ups the larger half of scoring a message; the image's look-up
        (:meth:`~mailtoaster.spam.counts.CountImage.lookup`) costs a tenth of that. ``tokens`` changes
        only when the journal is folded (every :data:`JOURNAL_FOLD` learned messages), when a message
        is moved or forgotten and on expiry, each of which sets a new ``meta.tokens``; learning in
        between goes to the journal, which every reader adds on top. So the image is read once per
        fold, about 0.25 s for half a million rows, and costs 36 to 72 bytes a token (``spam_speed.py``
        prints the peak RSS). The first connection to read it after a change also writes it to a file
        (:meth:`_stored_image`), which the others load in a tenth of that."""
        image = self._images.get(scope)
        if image is None and scope not in self._images:
            image = self._stored_image(db, scope)
            overlay = self._overlay.get(scope)
            if image is not None and overlay is not None:
                image.add(*overlay.contents())
            while len(self._images) >= IMAGE_SCOPES:
                del self._images[next(iter(self._images))]
            self._images[scope] = image  # None too: too big until the table changes
        return image

    def _stored_image(self, db: sqlite3.Connection, scope: int) -> CountImage | None:
        """The scope's image as ``tokens`` holds it (the journal not yet added): from its file when
        that was made from the same state of ``tokens`` (the ``meta.tokens`` read with the rest of
        this transaction), else from the database, and then written to the file for the next
        connection when the scope is large enough for that to pay."""
        written = self._images_written
        generation = str(written[0]) if isinstance(written, tuple) and written else ""
        path = self.path.with_name(f"{self.path.name}-image-{scope}")
        image = load_image(path, generation)
        if image is not None and len(image) <= IMAGE_ROWS:
            return image
        image = _read_image(db, scope)
        if image is not None and len(image) >= IMAGE_FILE_ROWS:
            save_image(path, generation, image)
        return image

    def _read_journal(self, db: sqlite3.Connection) -> None:
        """Bring the in-memory sums of the journal up to date: the rows added since the last read, or
        all of them again after a fold (which the ``folds`` counter in ``meta`` tells)."""
        folds = db.execute("SELECT value FROM meta WHERE key = 'folds'").fetchone()
        if folds != self._overlay_folds:
            self._overlay = {}
            self._overlay_seq = 0
            self._overlay_folds = folds
            self._images.clear()  # they hold the journal as it was
        rows = db.execute(
            "SELECT seq, scope, label, ids FROM journal WHERE seq > ? ORDER BY seq", (self._overlay_seq,)
        ).fetchall()
        if rows:
            self._overlay_seq = rows[-1][0]
        for scope, sums in _journal_sums(rows).items():  # each image grows once, however many rows
            overlay = self._overlay.get(scope)
            if overlay is None:
                overlay = self._overlay[scope] = CountImage(len(sums[0]))
            overlay.add(*sums)
            image = self._images.get(scope)
            if image is not None:
                image.add(*sums)

    def _forget_overlay(self) -> None:
        """This connection wrote (its own writes do not change ``data_version``): read again."""
        self._cache.clear()
        self._cache_version = -1

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
                    self._forget_overlay()
                    self._overlay_folds = None  # journal rows read in it are gone again too
                    self._images.clear()  # and any image read from it
                    db.execute("ROLLBACK")
                raise
            self._batch_depth -= 1
            if self._batch_depth == 0:
                db.execute("COMMIT")

    def learn(
        self, digest: str, tokens: Collection[str], label: Label | None, user: str | None = None
    ) -> Label | None:
        listed = json.dumps(list(dict.fromkeys(token_ids(tokens))))
        now = math.floor(self._clock())
        with self.batch(), self._guard("learning") as db:
            self._forget_overlay()
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
        self,
        db: sqlite3.Connection,
        scope: int,
        digest: str,
        tokens: str,
        label: Label | None,
        now: int,
    ) -> Label | None:
        row = db.execute(
            "SELECT label FROM learned WHERE scope = ? AND digest = ?", (scope, digest)
        ).fetchone()
        before = as_label(row[0]) if row else None
        if before == label:
            return before
        if before is not None:
            self._fold(db)  # taking away (clamped at 0) needs the journal's counts in ``tokens``
            db.execute(_REMOVE[before], (scope, tokens))
            db.execute(_DROP_EMPTY, (scope, tokens))
            _tokens_changed(db)
            db.execute(_TOTALS_STEP[before], (scope, -1, -1))
            db.execute("DELETE FROM learned WHERE scope = ? AND digest = ?", (scope, digest))
        if label is not None:
            seq = db.execute(_JOURNAL_ADD, (scope, label, now, tokens)).lastrowid
            if seq is not None and seq >= JOURNAL_FOLD:
                self._fold(db)
            db.execute(_TOTALS_STEP[label], (scope, 1, 1))
            db.execute("INSERT INTO learned (scope, digest, label) VALUES (?, ?, ?)", (scope, digest, label))
        return before

    def _fold(self, db: sqlite3.Connection) -> None:
        """Add the journal's counts to ``tokens`` and empty it (in the caller's transaction)."""
        if db.execute("SELECT 1 FROM journal LIMIT 1").fetchone() is None:
            return
        db.execute(_FOLD)
        db.execute("DELETE FROM journal")
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'folds'")
        _tokens_changed(db)
        self._forget_overlay()

    def fold(self) -> None:
        """Fold the journal into ``tokens`` now (``expire`` and ``stats`` do it themselves)."""
        with self._guard("folding the learning journal") as db:
            if db.execute("SELECT 1 FROM journal LIMIT 1").fetchone() is None:
                return  # nothing to write: no write lock taken
            with self.batch():
                self._fold(db)

    def expire(self, unused_since: float) -> int:
        with self._guard("expiring tokens") as db, self.batch():
            self._fold(db)
            self._forget_overlay()
            cursor = db.execute("DELETE FROM tokens WHERE learned < ? AND spam + ham <= 1", (unused_since,))
            _tokens_changed(db)
            return max(0, cursor.rowcount)

    # Looking after it -----------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        """Folds the journal and checkpoints the WAL first (truncating it when no reader is in the
        way), so the size is what the counts take, not the last fold's pages waiting in the WAL."""
        self.fold()
        with self._guard("reading statistics") as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
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
