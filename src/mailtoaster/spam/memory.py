"""A token store in a dictionary: for tests, cross-validation and throw-away filters.

It follows the :class:`~mailtoaster.spam.store.TokenStore` contract to the letter (scopes, learn once
by digest, moves, forget, expiry) but keeps nothing after the process ends and holds one lock, so it
is the reference the persistent stores can be compared with, not a store for a server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping

from mailtoaster.spam.store import Label, StoreStats, TokenCounts, Totals

_Scope = str | None


class MemoryTokenStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[_Scope, dict[str, list[float]]] = {None: {}}
        """scope -> token -> [spam, ham, last learned]"""
        self._totals: dict[_Scope, list[int]] = {None: [0, 0]}
        self._learned: dict[_Scope, dict[str, Label]] = {None: {}}

    def totals(self, user: str | None = None) -> Totals:
        spam, ham = self._totals.get(user, (0, 0))
        return Totals(spam, ham)

    def counts(self, tokens: Collection[str], user: str | None = None) -> Mapping[str, TokenCounts]:
        table = self._tokens.get(user, {})
        found = {}
        for token in tokens:
            entry = table.get(token)
            if entry is not None:
                found[token] = TokenCounts(int(entry[0]), int(entry[1]))
        return found

    def learned_as(self, digest: str, user: str | None = None) -> Label | None:
        return self._learned.get(user, {}).get(digest)

    def learn(
        self, digest: str, tokens: Collection[str], label: Label | None, user: str | None = None
    ) -> Label | None:
        distinct = set(tokens)
        now = self._clock()
        with self._lock:
            before = self._learn_scope(None, digest, distinct, label, now)
            if user is not None:
                before = self._learn_scope(user, digest, distinct, label, now)
            return before

    def _learn_scope(
        self, scope: _Scope, digest: str, tokens: set[str], label: Label | None, now: float
    ) -> Label | None:
        learned = self._learned.setdefault(scope, {})
        before = learned.get(digest)
        if before == label:
            return before
        table = self._tokens.setdefault(scope, {})
        totals = self._totals.setdefault(scope, [0, 0])
        if before is not None:
            self._count(table, tokens, before, -1, now)
            totals[_index(before)] -= 1
            del learned[digest]
        if label is not None:
            self._count(table, tokens, label, +1, now)
            totals[_index(label)] += 1
            learned[digest] = label
        return before

    @staticmethod
    def _count(table: dict[str, list[float]], tokens: set[str], label: Label, step: int, now: float) -> None:
        column = _index(label)
        for token in tokens:
            entry = table.get(token)
            if entry is None:
                if step < 0:
                    continue
                entry = table[token] = [0, 0, now]
            entry[column] = max(0, entry[column] + step)
            entry[2] = now
            if entry[0] == 0 and entry[1] == 0:
                del table[token]

    def expire(self, unused_since: float) -> int:
        removed = 0
        with self._lock:
            for table in self._tokens.values():
                stale = [
                    token
                    for token, (spam, ham, last) in table.items()
                    if last < unused_since and spam + ham <= 1
                ]
                for token in stale:
                    del table[token]
                removed += len(stale)
        return removed

    def stats(self) -> StoreStats:
        users = sum(1 for scope in self._learned if scope is not None)
        return StoreStats(self.totals(), len(self._tokens[None]), users, 0)

    def close(self) -> None:
        pass


def _index(label: Label) -> int:
    return 0 if label == "spam" else 1
