"""What is particular to the SQLite token store (the shared contract is tests/test_spam_stores.py):
the file on disk, transactions, the read cache between connections, errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtoaster.spam import SqliteTokenStore, TokenStoreUnavailable, Totals
from mailtoaster.spam import counts as counts_module
from mailtoaster.spam.counts import CountImage
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
    assert "PRIMARY KEY (scope, id)" in sql


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


def test_token_ids_are_stable_63_bit_integers() -> None:
    from mailtoaster.spam.sqlite import TOKEN_ID_MODULUS, token_id, token_ids

    # fixed values: the ids are on disk, so they must never change between versions or processes
    assert token_id("free") == int.from_bytes(b"free")
    assert token_id("subject:bi:free money") == 5916866984090103264
    tokens = ["free", "ünïcödé", "x" * 200, "\ud800lone", "?lone"]
    ids = token_ids(tokens)
    assert ids == [token_id(token) for token in tokens]
    assert all(0 <= found < TOKEN_ID_MODULUS < 2**63 for found in ids)
    assert ids[3] == ids[4]  # not valid Unicode: counted with "?" in its place, as before


def test_one_at_a_time_learning_goes_through_the_journal(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mailtoaster.spam.sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "JOURNAL_FOLD", 4)
    store = SqliteTokenStore(path)
    reader = SqliteTokenStore(path)
    store.learn("d1", ["a", "b"], "spam")
    store.learn("d2", ["a", "c"], "ham", user="u@example.com")
    pending = sqlite3.connect(path).execute("SELECT COUNT(*) FROM journal").fetchone()[0]
    assert pending == 3  # global d1, global d2, user d2; nothing in tokens yet
    for reading in (store, reader):  # the journal counts at once, in this and other connections
        assert reading.counts(["a", "b", "c", "z"]) == {
            "a": TokenCounts(1, 1),
            "b": TokenCounts(1, 0),
            "c": TokenCounts(0, 1),
        }
        assert reading.counts(["a", "b"], "u@example.com") == {"a": TokenCounts(0, 1)}
    store.learn("d3", ["a"], "spam")  # the journal is folded into tokens
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0
    assert reader.counts(["a", "b"]) == {"a": TokenCounts(2, 1), "b": TokenCounts(1, 0)}
    store.learn("d4", ["b"], "spam")
    assert store.learn("d4", ["b"], "ham") == "spam"  # a move folds first, then takes away
    assert store.learn("d1", ["a", "b"], None) == "spam"
    assert reader.counts(["a", "b"]) == {"a": TokenCounts(1, 1), "b": TokenCounts(0, 1)}
    assert store.stats().tokens == 3
    with pytest.raises(RuntimeError), store.batch():
        store.learn("d5", ["e"], "spam")
        raise RuntimeError("interrupted")
    assert store.counts(["e"]) == {}
    store.close()
    reader.close()


def test_schema_1_is_migrated_on_open(path: Path) -> None:
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE scopes (id INTEGER PRIMARY KEY, user TEXT NOT NULL UNIQUE);
        INSERT INTO scopes VALUES (1, 'u@example.com');
        CREATE TABLE totals (scope INTEGER PRIMARY KEY, spam INTEGER NOT NULL DEFAULT 0,
            ham INTEGER NOT NULL DEFAULT 0);
        INSERT INTO totals VALUES (0, 2, 1), (1, 1, 0);
        CREATE TABLE tokens (scope INTEGER NOT NULL, token TEXT NOT NULL, spam INTEGER NOT NULL,
            ham INTEGER NOT NULL, learned REAL NOT NULL, PRIMARY KEY (scope, token)) WITHOUT ROWID;
        INSERT INTO tokens VALUES (0, 'free', 2, 0, 1000.5), (0, 'lunch', 0, 1, 1000.0),
            (1, 'free', 1, 0, 1000.0);
        CREATE TABLE learned (scope INTEGER NOT NULL, digest TEXT NOT NULL, label TEXT NOT NULL,
            PRIMARY KEY (scope, digest)) WITHOUT ROWID;
        INSERT INTO learned VALUES (0, 'd1', 'spam'), (0, 'd2', 'spam'), (0, 'd3', 'ham'),
            (1, 'd1', 'spam');
        """
    )
    db.commit()
    db.close()
    store = SqliteTokenStore(path)
    assert store.counts(["free", "lunch", "other"]) == {"free": TokenCounts(2, 0), "lunch": TokenCounts(0, 1)}
    assert store.counts(["free"], "u@example.com") == {"free": TokenCounts(1, 0)}
    assert store.totals() == Totals(2, 1)
    assert store.learned_as("d3") == "ham"
    assert store.learn("d3", ["lunch"], None) == "ham"  # forgetting still takes the counts away
    assert store.counts(["lunch"]) == {}
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "2"
    assert (
        "PRIMARY KEY (scope, id)"
        in db.execute("SELECT sql FROM sqlite_master WHERE name = 'tokens'").fetchone()[0]
    )
    db.close()
    SqliteTokenStore(path).close()  # opening again changes nothing


