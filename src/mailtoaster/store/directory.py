"""The directory: domains, users, aliases and catch-alls in one SQLite file (what vpopmail kept in
``~vpopmail/domains`` and ``.qmail-*`` files).

The SMTP server asks :meth:`Directory.resolve` at RCPT time and :meth:`Directory.verify_password` for
SMTP AUTH; the ``mailtoaster domain|user|alias`` commands change it while the server runs.

Concurrency: one connection guarded by a lock, in WAL mode, so the server may call from any thread and
another process (the CLI) may write at the same time. Every query is a few microseconds; the slow part of
a login, argon2 (tens of milliseconds, on purpose), runs *outside* the lock, so parallel logins in worker
threads do not queue behind each other.
"""

from __future__ import annotations

import enum
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailtoaster.store.address import (
    Address,
    normalize_domain,
    parse_account,
    parse_address,
)
from mailtoaster.store.errors import AlreadyExistsError, DirectoryError, InvalidAddressError, NotFoundError

DIRECTORY_FILE = "directory.sqlite"
MAIL_DIR = "mail"
MAILDIR_NAME = "Maildir"
MAX_ALIAS_DEPTH = 8
"""How many aliases one delivery may pass through; deeper chains are configuration mistakes."""
ROLE_LOCAL_PARTS = frozenset({"postmaster", "abuse"})
"""Local parts every local domain must accept (RFC 5321 §4.5.1, RFC 2142 §2-4)."""
MAX_PASSWORD_LENGTH = 1024
BUSY_TIMEOUT_SECONDS = 10.0
POSTMASTER_FALLBACK_SETTING = "postmaster_fallback"
CATCHALL_LOCAL_PART = ""
"""Catch-alls are stored as the alias with an empty local part, written ``@domain``."""

