"""One conformance suite for every :class:`~mailtoaster.spam.store.TokenStore`: SQLite and Redis.

Each test runs once per store. Redis is Debian's ``redis-server``, started once per session on
127.0.0.1 at a free port without persistence (``--save "" --appendonly no``) in a temporary directory,
and emptied (``FLUSHDB``) before each test. Without ``redis-server`` the Redis tests skip, except under
``CI=true``, where they fail: ``scripts/test`` installs it.
"""

from __future__ import annotations

import importlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from mailtoaster.spam.store import Label, TokenCounts, TokenStore, TokenStoreUnavailable, Totals
from tests.redisserver import RedisServer, flush, free_port, require_redis_server, running_redis

PROMPT = 2.5
"""Seconds within which an unreachable Redis must be reported (the store's timeouts are shorter)."""

ZERO = TokenCounts(spam=0, ham=0)
BOB = "bob@example.com"
ALICE = "alice@example.com"

StoreFactory = Callable[[], TokenStore]


# -- the stores -----------------------------------------------------------------------------------


def _sqlite_store_class() -> Any:
    try:
        return importlib.import_module("mailtoaster.spam.sqlite").SqliteTokenStore
    except ImportError:
        return None


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes store objects that all share one empty database; every one made is closed after."""
    made: list[TokenStore] = []
    if request.param == "sqlite":
        store_class = _sqlite_store_class()
        if store_class is None:
            pytest.skip("mailtoaster.spam.sqlite (SqliteTokenStore) is not there yet")
        path = tmp_path / "spam.sqlite"

        def factory() -> TokenStore:
            store: TokenStore = store_class(path)
            made.append(store)
            return store

    else:
        from mailtoaster.spam.redisstore import RedisTokenStore

        server: RedisServer = request.getfixturevalue("redis_server")
        flush(server.url)

        def factory() -> TokenStore:
            store: TokenStore = RedisTokenStore(server.url)
            made.append(store)
            return store

    yield factory
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> TokenStore:
    return make_store()


def counts_of(store: TokenStore, tokens: list[str], user: str | None = None) -> dict[str, TokenCounts]:
    """Every token's counts, unknown ones as zero (a store may keep or drop a token at 0/0)."""
    found = store.counts(tokens, user)
    return {token: found.get(token, ZERO) for token in tokens}


# -- learning -------------------------------------------------------------------------------------

SPAM_TOKENS = ["viagra", "free", "money", "click"]
HAM_TOKENS = ["meeting", "agenda", "free"]


def test_an_empty_store_knows_nothing(store: TokenStore) -> None:
    assert store.totals() == Totals(spam=0, ham=0)
    assert store.totals(BOB) == Totals(spam=0, ham=0)
    assert dict(store.counts(SPAM_TOKENS)) == {}
    assert dict(store.counts([])) == {}
    assert store.learned_as("d1") is None


def test_learning_counts_the_message_and_its_tokens(store: TokenStore) -> None:
    assert store.learn("d1", SPAM_TOKENS, "spam") is None
    assert store.learn("d2", HAM_TOKENS, "ham") is None
    assert store.totals() == Totals(spam=1, ham=1)
    counts = store.counts([*SPAM_TOKENS, "meeting", "never-seen"])
    assert counts["viagra"] == TokenCounts(spam=1, ham=0)
    assert counts["free"] == TokenCounts(spam=1, ham=1)
    assert counts["meeting"] == TokenCounts(spam=0, ham=1)
    assert "never-seen" not in counts
    assert set(counts) == {*SPAM_TOKENS, "meeting"} and len(counts) == len({*SPAM_TOKENS, "meeting"})
    assert dict(counts)["viagra"] == TokenCounts(spam=1, ham=0)
    assert store.learned_as("d1") == "spam"
    assert store.learned_as("d2") == "ham"


def test_learning_twice_as_the_same_class_changes_nothing(store: TokenStore) -> None:
    store.learn("d1", SPAM_TOKENS, "spam")
    before = counts_of(store, SPAM_TOKENS)
    assert store.learn("d1", SPAM_TOKENS, "spam") == "spam"
    assert store.totals() == Totals(spam=1, ham=0)
    assert counts_of(store, SPAM_TOKENS) == before


