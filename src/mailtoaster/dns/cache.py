"""A bounded, TTL-respecting cache of DNS answers, kept apart from any transport.

The cache knows nothing about *what* deserves caching (that policy lives with the resolver, which
knows negative TTLs and which statuses are temporary); it only stores an :class:`Answer` for a number
of seconds and forgets the least recently used entry when full. The clock is injected so tests can
expire entries without sleeping.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from mailtoaster.dns.types import Answer, RRType

CacheKey = tuple[str, RRType]
"""A normalised name (lower case, no trailing dot) and the record type asked for."""


class _Entry(NamedTuple):
    answer: Answer
    expires_at: float


class AnswerCache:
    """Maps ``(name, type)`` to an answer until its time-to-live runs out; least recently used goes first.

    ``max_entries`` of 0 disables the cache. Expired entries are dropped when they are next looked at
    (and, being the least recently used ones, are usually the first evicted anyway), so there is no
    background sweeping.
    """

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        if max_entries < 0:
            raise ValueError("cache size must not be negative")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def get(self, key: CacheKey) -> Answer | None:
        """The cached answer with ``ttl`` set to the seconds it has left, or None if absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        remaining = entry.expires_at - self._clock()
        if remaining <= 0:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return dataclasses.replace(entry.answer, ttl=math.ceil(remaining))

    def put(self, key: CacheKey, answer: Answer, ttl: float) -> None:
        """Remember ``answer`` for ``ttl`` seconds; a TTL of zero or less means "do not cache"."""
        if ttl <= 0 or self.max_entries == 0:
            return
        self._entries[key] = _Entry(answer, self._clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
