"""Sequence sets (RFC 3501 §9 ``sequence-set``): ``1:5,7,9:*``, ``*``, reversed ranges like ``5:1``.

A :class:`SequenceSet` is what the client wrote, kept small: a range ``1:*`` stays one pair of bounds
however many messages the mailbox holds. It becomes concrete only against a mailbox, through
:meth:`SequenceSet.resolve`, where ``*`` stands for the largest number in use (the message count for
sequence numbers, the highest UID for UIDs) and each range is put low to high and merged with its
neighbours. The resulting :class:`NumberSet` answers membership by bisection and picks the members of a
sorted list of UIDs range by range, so ``UID FETCH 1:*`` in a 50,000-message mailbox costs the answer,
not four billion candidates.

As RFC 3501 §6.4.8 has it, ``N:*`` with N above the highest UID still names the highest UID (the range
is ``max:N``, reversed). :func:`format_sequence_set` goes the other way, for COPYUID and APPENDUID.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

MAX_NUMBER = 4294967295
"""The largest ``nz-number`` (RFC 3501 §9): sequence numbers and UIDs are 32-bit unsigned."""

STAR = None
"""A range bound written ``*``: the largest number in use, known only against a mailbox."""

_NUMBER = re.compile(r"[1-9][0-9]*")


class SequenceSetError(ValueError):
    """A sequence set that breaks the grammar, or names a message number the mailbox does not have."""


@dataclass(frozen=True)
class NumberSet:
    """Numbers as sorted, disjoint, non-adjacent inclusive intervals ``(low, high)``."""

    intervals: tuple[tuple[int, int], ...]

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int):
            return False
        index = bisect.bisect_right(self.intervals, (number, MAX_NUMBER + 1)) - 1
        return index >= 0 and self.intervals[index][0] <= number <= self.intervals[index][1]

    def __iter__(self) -> Iterator[int]:
        for low, high in self.intervals:
            yield from range(low, high + 1)

    def __bool__(self) -> bool:
        return bool(self.intervals)

    @property
    def largest(self) -> int:
        """The highest member; 0 when the set is empty."""
        return self.intervals[-1][1] if self.intervals else 0

    def select(self, candidates: Sequence[int]) -> list[int]:
        """The members of ``candidates`` (sorted ascending, e.g. a mailbox's UIDs) that are in the set,
        found by bisection per interval: cost grows with the answer, not with the ranges' width."""
        selected: list[int] = []
        for low, high in self.intervals:
            start = bisect.bisect_left(candidates, low)
            end = bisect.bisect_right(candidates, high, lo=start)
            selected.extend(candidates[start:end])
        return selected


@dataclass(frozen=True)
class SequenceSet:
    """A parsed ``sequence-set``: its ranges as written, ``None`` standing for ``*``.

    A single number ``7`` is the range ``(7, 7)``; order and overlaps are kept until :meth:`resolve`.
    """

    ranges: tuple[tuple[int | None, int | None], ...]

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        """``text`` as a sequence set; :class:`SequenceSetError` says what is wrong with it."""
        if not text:
            raise SequenceSetError("Empty sequence set")
        ranges = []
        for item in text.split(","):
            first, separator, last = item.partition(":")
            if separator and ":" in last:
                raise SequenceSetError(f"Invalid sequence set range {_shorten(item)}")
            start = _parse_bound(first, text)
            ranges.append((start, _parse_bound(last, text) if separator else start))
        return cls(tuple(ranges))

    @classmethod
    def of(cls, *numbers: int) -> SequenceSet:
        """The set of the given numbers (each at least 1)."""
        if not numbers or min(numbers) < 1 or max(numbers) > MAX_NUMBER:
            raise SequenceSetError(f"No valid sequence set holds {numbers!r}")
        return cls(tuple((number, number) for number in numbers))

    def __str__(self) -> str:
        return ",".join(_format_range(start, end) for start, end in self.ranges)

    @property
    def uses_star(self) -> bool:
        return any(STAR in pair for pair in self.ranges)

    def resolve(self, largest: int) -> NumberSet:
        """The numbers named when ``*`` is ``largest`` (0 for an empty mailbox: ``*`` then names
        nothing that exists). Numbers above ``largest`` stay in: the caller decides whether they are an
        error (:meth:`message_numbers`) or simply match nothing (SEARCH, UIDs)."""
        bounded = sorted(
            tuple(sorted((largest if start is STAR else start, largest if end is STAR else end)))
            for start, end in self.ranges
        )
        merged: list[tuple[int, int]] = []
        for low, high in bounded:
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return NumberSet(tuple((max(low, 1), high) for low, high in merged if high >= 1))

    def message_numbers(self, count: int) -> list[int]:
        """The message sequence numbers named in a mailbox of ``count`` messages, ascending.

        For FETCH, STORE, COPY and MOVE: a number above ``count``, or ``*`` in an empty mailbox, is an
        error (RFC 3501 §9 calls such a set invalid; Dovecot answers ``BAD Invalid messageset``). SEARCH
        takes out-of-range numbers silently: use ``resolve(count)`` and test membership instead.
        """
        numbers = self.resolve(count)
        if count == 0 or numbers.largest > count:
            raise SequenceSetError("Invalid messageset: no such message")
        return list(numbers)

    def uids(self, existing: Sequence[int]) -> list[int]:
        """The UIDs of ``existing`` (sorted ascending: the mailbox's UIDs) that this set names;
        UIDs that do not exist are skipped without error (RFC 3501 §6.4.8)."""
        return self.resolve(existing[-1] if existing else 0).select(existing)


def format_sequence_set(numbers: Iterable[int]) -> str:
    """Numbers as a compact set string, in the order given: runs of consecutive ascending numbers
    become ``low:high`` (``1,2,3,5,9,8`` gives ``1:3,5,9,8``). Order is kept because COPYUID pairs its
    source and destination sets position by position; sort first for the shortest form."""
    runs: list[list[int]] = []
    for number in numbers:
        if number < 1 or number > MAX_NUMBER:
            raise SequenceSetError(f"{number} is not a valid message number or UID")
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    if not runs:
        raise SequenceSetError("An empty list of numbers has no sequence set")
    return ",".join(_format_range(low, high) for low, high in runs)


def _parse_bound(text: str, whole: str) -> int | None:
    if text == "*":
        return STAR
    if not _NUMBER.fullmatch(text):
        raise SequenceSetError(
            f"Invalid sequence set {_shorten(whole)}: {_shorten(text)} is not a number or '*'"
        )
    number = int(text) if len(text) <= len(str(MAX_NUMBER)) else MAX_NUMBER + 1
    if number > MAX_NUMBER:
        raise SequenceSetError(
            f"Invalid sequence set {_shorten(whole)}: {_shorten(text)} is above {MAX_NUMBER}"
        )
    return number


def _shorten(text: str) -> str:
    """``text`` quoted for an error message, cut to a readable length."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _format_range(start: int | None, end: int | None) -> str:
    first = "*" if start is STAR else str(start)
    if start == end:
        return first
    return f"{first}:{'*' if end is STAR else end}"