def test_learning_as_the_other_class_moves_the_message(store: TokenStore) -> None:
    store.learn("d1", SPAM_TOKENS, "spam")
    store.learn("d2", ["free", "lunch"], "spam")
    assert store.learn("d1", SPAM_TOKENS, "ham") == "spam"
    assert store.totals() == Totals(spam=1, ham=1)
    assert store.learned_as("d1") == "ham"
    counts = counts_of(store, [*SPAM_TOKENS, "lunch"])
    assert counts["viagra"] == TokenCounts(spam=0, ham=1)
    assert counts["free"] == TokenCounts(spam=1, ham=1)
    assert counts["lunch"] == TokenCounts(spam=1, ham=0)


def test_forgetting_takes_the_message_away(store: TokenStore) -> None:
    store.learn("d1", SPAM_TOKENS, "spam")
    store.learn("d2", ["free"], "ham")
    assert store.learn("d1", SPAM_TOKENS, None) == "spam"
    assert store.learned_as("d1") is None
    assert store.totals() == Totals(spam=0, ham=1)
    counts = counts_of(store, SPAM_TOKENS)
    assert counts["viagra"] == ZERO
    assert counts["free"] == TokenCounts(spam=0, ham=1)
    # Forgetting what is not learned does nothing; learning it again counts it again.
    assert store.learn("d1", SPAM_TOKENS, None) is None
    assert store.totals() == Totals(spam=0, ham=1)
    assert store.learn("d1", SPAM_TOKENS, "spam") is None
    assert store.counts(["viagra"])["viagra"] == TokenCounts(spam=1, ham=0)


def test_duplicate_tokens_count_once_per_message(store: TokenStore) -> None:
    store.learn("d1", ["free", "free", "money"], "spam")
    assert store.counts(["free"])["free"] == TokenCounts(spam=1, ham=0)


def test_tokens_are_any_text(store: TokenStore) -> None:
    tokens = ["subject:Grüße", "url:example.com/a b", "🙂", "with:colon", "x" * 300]
    store.learn("d1", tokens, "ham")
    assert counts_of(store, tokens) == dict.fromkeys(tokens, TokenCounts(spam=0, ham=1))


# -- scopes ---------------------------------------------------------------------------------------


def test_a_users_messages_count_in_their_scope_and_the_global_one(store: TokenStore) -> None:
    assert store.learn("d1", SPAM_TOKENS, "spam", BOB) is None
    assert store.totals(BOB) == Totals(spam=1, ham=0)
    assert store.totals() == Totals(spam=1, ham=0)
    assert store.totals(ALICE) == Totals(spam=0, ham=0)
    assert store.counts(["viagra"], BOB)["viagra"] == TokenCounts(spam=1, ham=0)
    assert store.counts(["viagra"])["viagra"] == TokenCounts(spam=1, ham=0)
    assert dict(store.counts(["viagra"], ALICE)) == {}
    assert store.learned_as("d1", BOB) == "spam"
    assert store.learned_as("d1") == "spam"
    assert store.learned_as("d1", ALICE) is None


def test_each_scope_learns_a_message_once(store: TokenStore) -> None:
    store.learn("d1", SPAM_TOKENS, "spam", BOB)
    # The same message again: known globally, so only the new scope counts it.
    assert store.learn("d1", SPAM_TOKENS, "spam") == "spam"
    assert store.learn("d1", SPAM_TOKENS, "spam", ALICE) is None
    assert store.totals() == Totals(spam=1, ham=0)
    assert store.totals(ALICE) == Totals(spam=1, ham=0)
    assert store.counts(["viagra"])["viagra"] == TokenCounts(spam=1, ham=0)
    # Alice moves it: her scope and the global one follow, Bob's stays as he learned it.
    assert store.learn("d1", SPAM_TOKENS, "ham", ALICE) == "spam"
    assert store.totals(ALICE) == Totals(spam=0, ham=1)
    assert store.totals() == Totals(spam=0, ham=1)
    assert store.totals(BOB) == Totals(spam=1, ham=0)
    assert store.counts(["viagra"], BOB)["viagra"] == TokenCounts(spam=1, ham=0)
    assert store.counts(["viagra"])["viagra"] == TokenCounts(spam=0, ham=1)


def test_forgetting_for_a_user_forgets_in_both_scopes(store: TokenStore) -> None:
    store.learn("d1", SPAM_TOKENS, "spam", BOB)
    assert store.learn("d1", SPAM_TOKENS, None, BOB) == "spam"
    assert store.totals(BOB) == Totals(spam=0, ham=0)
    assert store.totals() == Totals(spam=0, ham=0)
    assert counts_of(store, ["viagra"], BOB)["viagra"] == ZERO
    assert counts_of(store, ["viagra"])["viagra"] == ZERO