def test_a_newer_schema_is_refused(path: Path) -> None:
    SqliteTokenStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '9' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(TokenStoreUnavailable, match="schema version 9"):
        SqliteTokenStore(path)


_TOKENS = ["a", "b", "c", "d", "e"]
_operation = st.tuples(
    st.sampled_from(["writer", "reader"]),  # which connection acts
    st.sampled_from(["spam", "ham", None, "expire", "count", "batch-then-fail"]),
    st.integers(0, 5),  # message number
    st.sampled_from([None, "u@example.com"]),
    st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=4),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(_operation, max_size=25))
def test_the_in_memory_image_answers_as_the_database(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, operations: list[Any]
) -> None:
    """Two connections learn, move, forget and expire on one file with a tiny journal; after every
    step the reader's counts, which come from its in-memory image of ``tokens`` plus the journal,
    and those of a new connection, which loads the image from its file when that is of the same
    state of ``tokens`` (every scope keeps one here), must be what a new connection reads row by row
    from SQLite (no image: IMAGE_ROWS = 0)."""
    import mailtoaster.spam.sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "JOURNAL_FOLD", 3)
    monkeypatch.setattr(sqlite_module, "IMAGE_FILE_ROWS", 0)
    path = tmp_path_factory.mktemp("image") / "tokens.sqlite"
    now = [1000.0]
    stores = {
        "writer": SqliteTokenStore(path, clock=lambda: now[0]),
        "reader": SqliteTokenStore(path, clock=lambda: now[0]),
    }
    try:
        for who, action, number, user, tokens in operations:
            store = stores[who]
            now[0] += 100
            if action == "expire":
                store.expire(now[0] - 250)
            elif action == "batch-then-fail":
                with pytest.raises(RuntimeError), store.batch():
                    store.learn("never kept", tokens, "spam", user)
                    assert store.counts(tokens, user)  # read inside the batch: its own writes
                    raise RuntimeError("interrupted")
            elif action != "count":
                store.learn(f"m{number}", tokens, action, user)
            with monkeypatch.context() as no_image:
                no_image.setattr(sqlite_module, "IMAGE_ROWS", 0)
                fresh = SqliteTokenStore(path)
                expected = {scope: dict(fresh.counts(_TOKENS, scope)) for scope in (None, "u@example.com")}
                fresh.close()
            loading = SqliteTokenStore(path)
            for reading in (loading, *stores.values()):  # the new one first, before they write files
                for scope, counts in expected.items():
                    assert dict(reading.counts(_TOKENS, scope)) == counts
            loading.close()
    finally:
        for store in stores.values():
            store.close()


def _image_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}-image-*"))


def _learned_and_folded(path: Path, monkeypatch: pytest.MonkeyPatch) -> SqliteTokenStore:
    """A store whose ``tokens`` has changed (a fold), as a real one has: the generation is random."""
    import mailtoaster.spam.sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "JOURNAL_FOLD", 2)
    monkeypatch.setattr(sqlite_module, "IMAGE_FILE_ROWS", 0)
    store = SqliteTokenStore(path)
    for number in range(4):
        store.learn(f"m{number}", [f"t{number}", "common"], "spam" if number % 2 else "ham")
    return store


