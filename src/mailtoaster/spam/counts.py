"""Token counts as arrays: what a store answers for a message's tokens, and the SQLite store's image.

A store answers ``counts()`` for a few hundred tokens per message, and the classifier works out every
token's probability from them. Done one token at a time in Python, with a frozen
:class:`~mailtoaster.spam.store.TokenCounts` or even a tuple per token, that was most of the cost of
scoring a message; as two arrays of counts aligned with the token list, the classifier computes all
the probabilities in a few vectorised steps (:mod:`~mailtoaster.spam.classifier`). A
:class:`CountsTable` holds those arrays and is still a read-only mapping (token -> counts, for the
tokens the store knows) for any other reader. Any store may return one (or any other mapping).

:class:`CountImage` is a scope's whole ``tokens`` table in memory as a hash table made of arrays: 24
bytes a slot, 1.5 to 3 slots a token (25 MB for the half million of the corpus store; a dictionary
took 45), and a message's look-ups are one vectorised gather of buckets, which keeps many memory reads
in flight at once where a dictionary probe waits for each of its three or four in turn (half a million
tokens do not fit the processor's caches, so the waiting is what a look-up costs).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from mailtoaster.spam.store import TokenCounts

Counts = NDArray[np.int64]
_GOLDEN = np.array(0x9E3779B97F4A7C15, dtype=np.uint64)  # 0-d arrays: numpy takes them faster than scalars
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


_SLOTS = 8
"""Ids in a bucket of :class:`CountImage`: eight 64-bit ids are one 64-byte cache line, and the
look-up reads a bucket's eight match flags (one byte each) as one 64-bit number."""
_MIN_BITS = 7
"""The fewest buckets of a :class:`CountImage`: 2**7, 1024 slots."""