# -- expiry and stats -----------------------------------------------------------------------------


def test_expire_removes_stale_tokens_seen_once(store: TokenStore) -> None:
    store.learn("d1", ["once-a", "once-b", "twice"], "spam")
    store.learn("d2", ["once-c", "twice"], "ham")
    assert store.expire(time.time() - 3600) == 0  # everything was learned since
    assert set(store.counts(["once-a", "once-b", "once-c", "twice"])) == {
        "once-a",
        "once-b",
        "once-c",
        "twice",
    }
    assert store.expire(time.time() + 3600) == 3
    assert dict(store.counts(["once-a", "once-b", "once-c", "twice"])) == {
        "twice": TokenCounts(spam=1, ham=1)
    }
    # The messages stay learned: learning them again is still a no-op.
    assert store.totals() == Totals(spam=1, ham=1)
    assert store.learn("d1", ["once-a", "once-b", "twice"], "spam") == "spam"


def test_expire_covers_user_scopes(store: TokenStore) -> None:
    store.learn("d1", ["once", "twice"], "spam", BOB)
    store.learn("d2", ["twice"], "spam", BOB)
    store.expire(time.time() + 3600)
    assert dict(store.counts(["once", "twice"], BOB)) == {"twice": TokenCounts(spam=2, ham=0)}
    assert dict(store.counts(["once", "twice"])) == {"twice": TokenCounts(spam=2, ham=0)}


def test_forgetting_after_expiry_never_goes_below_zero(store: TokenStore) -> None:
    store.learn("d1", ["once", "twice"], "spam")
    store.learn("d2", ["twice"], "spam")
    store.expire(time.time() + 3600)
    assert store.learn("d1", ["once", "twice"], None) == "spam"
    assert counts_of(store, ["once", "twice"]) == {"once": ZERO, "twice": TokenCounts(spam=1, ham=0)}
    assert store.totals() == Totals(spam=1, ham=0)


def test_stats(store: TokenStore) -> None:
    store.learn("d1", SPAM_TOKENS, "spam")
    store.learn("d2", ["lunch", "money"], "spam", BOB)
    store.learn("d3", HAM_TOKENS, "ham", ALICE)
    stats = store.stats()
    assert stats.totals == Totals(spam=2, ham=1)
    assert stats.tokens == len(set(SPAM_TOKENS) | {"lunch", "money"} | set(HAM_TOKENS))
    assert stats.users == 2
    assert stats.size_bytes > 0


# -- two servers ----------------------------------------------------------------------------------


def test_two_stores_learning_the_same_messages_at_once_count_each_once(make_store: StoreFactory) -> None:
    first, second = make_store(), make_store()
    messages = 15
    start = threading.Barrier(2)

    def learn_all(store: TokenStore) -> list[Label | None]:
        start.wait(timeout=10)
        return [store.learn(f"d{n}", ["shared", f"own-{n}"], "spam", BOB) for n in range(messages)]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(learn_all, [first, second]))
    for n in range(messages):
        assert sorted(str(result[n]) for result in results) == ["None", "spam"], n
    for store in (first, second):
        assert store.totals() == Totals(spam=messages, ham=0)
        assert store.totals(BOB) == Totals(spam=messages, ham=0)
        assert store.counts(["shared"])["shared"] == TokenCounts(spam=messages, ham=0)
        assert store.counts(["own-3"], BOB)["own-3"] == TokenCounts(spam=1, ham=0)


def test_a_second_store_sees_what_the_first_learned(make_store: StoreFactory) -> None:
    first = make_store()
    first.learn("d1", SPAM_TOKENS, "spam")
    second = make_store()
    assert second.learned_as("d1") == "spam"
    assert second.learn("d1", SPAM_TOKENS, "ham") == "spam"
    assert first.totals() == Totals(spam=0, ham=1)


# -- Redis only -----------------------------------------------------------------------------------


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    flush(redis_server.url)
    return redis_server.url


