"""What is particular to the SQLite token store (the shared contract is tests/test_spam_stores.py):
the file on disk, transactions, the read cache between connections, errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mailtoaster.spam import SqliteTokenStore, TokenStoreUnavailable, Totals
from mailtoaster.spam.store import TokenCounts


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spam" / "tokens.sqlite"


def test_wal_and_without_rowid_layout(path: Path) -> None:
    store = SqliteTokenStore(path)
    store.learn("d1", ["a", "b"], "spam")
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'tokens'").fetchone()[0]
    assert "WITHOUT ROWID" in sql
    assert "PRIMARY KEY (scope, token)" in sql


def test_learn_move_forget_and_scopes(path: Path) -> None:
    store = SqliteTokenStore(path)
    assert store.learn("d1", ["free", "money", "free"], "spam") is None
    assert store.learn("d1", ["free", "money"], "spam") == "spam"
    assert store.counts(["free", "money", "nothing"]) == {
        "free": TokenCounts(1, 0),
        "money": TokenCounts(1, 0),
    }
    assert store.learn("d1", ["free", "money"], "ham") == "spam"  # moved
    assert store.counts(["free"]) == {"free": TokenCounts(0, 1)}
    assert store.totals() == Totals(0, 1)
    assert store.learn("d1", ["free", "money"], None) == "ham"  # forgotten: the rows go
    assert store.counts(["free", "money"]) == {}
    assert store.totals() == Totals(0, 0)
    assert store.learn("d2", ["lunch"], "ham", user="bob@example.com") is None
    assert store.totals("bob@example.com") == Totals(0, 1)
    assert store.totals() == Totals(0, 1)  # learning for a user counts globally too
    assert store.totals("nobody@example.com") == Totals(0, 0)
    assert store.counts(["lunch"], "nobody@example.com") == {}
    assert store.learned_as("d2", "bob@example.com") == "ham"
    assert store.stats().users == 1
    store.close()


def test_a_batch_is_one_transaction(path: Path) -> None:
    store = SqliteTokenStore(path)
    with pytest.raises(RuntimeError), store.batch():
        store.learn("d1", ["a"], "spam")
        store.learn("d2", ["b"], "ham", user="u@example.com")
        raise RuntimeError("interrupted")
    assert store.totals() == Totals(0, 0)
    assert store.totals("u@example.com") == Totals(0, 0)
    assert store.counts(["a", "b"]) == {}
    with store.batch():
        store.learn("d1", ["a"], "spam")
        store.learn("d2", ["b"], "ham", user="u@example.com")
    assert store.totals() == Totals(1, 1)
    assert store.totals("u@example.com") == Totals(0, 1)
    store.close()


def test_cache_sees_other_connections_commits(path: Path) -> None:
    reader = SqliteTokenStore(path)
    writer = SqliteTokenStore(path)
    writer.learn("d1", ["token"], "spam")
    assert reader.counts(["token", "unknown"]) == {"token": TokenCounts(1, 0)}
    writer.learn("d2", ["token", "unknown"], "spam")
    assert reader.counts(["token", "unknown"]) == {"token": TokenCounts(2, 0), "unknown": TokenCounts(1, 0)}
    reader.learn("d3", ["token"], "ham")
    assert reader.counts(["token"]) == {"token": TokenCounts(2, 1)}
    reader.close()
    writer.close()


def test_expire_and_stats(path: Path) -> None:
    now = [1000.0]
    store = SqliteTokenStore(path, clock=lambda: now[0])
    store.learn("d1", ["old-once", "common"], "spam")
    store.learn("d2", ["common"], "ham")
    now[0] = 5000.0
    store.learn("d3", ["new-once"], "ham")
    assert store.expire(2000.0) == 1  # only the stale one-off token
    assert store.counts(["old-once", "common", "new-once"]).keys() == {"common", "new-once"}
    stats = store.stats()
    assert stats.totals == Totals(1, 2)
    assert stats.tokens == 2
    assert stats.size_bytes > 0
    store.close()


def test_odd_tokens_survive(path: Path) -> None:
    store = SqliteTokenStore(path)
    odd = ['quote"s', "back\\slash", "ünïcödé", "\ud800lone", "tab\there", "[1]", "null\x00byte"]
    store.learn("d1", odd, "spam")
    found = store.counts(odd)
    assert {'quote"s', "back\\slash", "ünïcödé", "tab\there", "[1]"} <= found.keys()
    store.close()


def test_not_a_database_is_unavailable(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not an SQLite database, just text" * 100)
    with pytest.raises(TokenStoreUnavailable, match=r"tokens\.sqlite"):
        SqliteTokenStore(path)


def test_unwritable_place_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TokenStoreUnavailable):
        SqliteTokenStore(blocker / "tokens.sqlite")
