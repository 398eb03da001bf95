"""Where the token store is: the ``[spam] store`` setting turned into a store and a filter.

One function for the server and every command that reads or learns (``learn``, ``score``,
``spam stats``, ``junk sweep``, ``verify``), so that they cannot disagree about which filter they use:
a command that learned into one store while the server scored from another would train nothing.

The setting is empty (``<data_dir>/spam/tokens.sqlite``), an absolute path to another SQLite file, or
a Redis URL (``redis://``, ``rediss://``, ``unix://``); :class:`mailtoaster.config.SpamSettings`
checks its form when the configuration is read.
"""

from __future__ import annotations

from pathlib import Path

from mailtoaster.config import SPAM_STORE_SCHEMES, SpamSettings
from mailtoaster.spam.filter import SpamFilter, store_path
from mailtoaster.spam.memory import MemoryTokenStore
from mailtoaster.spam.sqlite import SqliteTokenStore
from mailtoaster.spam.store import TokenStore

DEFAULT_TIMEOUT = SpamSettings.timeout
DEFAULT_PREFIX = SpamSettings.redis_prefix


def is_redis(location: str) -> bool:
    return location.startswith(SPAM_STORE_SCHEMES)


def sqlite_path(location: str, data_dir: str | Path) -> Path:
    """The SQLite file a non-Redis location names (empty: the data directory's)."""
    return Path(location) if location else store_path(data_dir)


def describe(location: str, data_dir: str | Path) -> str:
    """The store for messages: the SQLite path, or the Redis URL without its password."""
    if is_redis(location):
        from mailtoaster.spam.redisstore import safe_url

        return safe_url(location)
    return str(sqlite_path(location, data_dir))


def open_store(
    location: str,
    data_dir: str | Path,
    *,
    create: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    prefix: str = DEFAULT_PREFIX,
) -> TokenStore:
    """The store ``location`` names. Without ``create``, a missing SQLite file gives an empty store in
    memory (scoring and statistics never make a database as a side effect). A Redis is asked for a
    PING at once. Raises :class:`~mailtoaster.spam.store.TokenStoreUnavailable`."""
    if is_redis(location):
        from mailtoaster.spam.redisstore import RedisTokenStore  # imports redis-py: only when needed

        return RedisTokenStore(location, prefix=prefix, timeout=timeout)
    path = sqlite_path(location, data_dir)
    if not create and not path.exists():
        return MemoryTokenStore()
    return SqliteTokenStore(path)


def open_filter(settings: SpamSettings, data_dir: str | Path, *, create: bool = True) -> SpamFilter:
    """The filter the configuration describes: its store, threshold and learning minimums."""
    store = open_store(
        settings.store, data_dir, create=create, timeout=settings.timeout, prefix=settings.redis_prefix
    )
    return SpamFilter(store, required=settings.required, min_spam=settings.min_spam, min_ham=settings.min_ham)