class CountImage:
    """A scope's ``tokens`` rows in memory, as a hash table made of arrays.

    ``ids`` is a power-of-two number of buckets of :data:`_SLOTS` slots, at least 1.5 slots a token:
    bucket :meth:`_buckets` of a token id holds that id in one of its slots, filled from the first
    (-1 in a slot no token has yet), and ``counts`` holds the (spam, ham) of each slot. A token that came
    to a full bucket goes to ``overflow``, three sorted arrays (ids, spam, ham): with about four tokens
    a bucket, one token in a hundred or fewer. A message's look-up is one gather of its buckets (the
    processor fetches them all at once, where a dictionary probe waits for each), one comparison of
    each with its id, one gather of the counts found, and a binary search for the few that met a full
    bucket without their id; a slot never empties, so a bucket with room says at once that the store
    does not know the token. When the overflow grows past a sixteenth of the slots (ids added to the
    image), the image rebuilds itself at twice the size."""

    __slots__ = ("counts", "ids", "overflow", "shift")

    def __init__(self, size: int) -> None:
        bits = _MIN_BITS
        while (1 << bits) * _SLOTS < size * 3 // 2:
            bits += 1
        self.shift = np.array(64 - bits, dtype=np.uint64)
        self.ids = np.full((1 << bits, _SLOTS), -1, dtype=np.int64)
        self.counts = np.zeros((1 << bits, _SLOTS, 2), dtype=np.int64)
        nothing = np.empty(0, dtype=np.int64)
        self.overflow = (nothing, nothing, nothing)

    @classmethod
    def of_rows(cls, rows: Counts) -> CountImage:
        """From (id, spam, ham) rows with distinct ids, as an array of shape (n, 3)."""
        image = cls(len(rows))
        image._insert(rows, fresh=True)
        return image

    @classmethod
    def of_tables(cls, ids: Counts, counts: Counts, overflow: tuple[Counts, Counts, Counts]) -> CountImage:
        """From the arrays of another image (:attr:`ids`, :attr:`counts`, :attr:`overflow`), as they
        are: ``ids`` of shape (2**k, 8) with k at least :data:`_MIN_BITS`, ``counts`` (2**k, 8, 2)."""
        buckets = len(ids)
        if buckets & (buckets - 1) or buckets < 1 << _MIN_BITS or ids.shape != (buckets, _SLOTS):
            raise ValueError(f"not the tables of an image: ids of shape {ids.shape}")
        if counts.shape != (buckets, _SLOTS, 2) or len({len(array) for array in overflow}) != 1:
            raise ValueError(f"not the tables of an image: counts of shape {counts.shape}")
        image = cls(0)
        image.shift = np.array(64 - (buckets.bit_length() - 1), dtype=np.uint64)
        image.ids, image.counts, image.overflow = ids, counts, overflow
        return image

    def __len__(self) -> int:
        return int(np.count_nonzero(self.ids >= 0)) + len(self.overflow[0])

    def contents(self) -> tuple[Counts, Counts, Counts]:
        """(ids, spam, ham) of every token in the image."""
        taken = self.ids >= 0
        counts = self.counts[taken]
        keys, spam, ham = self.overflow
        return (
            np.concatenate([self.ids[taken], keys]),
            np.concatenate([counts[:, 0], spam]),
            np.concatenate([counts[:, 1], ham]),
        )

    def lookup(self, ids: Counts) -> tuple[Counts, Counts]:
        """The (spam, ham) arrays of ``ids``, 0 and 0 for ids not in the image."""
        buckets = self._buckets(ids)
        candidates = self.ids.take(buckets, axis=0)
        match = candidates == ids[:, None]
        hit = match.view(np.uint64)[:, 0] != 0  # a bucket's eight answers, read as one number
        slots = match.argmax(axis=1)
        slots += buckets * _SLOTS
        found = self.counts.reshape(-1, 2).take(slots, axis=0)  # a copy: ours to change
        found *= hit[:, None]
        keys, extra_spam, extra_ham = self.overflow
        if len(keys):
            elsewhere = (~hit & (candidates[:, -1] >= 0)).nonzero()[0]
            if len(elsewhere):
                wanted = ids[elsewhere]
                place = np.minimum(keys.searchsorted(wanted), len(keys) - 1)
                there = keys[place] == wanted
                found[elsewhere[there], 0] = extra_spam[place[there]]
                found[elsewhere[there], 1] = extra_ham[place[there]]
        return found[:, 0], found[:, 1]

    def _buckets(self, ids: Counts) -> NDArray[np.intp]:
        """The bucket of each id: Fibonacci hashing (the id times 2**64 over the golden ratio, the top
        bits of the product), as a short token's id is its own octets and its low bits are letters."""
        buckets = ids.view(np.uint64) * _GOLDEN
        buckets >>= self.shift
        return buckets.view(np.intp)

    def add(self, ids: Counts, spam: Counts, ham: Counts) -> None:
        """Add counts to the image: ``ids`` distinct, in any order; ids it lacks are inserted."""
        buckets = self._buckets(ids)
        match = self.ids[buckets] == ids[:, None]
        here = match.any(axis=1)
        slots = match.argmax(axis=1)[here]
        self.counts[buckets[here], slots, 0] += spam[here]
        self.counts[buckets[here], slots, 1] += ham[here]
        keys, extra_spam, extra_ham = self.overflow
        place = np.minimum(keys.searchsorted(ids), max(len(keys) - 1, 0))
        there = ~here & (keys[place] == ids) if len(keys) else np.zeros(len(ids), dtype=bool)
        extra_spam[place[there]] += spam[there]
        extra_ham[place[there]] += ham[there]
        new = ~here & ~there
        if new.any():
            self._insert(np.stack([ids[new], spam[new], ham[new]], axis=1), fresh=False)
            self._grow()

    def _insert(self, rows: Counts, *, fresh: bool) -> None:
        """Put rows of ids the image lacks into the first free slots of their buckets, or the overflow
        when a bucket is full. ``fresh``: the image is still empty."""
        buckets = self._buckets(rows[:, 0])
        order = buckets.argsort()
        ordered = buckets[order]
        # The rank of each row among the rows of its bucket, after the slots already taken.
        starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
        ranks = np.empty_like(order)
        ranks[order] = np.arange(len(rows)) - np.repeat(starts, np.diff(np.append(starts, len(rows))))
        if not fresh:
            ranks += np.count_nonzero(self.ids.take(buckets, axis=0) >= 0, axis=1)
        fits = ranks < _SLOTS
        slots = (buckets * _SLOTS + ranks)[fits]
        self.ids.reshape(-1)[slots] = rows[fits, 0]
        counts = self.counts.reshape(-1)  # one column at a time: a fifth of the time of both at once
        counts[slots * 2] = rows[fits, 1]
        counts[slots * 2 + 1] = rows[fits, 2]
        left = rows[~fits]
        if not len(left):
            return
        merged = np.concatenate([np.stack(self.overflow, axis=1), left])
        merged = merged[merged[:, 0].argsort(kind="stable")]
        self.overflow = (merged[:, 0].copy(), merged[:, 1].copy(), merged[:, 2].copy())

    def _grow(self) -> None:
        """Rebuild, at twice the slots or the 1.5 a token of a new image, when ids added since the
        image was made have filled buckets (more than a sixteenth of the slots' worth in the overflow)
        and the tokens take more than a third of the slots. Ids that share a bucket at every size
        (made to, by someone who had their tokens learned) stay in the overflow past that: a binary
        search, and the image never more than three slots a token."""
        if len(self.overflow[0]) * 16 <= self.ids.size:
            return
        ids, spam, ham = self.contents()
        if len(ids) * 3 <= self.ids.size:
            return
        grown = CountImage(max(len(ids), self.ids.size * 4 // 3))  # at least twice the slots
        grown._insert(np.stack([ids, spam, ham], axis=1), fresh=True)
        self.ids, self.counts, self.overflow, self.shift = (
            grown.ids,
            grown.counts,
            grown.overflow,
            grown.shift,
        )
