"""Token counts as arrays: what a store answers for a message's tokens, and the SQLite store's image.

A store answers ``counts()`` for a few hundred tokens per message, and the classifier works out every
token's probability from them. Done one token at a time in Python, with a frozen
:class:`~mailtoaster.spam.store.TokenCounts` or even a tuple per token, that was most of the cost of
scoring a message; as two arrays of counts aligned with the token list, the classifier computes all
the probabilities in a few vectorised steps (:mod:`~mailtoaster.spam.classifier`). A
:class:`CountsTable` holds those arrays and is still a read-only mapping (token -> counts, for the
tokens the store knows) for any other reader. Any store may return one (or any other mapping).

:class:`CountImage` is a scope's whole ``tokens`` table in memory as three sorted arrays (token id,
spam, ham): 24 bytes a token where a dictionary took about 85, and a message's look-ups are one
vectorised binary search, which keeps many memory reads in flight at once where a dictionary probe
waits for each (with half a million tokens the table does not fit the processor's caches, so the
waiting is what a look-up costs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from mailtoaster.spam.store import TokenCounts

Counts = NDArray[np.int64]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NOTHING = (0, 0)


class CountsTable(Mapping[str, TokenCounts]):
    """The counts of a list of tokens: ``spam[i]`` and ``ham[i]`` are those of ``tokens[i]``, 0 and 0
    for a token the store does not know. As a mapping it shows the known tokens only."""

    __slots__ = ("_index", "ham", "spam", "tokens")

    def __init__(self, tokens: Sequence[str], spam: Counts, ham: Counts) -> None:
        self.tokens = tokens
        self.spam = spam
        self.ham = ham
        self._index: dict[str, int] | None = None

    @classmethod
    def of_pairs(cls, tokens: Sequence[str], pairs: Iterable[tuple[int, int] | None]) -> CountsTable:
        """The table of ``tokens`` from their (spam, ham) pairs in the same order, None for unknown."""
        table = np.array([pair or _NOTHING for pair in pairs], dtype=np.int64).reshape(-1, 2)
        return cls(tokens, table[:, 0], table[:, 1])

    def _position(self, token: str) -> int | None:
        if self._index is None:
            self._index = {known: index for index, known in enumerate(self.tokens)}
        index = self._index.get(token)
        if index is None or not (self.spam[index] or self.ham[index]):
            return None
        return index

    def __getitem__(self, token: str) -> TokenCounts:
        index = self._position(token)
        if index is None:
            raise KeyError(token)
        return TokenCounts(int(self.spam[index]), int(self.ham[index]))

    def __iter__(self) -> Iterator[str]:
        known = np.flatnonzero((self.spam != 0) | (self.ham != 0)).tolist()
        return iter(dict.fromkeys(self.tokens[index] for index in known))

    def __len__(self) -> int:
        return sum(1 for _token in self)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self._position(token) is not None


class CountImage:
    """A scope's ``tokens`` rows in memory, as a hash table made of arrays.

    ``table`` has a power-of-two number of rows, at least 5/4 of the tokens: row :meth:`_rows` of a
    token id holds (id, spam, ham) of that token, or id -1 when no token has that row. A token whose row
    was taken when it came goes to ``overflow``, three sorted arrays (ids, spam, ham). A message's
    look-up is then one gather of its rows (the processor fetches them all at once, where a dictionary
    probe waits for each) and a binary search of the few that found another token in their row; an
    empty row says at once that the store does not know the token, as rows are never emptied."""

    __slots__ = ("overflow", "shift", "table")

    def __init__(self, size: int) -> None:
        bits = 10
        while 1 << bits < size * 5 // 4:  # at most 80% of the rows taken, a third of the tokens in overflow
            bits += 1
        rows = 1 << bits
        self.shift = np.uint64(64 - bits)
        self.table = np.zeros((rows, 3), dtype=np.int64)
        self.table[:, 0] = -1
        nothing = np.empty(0, dtype=np.int64)
        self.overflow = (nothing, nothing, nothing)

    @classmethod
    def of_rows(cls, rows: Counts) -> CountImage:
        """From (id, spam, ham) rows with distinct ids, as an array of shape (n, 3)."""
        image = cls(len(rows))
        image._insert(rows)
        return image

    def __len__(self) -> int:
        return len(self.contents()[0])

    def contents(self) -> tuple[Counts, Counts, Counts]:
        """(ids, spam, ham) of every token in the image."""
        taken = self.table[self.table[:, 0] >= 0]
        keys, spam, ham = self.overflow
        return (
            np.concatenate([taken[:, 0], keys]),
            np.concatenate([taken[:, 1], spam]),
            np.concatenate([taken[:, 2], ham]),
        )

    def lookup(self, ids: Counts) -> tuple[Counts, Counts]:
        """The (spam, ham) arrays of ``ids``, 0 and 0 for ids not in the image."""
        rows = self.table[self._rows(ids)]  # a copy: ours to change
        other = rows[:, 0] != ids
        elsewhere = np.flatnonzero(other & (rows[:, 0] >= 0))
        rows[other, 1:] = 0
        spam, ham = rows[:, 1], rows[:, 2]
        keys, extra_spam, extra_ham = self.overflow
        if len(elsewhere) and len(keys):
            wanted = ids[elsewhere]
            found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
            hit = keys[found] == wanted
            spam[elsewhere[hit]] = extra_spam[found[hit]]
            ham[elsewhere[hit]] = extra_ham[found[hit]]
        return spam, ham

    def _rows(self, ids: Counts) -> NDArray[np.uint64]:
        """The table row of each id: Fibonacci hashing (the id times 2**64 over the golden ratio, the
        top bits of the product), as a short token's id is its own octets and its low bits are letters."""
        slots = ids.view(np.uint64) * _GOLDEN
        slots >>= self.shift
        return slots

    def add(self, ids: Counts, spam: Counts, ham: Counts) -> None:
        """Add counts to the image: ``ids`` distinct, in any order; ids it lacks are inserted."""
        slots = self._rows(ids)
        rows = self.table[slots]
        here = rows[:, 0] == ids
        self.table[slots[here], 1] += spam[here]
        self.table[slots[here], 2] += ham[here]
        keys, extra_spam, extra_ham = self.overflow
        found = np.minimum(np.searchsorted(keys, ids), max(len(keys) - 1, 0))
        there = ~here & (keys[found] == ids) if len(keys) else np.zeros(len(ids), dtype=bool)
        extra_spam[found[there]] += spam[there]
        extra_ham[found[there]] += ham[there]
        new = ~here & ~there
        if new.any():
            self._insert(np.stack([ids[new], spam[new], ham[new]], axis=1))

    def _insert(self, rows: Counts) -> None:
        """Put rows of ids the image lacks into their table rows, or the overflow when taken."""
        slots = self._rows(rows[:, 0])
        free = self.table[slots, 0] < 0
        # Where several new ids want one free row, one of them is written there last: that one has it.
        self.table[slots[free], 0] = rows[free, 0]
        placed = self.table[slots, 0] == rows[:, 0]
        self.table[slots[placed], 1:] = rows[placed, 1:]
        left = rows[~placed]
        if len(left):
            merged = np.concatenate([np.stack(self.overflow, axis=1), left])
            merged = merged[np.argsort(merged[:, 0], kind="stable")]
            self.overflow = (merged[:, 0].copy(), merged[:, 1].copy(), merged[:, 2].copy())