def test_redis_expiry_follows_the_time_each_token_was_last_learned(redis_url: str) -> None:
    from mailtoaster.spam.redisstore import RedisTokenStore

    now = [1_000_000.0]
    with RedisTokenStore(redis_url, clock=lambda: now[0]) as store:
        store.learn("d1", ["old", "both"], "spam")
        now[0] += 1000
        store.learn("d2", ["new", "both"], "ham")
        assert store.expire(1_000_500.0) == 1  # "old"; "both" is in two messages
        assert dict(store.counts(["old", "new", "both"])) == {
            "new": TokenCounts(spam=0, ham=1),
            "both": TokenCounts(spam=1, ham=1),
        }
        now[0] += 1000
        store.learn("d2", ["new", "both"], None)  # forgetting is not learning: "both" keeps its time
        assert store.expire(1_001_500.0) == 1
        assert dict(store.counts(["old", "new", "both"])) == {}


def test_redis_keys_live_under_the_prefix(redis_url: str) -> None:
    import redis

    from mailtoaster.spam.redisstore import RedisTokenStore

    with RedisTokenStore(redis_url, prefix="one:") as one, RedisTokenStore(redis_url, prefix="two:") as two:
        one.learn("d1", ["a"], "spam", BOB)
        assert two.totals() == Totals(spam=0, ham=0)
        assert two.learned_as("d1") is None
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert sorted(client.keys("*")) == [
            "one:learned:global",
            f"one:learned:user:{BOB}",
            "one:tokens:global",
            f"one:tokens:user:{BOB}",
            "one:totals:global",
            f"one:totals:user:{BOB}",
            "one:users",
        ]
    finally:
        client.close()


def test_redis_counts_many_tokens_in_one_round_trip(redis_url: str) -> None:
    from mailtoaster.spam.redisstore import RedisTokenStore

    tokens = [f"token-{n}" for n in range(3000)]  # more than one script batch
    with RedisTokenStore(redis_url) as store:
        assert store.learn("big", tokens, "spam") is None
        calls: list[tuple[Any, ...]] = []
        client = store._client
        original: Callable[..., Any] = client.execute_command

        def counting(*args: Any, **options: Any) -> Any:
            calls.append(args)
            return original(*args, **options)

        client.execute_command = counting  # type: ignore[method-assign]
        counts = store.counts(tokens)
        assert len(calls) == 1 and calls[0][0] == "HMGET"
        assert len(counts) == 3000 and counts["token-2999"] == TokenCounts(spam=1, ham=0)
        assert store.stats().tokens == 3000


# -- Redis unreachable ----------------------------------------------------------------------------


def _unavailable(url: str, **options: Any) -> tuple[str, float]:
    from mailtoaster.spam.redisstore import RedisTokenStore

    started = time.monotonic()
    with pytest.raises(TokenStoreUnavailable) as caught:
        RedisTokenStore(url, **options)
    return str(caught.value), time.monotonic() - started


def test_a_refused_connection_is_reported_at_once() -> None:
    port = free_port()  # nothing listens there
    message, seconds = _unavailable(f"redis://:hunter2@127.0.0.1:{port}/0")
    assert seconds < PROMPT
    assert f"127.0.0.1:{port}" in message
    assert "refused" in message.lower()
    assert "hunter2" not in message


def test_a_redis_that_does_not_answer_times_out() -> None:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts the connection; nobody ever answers
        port = silent.getsockname()[1]
        message, seconds = _unavailable(f"redis://127.0.0.1:{port}/0", timeout=0.3)
    assert seconds < PROMPT
    assert f"127.0.0.1:{port}" in message
    assert "timeout" in message.lower() or "timed out" in message.lower()


def test_a_bad_url_is_reported() -> None:
    message, _ = _unavailable("http://127.0.0.1:6379/0")
    assert "invalid Redis URL" in message


def test_a_redis_that_goes_away_later_is_reported_on_every_call() -> None:
    from mailtoaster.spam.redisstore import RedisTokenStore

    with running_redis(require_redis_server()) as server:
        store = RedisTokenStore(server.url, timeout=0.5)
        store.learn("d1", ["a"], "spam")
    try:
        calls: list[Callable[[], object]] = [
            store.totals,
            lambda: store.counts(["a"]),
            lambda: store.learned_as("d1"),
            lambda: store.learn("d2", ["b"], "ham"),
            lambda: store.expire(time.time()),
            store.stats,
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(TokenStoreUnavailable, match=f"127.0.0.1:{server.port}"):
                call()
            assert time.monotonic() - started < PROMPT
    finally:
        store.close()