def test_a_new_connection_loads_the_image_from_its_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mailtoaster.spam.sqlite as sqlite_module

    writer = _learned_and_folded(path, monkeypatch)
    tokens = ["t0", "t1", "t2", "t3", "common", "unknown"]
    expected = dict(writer.counts(tokens))
    assert _image_files(path) == [path.with_name("tokens.sqlite-image-0")]
    writer.close()

    def never(*_args: object) -> None:
        raise AssertionError("read from the database although the file was there")

    read_image = sqlite_module._read_image
    monkeypatch.setattr(sqlite_module, "_read_image", never)
    reader = SqliteTokenStore(path)
    assert (
        dict(reader.counts(tokens))
        == expected
        == {
            "t0": TokenCounts(0, 1),
            "t1": TokenCounts(1, 0),
            "t2": TokenCounts(0, 1),
            "t3": TokenCounts(1, 0),
            "common": TokenCounts(2, 2),
        }
    )
    reader.close()
    monkeypatch.setattr(sqlite_module, "_read_image", read_image)
    monkeypatch.setattr(sqlite_module, "IMAGE_ROWS", 4)  # the file's image has 5 tokens: too many now
    limited = SqliteTokenStore(path)
    assert dict(limited.counts(tokens)) == expected
    assert limited._images == {0: None}  # read row by row, the file not used
    limited.close()


@pytest.mark.parametrize(
    "damage",
    ["flip a byte", "truncate", "garbage", "another generation", "a directory", "empty"],
)
def test_a_damaged_or_foreign_image_file_is_not_used(
    path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """Whatever is wrong with the file, the counts are the database's: the image is built from it
    (and the file written again where it can be)."""
    import mailtoaster.spam.sqlite as sqlite_module

    writer = _learned_and_folded(path, monkeypatch)
    tokens = ["t0", "t1", "common"]
    expected = dict(writer.counts(tokens))
    writer.close()
    image_file = path.with_name("tokens.sqlite-image-0")
    data = image_file.read_bytes()
    if damage == "flip a byte":
        image_file.write_bytes(data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])
    elif damage == "truncate":
        image_file.write_bytes(data[:-8])
    elif damage == "garbage":
        image_file.write_bytes(b"mailtoaster token image 1\n{not json\n" + data[-100:])
    elif damage == "another generation":
        db = sqlite3.connect(path)
        db.execute("UPDATE meta SET value = ? WHERE key = 'tokens'", ("f" * 32,))
        db.commit()
        db.close()
    elif damage == "a directory":
        image_file.unlink()
        image_file.mkdir()
    else:
        image_file.write_bytes(b"")
    built = []
    read_image = sqlite_module._read_image

    def counted(*args: Any) -> CountImage | None:
        built.append(1)
        return read_image(*args)

    monkeypatch.setattr(sqlite_module, "_read_image", counted)
    reader = SqliteTokenStore(path)
    assert dict(reader.counts(tokens)) == expected
    reader.close()
    assert built == [1]
    if damage != "a directory":  # written again, and the next connection loads it
        monkeypatch.setattr(sqlite_module, "_read_image", lambda *_args: built.append(2))
        again = SqliteTokenStore(path)
        assert dict(again.counts(tokens)) == expected
        again.close()
        assert built == [1]
    assert not list(path.parent.glob(".*.tmp"))