_SCHEMA_V1 = (
    """CREATE TABLE domains (
        name TEXT PRIMARY KEY,
        spam_threshold REAL,
        created REAL NOT NULL
    )""",
    """CREATE TABLE users (
        domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
        local_part TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        quarantine INTEGER NOT NULL DEFAULT 1 CHECK (quarantine IN (0, 1)),
        spam_threshold REAL,
        created REAL NOT NULL,
        PRIMARY KEY (domain, local_part)
    )""",
    """CREATE TABLE aliases (
        domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
        local_part TEXT NOT NULL,
        destination TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (domain, local_part, destination)
    )""",
    "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
MIGRATIONS: tuple[tuple[str, ...], ...] = (_SCHEMA_V1,)
"""``MIGRATIONS[n]`` takes the schema from version n to n + 1; append, never edit, to change it."""
SCHEMA_VERSION = len(MIGRATIONS)

_USER_COLUMNS = "domain, local_part, quarantine, spam_threshold, created"


class Unset(enum.Enum):
    """The type of :data:`UNSET` (a one-member enum, so type checkers narrow ``is UNSET``)."""

    UNSET = "unset"


UNSET = Unset.UNSET
"""Default of the ``set_*_settings`` arguments: leave this setting as it is."""


@dataclass(frozen=True)
class Domain:
    name: str
    spam_threshold: float | None
    """None: the spam filter's global default applies."""
    created: float


@dataclass(frozen=True)
class User:
    address: Address
    quarantine: bool
    """Spam goes to the ``Junk`` folder when on, to the inbox (tagged) when off."""
    spam_threshold: float | None
    """The user's own threshold; None: the domain's, else the global default (see ``spam_threshold_for``)."""
    created: float
    maildir: Path

    @property
    def email(self) -> str:
        return str(self.address)


@dataclass(frozen=True)
class Alias:
    """A forward ``local_part@domain`` → destinations, or the domain's catch-all when local_part is ``""``."""

    domain: str
    local_part: str
    destinations: tuple[str, ...]

    @property
    def source(self) -> str:
        return f"{self.local_part}@{self.domain}"

    @property
    def is_catchall(self) -> bool:
        return self.local_part == CATCHALL_LOCAL_PART


@dataclass(frozen=True)
class Resolution:
    """Where mail for one recipient goes: local mailboxes and external addresses, duplicates removed."""

    address: str
    """The recipient as asked, normalised (domain in A-labels, local part lower-cased)."""
    mailboxes: tuple[User, ...]
    forwards: tuple[str, ...]
    detail: str | None = None
    """The ``detail`` of ``user+detail@domain`` when the recipient had one."""
    notes: tuple[str, ...] = ()
    """Branches that led nowhere (unknown alias targets, loops, chains too deep): worth a log line."""


class Directory:
    """The directory database. Make one with :meth:`open`; close it (or use ``with``) when done."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        *,
        mail_root: Path,
        hasher: PasswordHasher,
        clock: Callable[[], float],
    ) -> None:
        self._connection = connection
        self._lock = threading.RLock()
        self.mail_root = mail_root
        self._hasher = hasher
        self._clock = clock
        self._dummy_hash: str | None = None

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        mail_root: Path | str | None = None,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Directory:
        """Open (creating it, mode 0600, if new) the directory at ``path``.

        ``mail_root`` defaults to ``mail/`` beside the file: users' Maildirs are
        ``<mail_root>/<domain>/<local part>/Maildir``. ``hasher`` defaults to argon2-cffi's
        ``PasswordHasher()`` (argon2id, RFC 9106's low-memory profile).
        """
        path = Path(path)
        connection = _connect(path)
        try:
            _configure(connection)
            _migrate(connection, path)
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise DirectoryError(f"{path} is not a usable directory database: {exc}") from None
        except DirectoryError:
            connection.close()
            raise
        root = Path(mail_root) if mail_root is not None else path.parent / MAIL_DIR
        return cls(connection, mail_root=root, hasher=hasher or PasswordHasher(), clock=clock)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: ``write`` takes SQLite's write lock up front (no upgrade
        deadlocks between processes); a read transaction sees one consistent snapshot."""
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.OperationalError as exc:
                raise DirectoryError(f"directory database busy or unavailable: {exc}") from None
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    # Domains

    def add_domain(self, name: str, *, spam_threshold: float | None = None) -> Domain:
        domain = Domain(normalize_domain(name), _check_threshold(spam_threshold), self._clock())
        with self._transaction(write=True) as db:
            try:
                db.execute(
                    "INSERT INTO domains (name, spam_threshold, created) VALUES (?, ?, ?)",
                    (domain.name, domain.spam_threshold, domain.created),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExistsError(f"domain {domain.name} exists already") from None
        return domain

    def remove_domain(self, name: str, *, force: bool = False) -> None:
        """Remove a domain with its aliases; refused while it has users unless ``force`` (which removes
        them too). Mail on disk is left alone: deleting it is a separate, deliberate act."""
        domain = normalize_domain(name)
        with self._transaction(write=True) as db:
            _require_domain(db, domain)
            (users,) = db.execute("SELECT count(*) FROM users WHERE domain = ?", (domain,)).fetchone()
            if users and not force:
                raise DirectoryError(
                    f"domain {domain} still has {users} user(s): remove them first, or force the removal"
                )
            db.execute("DELETE FROM domains WHERE name = ?", (domain,))

    def list_domains(self) -> list[Domain]:
        with self._transaction() as db:
            rows = db.execute("SELECT name, spam_threshold, created FROM domains ORDER BY name").fetchall()
        return [Domain(*row) for row in rows]

    def get_domain(self, name: str) -> Domain | None:
        domain = normalize_domain(name)
        with self._transaction() as db:
            return _domain_row(db, domain)

    def has_domain(self, name: str) -> bool:
        return self.get_domain(name) is not None

    def is_local_domain(self, domain: str) -> bool:
        """Whether mail for ``domain`` is ours; anything that is not a valid domain is not."""
        try:
            return self.has_domain(domain)
        except InvalidAddressError:
            return False

    def set_domain_settings(self, name: str, *, spam_threshold: float | Unset | None = UNSET) -> Domain:
        domain = normalize_domain(name)
        with self._transaction(write=True) as db:
            _require_domain(db, domain)
            if spam_threshold is not UNSET:
                db.execute(
                    "UPDATE domains SET spam_threshold = ? WHERE name = ?",
                    (_check_threshold(spam_threshold), domain),
                )
            found = _domain_row(db, domain)
        assert found is not None
        return found

    # Users

    def add_user(
        self, address: str, password: str, *, quarantine: bool = True, spam_threshold: float | None = None
    ) -> User:
        account = parse_account(address)
        threshold = _check_threshold(spam_threshold)
        password_hash = self._hash(password)
        created = self._clock()
        with self._transaction(write=True) as db:
            _require_local_domain(db, account.domain)
            try:
                db.execute(
                    "INSERT INTO users (domain, local_part, password_hash, quarantine, spam_threshold,"
                    " created) VALUES (?, ?, ?, ?, ?, ?)",
                    (account.domain, account.local_part, password_hash, int(quarantine), threshold, created),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExistsError(f"user {account} exists already") from None
        return User(account, quarantine, threshold, created, self.maildir_for(account))

    def set_password(self, address: str, password: str) -> None:
        account = parse_account(address)
        password_hash = self._hash(password)
        with self._transaction(write=True) as db:
            cursor = db.execute(
                "UPDATE users SET password_hash = ? WHERE domain = ? AND local_part = ?",
                (password_hash, account.domain, account.local_part),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no user {account}")

    def verify_password(self, address: str, password: str) -> bool:
        """Whether ``password`` is the user's. Constant-time comparison by argon2; an unknown user costs
        the same hash computation, so timing does not tell which users exist. A hash made with older
        parameters is replaced by one with the current parameters after a successful check."""
        try:
            account: Address | None = parse_account(address)
        except InvalidAddressError:
            account = None
        stored = self._stored_hash(account) if account is not None else None
        if account is None or stored is None:
            self._verify(self._dummy(), password)
            return False
        if not self._verify(stored, password):
            return False
        if self._hasher.check_needs_rehash(stored):
            self._rehash(account, stored, password)
        return True

    def remove_user(self, address: str) -> None:
        """Remove the user from the directory; the Maildir stays on disk."""
        account = parse_account(address)
        with self._transaction(write=True) as db:
            cursor = db.execute(
                "DELETE FROM users WHERE domain = ? AND local_part = ?", (account.domain, account.local_part)
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no user {account}")

    def list_users(self, domain: str | None = None) -> list[User]:
        with self._transaction() as db:
            if domain is None:
                rows = db.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY domain, local_part").fetchall()
            else:
                name = normalize_domain(domain)
                _require_domain(db, name)
                rows = db.execute(
                    f"SELECT {_USER_COLUMNS} FROM users WHERE domain = ? ORDER BY local_part", (name,)
                ).fetchall()
        return [self._user_from_row(row) for row in rows]

    def get_user(self, address: str) -> User | None:
        account = parse_account(address)
        with self._transaction() as db:
            return self._find_user(db, account)

    def set_user_settings(
        self,
        address: str,
        *,
        quarantine: bool | Unset = UNSET,
        spam_threshold: float | Unset | None = UNSET,
    ) -> User:
        account = parse_account(address)
        key = (account.domain, account.local_part)
        with self._transaction(write=True) as db:
            if self._find_user(db, account) is None:
                raise NotFoundError(f"no user {account}")
            if quarantine is not UNSET:
                db.execute(
                    "UPDATE users SET quarantine = ? WHERE domain = ? AND local_part = ?",
                    (int(quarantine), *key),
                )
            if spam_threshold is not UNSET:
                db.execute(
                    "UPDATE users SET spam_threshold = ? WHERE domain = ? AND local_part = ?",
                    (_check_threshold(spam_threshold), *key),
                )
            user = self._find_user(db, account)
        assert user is not None
        return user

    def spam_threshold_for(self, user: User) -> float | None:
        """The user's threshold, else the domain's; None means the spam filter's global default."""
        if user.spam_threshold is not None:
            return user.spam_threshold
        domain = self.get_domain(user.address.domain)
        return domain.spam_threshold if domain is not None else None

    def maildir_for(self, account: Address) -> Path:
        return self.mail_root / account.domain / account.local_part / MAILDIR_NAME

    # Aliases

    def add_alias(self, source: str, destinations: Iterable[str]) -> Alias:
        """Forward ``source`` (``local@domain``, or ``@domain`` for the catch-all) to ``destinations``
        (local or external addresses). Adding to an existing alias appends the new destinations.

        An alias takes precedence over a user of the same address; to forward *and* keep a copy, list
        the address itself among the destinations (``bob@ → bob@, bob@elsewhere``).
        """
        domain, local_part = _parse_alias_source(source)
        targets = _parse_destinations(destinations)
        with self._transaction(write=True) as db:
            _require_local_domain(db, domain)
            (last,) = db.execute(
                "SELECT coalesce(max(position), -1) FROM aliases WHERE domain = ? AND local_part = ?",
                (domain, local_part),
            ).fetchone()
            for position, target in enumerate(targets, start=last + 1):
                db.execute(
                    "INSERT OR IGNORE INTO aliases (domain, local_part, destination, position)"
                    " VALUES (?, ?, ?, ?)",
                    (domain, local_part, target, position),
                )
            return Alias(domain, local_part, _destinations(db, domain, local_part) or ())

    def remove_alias(self, source: str, destinations: Iterable[str] | None = None) -> None:
        """Remove the alias, or only the given destinations of it."""
        domain, local_part = _parse_alias_source(source)
        with self._transaction(write=True) as db:
            if destinations is None:
                cursor = db.execute(
                    "DELETE FROM aliases WHERE domain = ? AND local_part = ?", (domain, local_part)
                )
            else:
                targets = _parse_destinations(destinations)
                cursor = db.executemany(
                    "DELETE FROM aliases WHERE domain = ? AND local_part = ? AND destination = ?",
                    [(domain, local_part, target) for target in targets],
                )
            if cursor.rowcount <= 0:
                which = "" if destinations is None else " with those destinations"
                raise NotFoundError(f"no alias {local_part}@{domain}{which}")

    def list_aliases(self, domain: str | None = None) -> list[Alias]:
        with self._transaction() as db:
            query = "SELECT domain, local_part, destination FROM aliases"
            params: tuple[str, ...] = ()
            if domain is not None:
                params = (normalize_domain(domain),)
                _require_domain(db, params[0])
                query += " WHERE domain = ?"
            rows = db.execute(query + " ORDER BY domain, local_part, position", params).fetchall()
        grouped: dict[tuple[str, str], list[str]] = {}
        for row_domain, local_part, destination in rows:
            grouped.setdefault((row_domain, local_part), []).append(destination)
        return [Alias(d, local, tuple(targets)) for (d, local), targets in grouped.items()]

    def get_alias(self, source: str) -> Alias | None:
        domain, local_part = _parse_alias_source(source)
        with self._transaction() as db:
            targets = _destinations(db, domain, local_part)
        return Alias(domain, local_part, targets) if targets else None

    # Settings

    def set_postmaster_fallback(self, address: str | None) -> None:
        """Where ``postmaster@`` and ``abuse@`` of a domain go when nothing else takes them (see
        :meth:`resolve`); None forgets the setting."""
        with self._transaction(write=True) as db:
            if address is None:
                db.execute("DELETE FROM settings WHERE name = ?", (POSTMASTER_FALLBACK_SETTING,))
                return
            target = str(parse_address(address))
            db.execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)",
                (POSTMASTER_FALLBACK_SETTING, target),
            )

    def postmaster_fallback(self) -> str | None:
        with self._transaction() as db:
            return _setting(db, POSTMASTER_FALLBACK_SETTING)

    # Resolution

    def resolve(self, address: str) -> Resolution | None:
        """Where mail for ``address`` goes, or None: not a local domain, or no one takes it (550).

        In order, the first that matches wins: an alias of the exact address; a user; the same two for
        the address without its ``+detail``; the domain's catch-all; for ``postmaster`` and ``abuse``
        the postmaster fallback address, else the domain's oldest user, else the directory's oldest
        user. Alias destinations are resolved the same way (at most :data:`MAX_ALIAS_DEPTH` deep); a
        destination that leads back into the chain stops at that address's own mailbox if it has one
        (so ``bob → bob, bob@elsewhere`` keeps a copy) and is otherwise dropped, with a note.
        The bare ``Postmaster`` (no domain, RFC 5321 §4.1.1.3) is accepted too.
        Raises :class:`InvalidAddressError` when ``address`` is not an address at all.
        """
        if "@" not in address and address.lower() == "postmaster":
            with self._transaction() as db:
                expansion = _Expansion(self, db)
                expansion.role("postmaster", None, ())
            return expansion.result("postmaster", None)
        recipient = _lowered(parse_address(address))
        with self._transaction() as db:
            if _domain_row(db, recipient.domain) is None:
                return None
            expansion = _Expansion(self, db)
            expansion.expand(recipient, ())
        return expansion.result(str(recipient), recipient.detail)

    # Internals

    def _find_user(self, db: sqlite3.Connection, account: Address) -> User | None:
        row = db.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE domain = ? AND local_part = ?",
            (account.domain, account.local_part),
        ).fetchone()
        return self._user_from_row(row) if row is not None else None

    def _oldest_user(self, db: sqlite3.Connection, domain: str | None) -> User | None:
        where, params = ("WHERE domain = ?", (domain,)) if domain is not None else ("", ())
        row = db.execute(
            f"SELECT {_USER_COLUMNS} FROM users {where} ORDER BY created, rowid LIMIT 1", params
        ).fetchone()
        return self._user_from_row(row) if row is not None else None

    def _user_from_row(self, row: tuple[str, str, int, float | None, float]) -> User:
        domain, local_part, quarantine, threshold, created = row
        account = Address(local_part, domain)
        return User(account, bool(quarantine), threshold, created, self.maildir_for(account))

    def _hash(self, password: str) -> str:
        if not password:
            raise DirectoryError("the password is empty")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise DirectoryError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
        return self._hasher.hash(password)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _stored_hash(self, account: Address) -> str | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT password_hash FROM users WHERE domain = ? AND local_part = ?",
                (account.domain, account.local_part),
            ).fetchone()
        return row[0] if row is not None else None

    def _rehash(self, account: Address, stored: str, password: str) -> None:
        """Replace ``stored`` unless the password changed meanwhile (the WHERE keeps the newer hash)."""
        fresh = self._hasher.hash(password)
        with self._transaction(write=True) as db:
            db.execute(
                "UPDATE users SET password_hash = ?"
                " WHERE domain = ? AND local_part = ? AND password_hash = ?",
                (fresh, account.domain, account.local_part, stored),
            )

    def _dummy(self) -> str:
        """A hash of a random password to spend on unknown users (made once; a race makes two: harmless)."""
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash


class _Expansion:
    """One resolution in progress: the mailboxes and forwards found so far, in order, without repeats."""

    def __init__(self, directory: Directory, db: sqlite3.Connection) -> None:
        self._directory = directory
        self._db = db
        self._mailboxes: dict[Address, User] = {}
        self._forwards: dict[str, None] = {}
        self._notes: list[str] = []

    def result(self, address: str, detail: str | None) -> Resolution | None:
        if not self._mailboxes and not self._forwards:
            return None
        return Resolution(
            address, tuple(self._mailboxes.values()), tuple(self._forwards), detail, tuple(self._notes)
        )

    def expand(self, address: Address, chain: tuple[str, ...]) -> None:
        if len(chain) > MAX_ALIAS_DEPTH:
            self._notes.append(f"{address}: more than {MAX_ALIAS_DEPTH} aliases deep, not followed")
            return
        if _domain_row(self._db, address.domain) is None:
            self._forwards.setdefault(str(address))
            return
        address = _lowered(address)
        if str(address) in chain:
            self._loop(address)
            return
        chain = (*chain, str(address))
        if self._alias_or_user(address, chain):
            return
        base = address.base
        if base != address and self._alias_or_user(base, (*chain, str(base))):
            return
        if self._catchall(address.domain, chain):
            return
        if base.local_part in ROLE_LOCAL_PARTS and self.role(base.local_part, base.domain, chain):
            return
        self._notes.append(f"{address}: no such user")

    def role(self, local_part: str, domain: str | None, chain: tuple[str, ...]) -> bool:
        """postmaster/abuse with nothing else defined: the fallback address, else the oldest user."""
        fallback = _setting(self._db, POSTMASTER_FALLBACK_SETTING)
        if fallback is not None and self._adds_targets(parse_address(fallback), chain):
            return True
        user = None
        if domain is not None:
            user = self._directory._oldest_user(self._db, domain)
        user = user or self._directory._oldest_user(self._db, None)
        if user is None:
            self._notes.append(f"{local_part}: no postmaster fallback and no user to route it to")
            return False
        self._mailboxes.setdefault(user.address, user)
        return True

    def _adds_targets(self, address: Address, chain: tuple[str, ...]) -> bool:
        found = len(self._mailboxes) + len(self._forwards)
        self.expand(address, chain)
        return len(self._mailboxes) + len(self._forwards) > found

    def _alias_or_user(self, address: Address, chain: tuple[str, ...]) -> bool:
        targets = _destinations(self._db, address.domain, address.local_part)
        if targets:
            self._follow(targets, chain)
            return True
        user = self._user(address)
        if user is None:
            return False
        self._mailboxes.setdefault(user.address, user)
        return True

    def _catchall(self, domain: str, chain: tuple[str, ...]) -> bool:
        key = f"@{domain}"
        targets = _destinations(self._db, domain, CATCHALL_LOCAL_PART)
        if not targets:
            return False
        if key in chain:
            self._notes.append(f"catch-all {key} leads back to itself")
            return True
        self._follow(targets, (*chain, key))
        return True

    def _follow(self, targets: tuple[str, ...], chain: tuple[str, ...]) -> None:
        for target in targets:
            self.expand(parse_address(target), chain)

    def _loop(self, address: Address) -> None:
        user = self._user(address) or self._user(address.base)
        if user is None:
            self._notes.append(f"{address}: alias loop")
            return
        self._mailboxes.setdefault(user.address, user)

    def _user(self, address: Address) -> User | None:
        if "+" in address.local_part or "/" in address.local_part:
            return None
        return self._directory._find_user(self._db, address)


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        return sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
        )
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DirectoryError(f"cannot open directory {path}: {reason}") from None


def _configure(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = connection.execute("SELECT version FROM schema_version").fetchone()
        current = row[0] if row is not None else 0
        if current > SCHEMA_VERSION:
            raise DirectoryError(
                f"{path} has schema version {current}, newer than this program's {SCHEMA_VERSION}"
            )
        for statements in MIGRATIONS[current:]:
            for statement in statements:
                connection.execute(statement)
        connection.execute("DELETE FROM schema_version")
        connection.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _domain_row(db: sqlite3.Connection, domain: str) -> Domain | None:
    row = db.execute("SELECT name, spam_threshold, created FROM domains WHERE name = ?", (domain,)).fetchone()
    return Domain(*row) if row is not None else None


def _require_domain(db: sqlite3.Connection, domain: str) -> None:
    if _domain_row(db, domain) is None:
        raise NotFoundError(f"no domain {domain}")


def _require_local_domain(db: sqlite3.Connection, domain: str) -> None:
    if _domain_row(db, domain) is None:
        raise NotFoundError(f"{domain} is not a local domain: add the domain first")


def _destinations(db: sqlite3.Connection, domain: str, local_part: str) -> tuple[str, ...]:
    rows = db.execute(
        "SELECT destination FROM aliases WHERE domain = ? AND local_part = ? ORDER BY position",
        (domain, local_part),
    ).fetchall()
    return tuple(row[0] for row in rows)


def _setting(db: sqlite3.Connection, name: str) -> str | None:
    row = db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
    return row[0] if row is not None else None


def _parse_alias_source(source: str) -> tuple[str, str]:
    """``(domain, local_part)`` of an alias source; ``@domain`` is the catch-all (empty local part)."""
    if source.startswith("@"):
        return normalize_domain(source[1:]), CATCHALL_LOCAL_PART
    account = parse_account(source)
    return account.domain, account.local_part


def _parse_destinations(destinations: Iterable[str]) -> list[str]:
    targets = list(dict.fromkeys(str(parse_address(text)) for text in destinations))
    if not targets:
        raise DirectoryError("an alias needs at least one destination")
    return targets


def _lowered(address: Address) -> Address:
    """Local parts of our own domains are case-insensitive: compare them lower-cased."""
    return Address(address.local_part.lower(), address.domain)


def _check_threshold(threshold: float | None) -> float | None:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise DirectoryError(f"invalid spam threshold {threshold!r}: must be a finite number")
    return float(threshold)


__all__ = [
    "DIRECTORY_FILE",
    "MAILDIR_NAME",
    "MAIL_DIR",
    "MAX_ALIAS_DEPTH",
    "ROLE_LOCAL_PARTS",
    "SCHEMA_VERSION",
    "UNSET",
    "Alias",
    "Directory",
    "Domain",
    "Resolution",
    "Unset",
    "User",
]
