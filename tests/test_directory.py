"""The SQLite directory: CRUD, passwords, resolution (aliases, loops, catch-all, sub-addressing,
postmaster), validation and use from several threads."""

from __future__ import annotations

import itertools
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from mailtoaster.store import (
    MAX_ALIAS_DEPTH,
    SCHEMA_VERSION,
    AlreadyExistsError,
    Directory,
    DirectoryError,
    InvalidAddressError,
    NotFoundError,
    parse_account,
    parse_address,
)

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
"""Cheap parameters so the suite stays quick; one test checks the library default separately."""


class StepClock:
    """Each call one second later: creation order is unambiguous."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1_700_000_000)

    def __call__(self) -> float:
        return float(next(self._ticks))


def open_directory(path: Path, hasher: PasswordHasher = FAST_HASHER) -> Directory:
    return Directory.open(path / "directory.sqlite", hasher=hasher, clock=StepClock())


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Directory]:
    with open_directory(tmp_path) as opened:
        yield opened


@pytest.fixture
def example(directory: Directory) -> Directory:
    """example.com with users bob and alice (bob is older)."""
    directory.add_domain("example.com")
    directory.add_user("bob@example.com", "bob-password")
    directory.add_user("alice@example.com", "alice-password")
    return directory


def mailbox_addresses(directory: Directory, address: str) -> list[str]:
    resolution = directory.resolve(address)
    assert resolution is not None, address
    return [user.email for user in resolution.mailboxes]


# Opening and the schema


def test_open_creates_private_wal_database_with_schema_version(tmp_path: Path) -> None:
    with open_directory(tmp_path / "data") as directory:
        directory.add_domain("example.com")
    path = tmp_path / "data" / "directory.sqlite"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"domains", "users", "aliases", "settings", "schema_version"} <= tables


def test_reopen_keeps_data_and_default_mail_root(tmp_path: Path) -> None:
    with open_directory(tmp_path) as directory:
        directory.add_domain("example.com")
        directory.add_user("bob@example.com", "pw")
    with open_directory(tmp_path) as directory:
        user = directory.get_user("bob@example.com")
    assert user is not None
    assert user.maildir == tmp_path / "mail" / "example.com" / "bob" / "Maildir"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    open_directory(tmp_path).close()
    with sqlite3.connect(tmp_path / "directory.sqlite") as raw:
        raw.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(DirectoryError, match="newer than this program"):
        open_directory(tmp_path)


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "directory.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(DirectoryError, match="not a usable directory database"):
        open_directory(tmp_path)


# Domains


def test_domains_add_list_normalise(directory: Directory) -> None:
    directory.add_domain("Example.COM.")
    bucher = directory.add_domain("bücher.de", spam_threshold=7)
    assert bucher.name == "xn--bcher-kva.de"
    assert bucher.spam_threshold == 7.0
    assert [d.name for d in directory.list_domains()] == ["example.com", "xn--bcher-kva.de"]
    assert directory.has_domain("EXAMPLE.com")
    assert directory.has_domain("BÜCHER.de")
    assert directory.is_local_domain("xn--bcher-kva.de")
    assert not directory.is_local_domain("example.org")
    assert not directory.is_local_domain("not a domain")
    with pytest.raises(AlreadyExistsError, match=r"example\.com exists already"):
        directory.add_domain("example.com")


def test_remove_domain_refuses_while_users_remain_unless_forced(example: Directory) -> None:
    example.add_alias("info@example.com", ["bob@example.com"])
    with pytest.raises(DirectoryError, match="still has 2 user"):
        example.remove_domain("example.com")
    assert example.get_user("bob@example.com") is not None
    example.remove_domain("example.com", force=True)
    assert example.list_domains() == []
    assert example.list_users() == []
    assert example.list_aliases() == []
    with pytest.raises(NotFoundError):
        example.remove_domain("example.com")


def test_remove_domain_without_users_takes_its_aliases(directory: Directory) -> None:
    directory.add_domain("example.com")
    directory.add_alias("@example.com", ["someone@example.org"])
    directory.remove_domain("example.com")
    assert directory.list_aliases() == []


def test_domain_settings(example: Directory) -> None:
    assert example.set_domain_settings("example.com", spam_threshold=6.5).spam_threshold == 6.5
    bob = example.get_user("bob@example.com")
    assert bob is not None
    assert example.spam_threshold_for(bob) == 6.5
    bob = example.set_user_settings("bob@example.com", spam_threshold=3)
    assert example.spam_threshold_for(bob) == 3.0
    assert example.set_domain_settings("example.com", spam_threshold=None).spam_threshold is None
    with pytest.raises(DirectoryError, match="finite number"):
        example.set_domain_settings("example.com", spam_threshold=float("nan"))


# Users


def test_user_crud(example: Directory) -> None:
    bob = example.get_user("BOB@Example.Com")
    assert bob is not None
    assert (bob.email, bob.quarantine, bob.spam_threshold) == ("bob@example.com", True, None)
    assert [u.email for u in example.list_users()] == ["alice@example.com", "bob@example.com"]
    assert [u.email for u in example.list_users("EXAMPLE.com")] == ["alice@example.com", "bob@example.com"]
    changed = example.set_user_settings("bob@example.com", quarantine=False, spam_threshold=4.5)
    assert (changed.quarantine, changed.spam_threshold) == (False, 4.5)
    unchanged = example.set_user_settings("bob@example.com", spam_threshold=None)
    assert (unchanged.quarantine, unchanged.spam_threshold) == (False, None)
    example.remove_user("bob@example.com")
    assert example.get_user("bob@example.com") is None
    with pytest.raises(NotFoundError):
        example.remove_user("bob@example.com")
    with pytest.raises(NotFoundError):
        example.set_user_settings("bob@example.com", quarantine=True)


def test_add_user_needs_the_domain_and_is_unique(example: Directory) -> None:
    with pytest.raises(NotFoundError, match=r"example\.org is not a local domain"):
        example.add_user("carol@example.org", "pw")
    with pytest.raises(AlreadyExistsError, match=r"bob@example\.com exists already"):
        example.add_user("Bob@example.com", "pw")
    with pytest.raises(NotFoundError, match="no domain"):
        example.list_users("example.org")


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("bob", "no @domain"),
        ("@example.com", "empty local part"),
        ("bob@localhost", "at least 2 labels"),
        ("a..b@example.com", "single inner dots"),
        (".bob@example.com", "single inner dots"),
        ('"bob smith"@example.com', "quoted local parts"),
        ("bob@[192.0.2.1]", "address literals"),
        ("bøb@example.com", "SMTPUTF8"),
        ("x" * 65 + "@example.com", "longer than 64"),
        ("bob@exa_mple.com", "letters, digits and inner hyphens"),
        ("bob@example.com ", "surrounded by white space"),
        ("bob+tag@example.com", "sub-address separator"),
        ("a/b@example.com", "may not contain '/'"),
    ],
)
def test_invalid_account_addresses(example: Directory, address: str, fragment: str) -> None:
    with pytest.raises(InvalidAddressError) as caught:
        example.add_user(address, "pw")
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message


def test_external_destinations_accept_plus_and_slash_and_keep_case() -> None:
    assert str(parse_address("Bob+Tag/x@Example.ORG")) == "Bob+Tag/x@example.org"
    assert str(parse_account("Bob@Example.ORG")) == "bob@example.org"


# Passwords


def test_password_is_stored_as_argon2id_never_in_plaintext(tmp_path: Path) -> None:
    password = "correct horse battery staple"
    with open_directory(tmp_path) as directory:
        directory.add_domain("example.com")
        directory.add_user("bob@example.com", password)
        with sqlite3.connect(tmp_path / "directory.sqlite") as raw:
            (stored,) = raw.execute("SELECT password_hash FROM users").fetchone()
        assert stored.startswith("$argon2id$")
        assert password not in stored
        assert directory.verify_password("bob@example.com", password)
    on_disk = b"".join(path.read_bytes() for path in tmp_path.glob("directory.sqlite*"))
    assert password.encode() not in on_disk


def test_default_hasher_is_argon2id(tmp_path: Path) -> None:
    with Directory.open(tmp_path / "directory.sqlite") as directory:
        directory.add_domain("example.com")
        directory.add_user("bob@example.com", "pw")
        assert directory.verify_password("bob@example.com", "pw")
    with sqlite3.connect(tmp_path / "directory.sqlite") as raw:
        (stored,) = raw.execute("SELECT password_hash FROM users").fetchone()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_verify_password_answers(example: Directory) -> None:
    assert example.verify_password("bob@example.com", "bob-password")
    assert example.verify_password("BOB@EXAMPLE.COM", "bob-password")
    assert not example.verify_password("bob@example.com", "alice-password")
    assert not example.verify_password("bob@example.com", "")
    assert not example.verify_password("nobody@example.com", "bob-password")
    assert not example.verify_password("not an address", "bob-password")


def test_set_password(example: Directory) -> None:
    example.set_password("bob@example.com", "new-password")
    assert example.verify_password("bob@example.com", "new-password")
    assert not example.verify_password("bob@example.com", "bob-password")
    with pytest.raises(NotFoundError):
        example.set_password("nobody@example.com", "x")
    with pytest.raises(DirectoryError, match="empty"):
        example.set_password("bob@example.com", "")


def test_hash_is_upgraded_when_parameters_change(tmp_path: Path) -> None:
    with open_directory(tmp_path) as directory:
        directory.add_domain("example.com")
        directory.add_user("bob@example.com", "pw")
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    with open_directory(tmp_path, hasher=stronger) as directory:
        assert not directory.verify_password("bob@example.com", "wrong")
        assert _stored_hash(tmp_path).startswith("$argon2id$v=19$m=8,t=1,p=1$")
        assert directory.verify_password("bob@example.com", "pw")
        assert _stored_hash(tmp_path).startswith("$argon2id$v=19$m=16,t=2,p=1$")
        assert directory.verify_password("bob@example.com", "pw")


def _stored_hash(tmp_path: Path) -> str:
    with sqlite3.connect(tmp_path / "directory.sqlite") as raw:
        (stored,) = raw.execute("SELECT password_hash FROM users").fetchone()
    return str(stored)


# Aliases


def test_alias_crud(example: Directory) -> None:
    alias = example.add_alias("Info@Example.com", ["bob@example.com", "Ext@Example.ORG"])
    assert (alias.source, alias.destinations) == ("info@example.com", ("bob@example.com", "Ext@example.org"))
    again = example.add_alias("info@example.com", ["alice@example.com", "bob@example.com"])
    assert again.destinations == ("bob@example.com", "Ext@example.org", "alice@example.com")
    catchall = example.add_alias("@example.com", ["alice@example.com"])
    assert catchall.is_catchall and catchall.source == "@example.com"
    assert [a.source for a in example.list_aliases("example.com")] == ["@example.com", "info@example.com"]
    example.remove_alias("info@example.com", ["Ext@example.org"])
    found = example.get_alias("info@example.com")
    assert found is not None and found.destinations == ("bob@example.com", "alice@example.com")
    example.remove_alias("info@example.com")
    assert example.get_alias("info@example.com") is None
    with pytest.raises(NotFoundError):
        example.remove_alias("info@example.com")


def test_alias_errors(example: Directory) -> None:
    with pytest.raises(NotFoundError, match="not a local domain"):
        example.add_alias("info@example.org", ["bob@example.com"])
    with pytest.raises(DirectoryError, match="at least one destination"):
        example.add_alias("info@example.com", [])
    with pytest.raises(InvalidAddressError):
        example.add_alias("info@example.com", ["not an address"])
    with pytest.raises(InvalidAddressError):
        example.add_alias("@", ["bob@example.com"])


# Resolution


def test_resolve_a_user(example: Directory) -> None:
    resolution = example.resolve("Bob@EXAMPLE.com")
    assert resolution is not None
    assert resolution.address == "bob@example.com"
    (bob,) = resolution.mailboxes
    assert bob.maildir == example.mail_root / "example.com" / "bob" / "Maildir"
    assert resolution.forwards == () and resolution.detail is None


def test_unknown_recipients_and_foreign_domains_do_not_resolve(example: Directory) -> None:
    assert example.resolve("carol@example.com") is None
    assert example.resolve("bob@example.org") is None
    with pytest.raises(InvalidAddressError):
        example.resolve("bob@@example.com")


def test_alias_to_local_and_external_without_duplicates(example: Directory) -> None:
    example.add_alias("team@example.com", ["bob@example.com", "sales@example.com", "Partner@Example.ORG"])
    example.add_alias("sales@example.com", ["alice@example.com", "bob@example.com"])
    resolution = example.resolve("team@example.com")
    assert resolution is not None
    assert [u.email for u in resolution.mailboxes] == ["bob@example.com", "alice@example.com"]
    assert resolution.forwards == ("Partner@example.org",)


def test_alias_takes_precedence_and_can_keep_a_copy(example: Directory) -> None:
    example.add_alias("bob@example.com", ["bob@elsewhere.org"])
    resolution = example.resolve("bob@example.com")
    assert (
        resolution is not None
        and resolution.mailboxes == ()
        and resolution.forwards == ("bob@elsewhere.org",)
    )
    example.add_alias("bob@example.com", ["bob@example.com"])
    resolution = example.resolve("bob@example.com")
    assert resolution is not None
    assert [u.email for u in resolution.mailboxes] == ["bob@example.com"]
    assert resolution.forwards == ("bob@elsewhere.org",)


def test_alias_loops_without_mailboxes_do_not_resolve(example: Directory) -> None:
    example.add_alias("a@example.com", ["b@example.com"])
    example.add_alias("b@example.com", ["a@example.com"])
    assert example.resolve("a@example.com") is None
    example.add_alias("b@example.com", ["ext@example.org"])
    resolution = example.resolve("a@example.com")
    assert resolution is not None and resolution.forwards == ("ext@example.org",)
    assert any("alias loop" in note for note in resolution.notes)


def test_alias_loop_through_a_user_stops_at_the_mailbox(example: Directory) -> None:
    example.add_alias("bob@example.com", ["alice@example.com"])
    example.add_alias("alice@example.com", ["bob@example.com"])
    assert mailbox_addresses(example, "bob@example.com") == ["bob@example.com"]
    assert mailbox_addresses(example, "alice@example.com") == ["alice@example.com"]


def test_alias_depth_limit(example: Directory) -> None:
    def chain(length: int, prefix: str) -> None:
        for index in range(length):
            example.add_alias(f"{prefix}{index}@example.com", [f"{prefix}{index + 1}@example.com"])
        example.add_alias(f"{prefix}{length}@example.com", ["alice@example.com"])

    chain(MAX_ALIAS_DEPTH - 1, "ok")
    assert mailbox_addresses(example, "ok0@example.com") == ["alice@example.com"]
    chain(MAX_ALIAS_DEPTH + 1, "deep")
    assert example.resolve("deep0@example.com") is None


def test_catchall(example: Directory) -> None:
    example.add_alias("@example.com", ["alice@example.com", "archive@example.org"])
    resolution = example.resolve("whoever@example.com")
    assert resolution is not None
    assert [u.email for u in resolution.mailboxes] == ["alice@example.com"]
    assert resolution.forwards == ("archive@example.org",)
    assert mailbox_addresses(example, "bob@example.com") == ["bob@example.com"]


def test_catchall_to_a_missing_local_address_does_not_loop_forever(example: Directory) -> None:
    example.add_alias("@example.com", ["nobody@example.com"])
    assert example.resolve("whoever@example.com") is None


def test_subaddressing(example: Directory) -> None:
    resolution = example.resolve("bob+lists@example.com")
    assert resolution is not None
    assert [u.email for u in resolution.mailboxes] == ["bob@example.com"]
    assert resolution.detail == "lists"
    assert resolution.address == "bob+lists@example.com"
    example.add_alias("info@example.com", ["alice@example.com"])
    assert mailbox_addresses(example, "info+web@example.com") == ["alice@example.com"]
    assert example.resolve("carol+x@example.com") is None
    assert example.resolve("+x@example.com") is None
    example.add_alias("@example.com", ["alice@example.com"])
    assert mailbox_addresses(example, "carol+x@example.com") == ["alice@example.com"]


def test_alias_destination_with_detail_reaches_the_user(example: Directory) -> None:
    example.add_alias("lists@example.com", ["bob+lists@example.com"])
    assert mailbox_addresses(example, "lists@example.com") == ["bob@example.com"]


def test_idna_domains_resolve_in_either_form(directory: Directory) -> None:
    directory.add_domain("bücher.de")
    directory.add_user("info@BÜCHER.de", "pw")
    assert mailbox_addresses(directory, "info@xn--bcher-kva.de") == ["info@xn--bcher-kva.de"]
    assert mailbox_addresses(directory, "Info@bücher.de") == ["info@xn--bcher-kva.de"]


@pytest.mark.parametrize("role", ["postmaster", "abuse", "PostMaster"])
def test_role_addresses_reach_the_domains_oldest_user(example: Directory, role: str) -> None:
    assert mailbox_addresses(example, f"{role}@example.com") == ["bob@example.com"]


def test_role_address_of_a_domain_without_users_reaches_the_oldest_user(example: Directory) -> None:
    example.add_domain("example.net")
    assert mailbox_addresses(example, "postmaster@example.net") == ["bob@example.com"]
    assert mailbox_addresses(example, "Postmaster") == ["bob@example.com"]
    assert example.resolve("webmaster@example.net") is None


def test_role_fallback_setting_and_explicit_alias(example: Directory) -> None:
    example.set_postmaster_fallback("hostmaster@example.org")
    assert example.postmaster_fallback() == "hostmaster@example.org"
    resolution = example.resolve("abuse@example.com")
    assert resolution is not None and resolution.forwards == ("hostmaster@example.org",)
    example.add_alias("abuse@example.com", ["alice@example.com"])
    assert mailbox_addresses(example, "abuse@example.com") == ["alice@example.com"]
    example.set_postmaster_fallback(None)
    assert mailbox_addresses(example, "postmaster@example.com") == ["bob@example.com"]


def test_role_fallback_that_leads_nowhere_falls_back_to_a_user(example: Directory) -> None:
    example.set_postmaster_fallback("nobody@example.com")
    assert mailbox_addresses(example, "postmaster@example.com") == ["bob@example.com"]


def test_role_address_with_no_user_anywhere_does_not_resolve(directory: Directory) -> None:
    directory.add_domain("example.com")
    assert directory.resolve("postmaster@example.com") is None


# Threads


def test_concurrent_use_from_threads_and_a_second_connection(tmp_path: Path) -> None:
    with open_directory(tmp_path) as directory, open_directory(tmp_path) as other:
        directory.add_domain("example.com")
        failures: list[BaseException] = []

        def worker(index: int, db: Directory) -> None:
            try:
                address = f"user{index}@example.com"
                db.add_user(address, f"pw{index}")
                for _ in range(5):
                    assert db.verify_password(address, f"pw{index}")
                    assert not db.verify_password(address, "wrong")
                    resolution = db.resolve(address)
                    assert resolution is not None and resolution.mailboxes[0].email == address
                db.add_alias("all@example.com", [address])
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(i, (directory, other)[i % 2])) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures, failures
        assert len(directory.list_users()) == 16
        assert sorted(mailbox_addresses(other, "all@example.com")) == sorted(
            f"user{i}@example.com" for i in range(16)
        )