def test_no_image_file_for_a_generation_an_older_version_counted(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Older versions counted changes of ``tokens`` (0, 1, 2...): two files could share a count, so
    such a generation never names a file; the next change sets a random one."""
    store = _learned_and_folded(path, monkeypatch)
    store.close()
    for image_file in _image_files(path):
        image_file.unlink()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '7' WHERE key = 'tokens'")
    db.commit()
    db.close()
    reader = SqliteTokenStore(path)
    assert reader.counts(["common"])["common"] == TokenCounts(2, 2)
    assert _image_files(path) == []
    reader.learn("m9", ["t9"], "spam")
    reader.learn("m10", ["t10"], "spam")  # a fold: a random generation
    assert reader.counts(["common"])["common"] == TokenCounts(2, 2)
    assert _image_files(path) != []
    reader.close()


_ids = st.lists(st.integers(0, 4000), unique=True, max_size=60)
"""Ids in a narrow range, up to a few hundred in an image: with the smallest buckets, most share one."""


@settings(max_examples=200, deadline=None)
@given(
    initial=_ids,
    batches=st.lists(st.tuples(_ids, st.integers(0, 3), st.integers(0, 3)), max_size=6),
    asked=st.lists(st.integers(0, 4000), max_size=80),
)
@pytest.mark.parametrize("min_bits", [counts_module._MIN_BITS, 0])
def test_the_count_image_answers_as_a_dictionary(
    min_bits: int, initial: list[int], batches: list[tuple[list[int], int, int]], asked: list[int]
) -> None:
    """Made from rows, then grown by journal batches (counts added to ids it has, ids it lacks
    inserted, landing in full buckets and going to the overflow, which makes the image grow): every
    look-up, of ids it has and ids it never saw, is what a dictionary of the same additions says. With
    as few buckets as the rows allow, many ids go through the overflow and the growing."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(counts_module, "_MIN_BITS", min_bits)
        _check_image(initial, batches, asked)


def _check_image(initial: list[int], batches: list[tuple[list[int], int, int]], asked: list[int]) -> None:
    model = {token_id: (token_id % 7 + 1, token_id % 5) for token_id in initial}
    rows = np.array([(token_id, *model[token_id]) for token_id in initial], dtype=np.int64).reshape(-1, 3)
    image = CountImage.of_rows(rows)
    for ids, spam, ham in batches:
        image.add(np.array(ids, dtype=np.int64), np.full(len(ids), spam), np.full(len(ids), ham))
        for token_id in ids:
            old = model.get(token_id, (0, 0))
            model[token_id] = (old[0] + spam, old[1] + ham)
    wanted = [*model, *asked]
    spam_found, ham_found = image.lookup(np.array(wanted, dtype=np.int64))
    assert list(zip(spam_found.tolist(), ham_found.tolist(), strict=True)) == [
        model.get(token_id, (0, 0)) for token_id in wanted
    ]
    assert len(image) == len(model)
    assert image.ids.size <= max(counts_module._SLOTS << counts_module._MIN_BITS, 6 * len(model))


def test_the_count_image_grows_as_ids_are_added() -> None:
    """Ids added to a full image go to the overflow only until it rebuilds at a size that holds them;
    ids that share a bucket at every size stay in the overflow without making it grow further."""
    image = CountImage(0)
    smallest = image.ids.size
    spread = np.arange(0, 40 * smallest, 7, dtype=np.int64)
    image.add(spread, np.ones(len(spread), dtype=np.int64), np.zeros(len(spread), dtype=np.int64))
    assert image.ids.size >= len(spread) * 3 // 2
    assert len(image.overflow[0]) * 16 <= image.ids.size
    assert image.lookup(spread)[0].tolist() == [1] * len(spread)
    # Ids whose hash is a small number: bucket 0 at any size up to 2**50 buckets.
    inverse = pow(int(counts_module._GOLDEN), -1, 2**64)
    made = [token_id for token_id in (k * inverse % 2**64 for k in range(10000)) if token_id < 2**63]
    same_bucket = np.array(made, dtype=np.int64)
    grown = CountImage(0)
    grown.add(same_bucket, np.zeros(len(made), dtype=np.int64), np.full(len(made), 2, dtype=np.int64))
    assert grown.ids.size <= 6 * len(made)
    assert grown.lookup(same_bucket)[1].tolist() == [2] * len(made)
    assert len(grown.overflow[0]) == len(made) - counts_module._SLOTS
