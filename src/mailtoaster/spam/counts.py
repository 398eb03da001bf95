"""A read-only mapping of token counts that keeps plain tuples inside.

A store answers ``counts()`` for a few hundred tokens per message; making a frozen
:class:`~mailtoaster.spam.store.TokenCounts` for each costs more than the database look-up. A
:class:`CountsTable` makes them only when asked, and the classifier reads :attr:`CountsTable.raw`
directly, so scoring never makes them at all. Any store may return one (or any other mapping).

``raw`` may also hold ``None`` for a token the store does not know (a store then builds the table
with one C-level ``dict(zip(...))`` instead of a Python loop that leaves those out); the mapping
itself shows only the known tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from mailtoaster.spam.store import TokenCounts


class CountsTable(Mapping[str, TokenCounts]):
    __slots__ = ("raw",)

    def __init__(self, raw: Mapping[str, tuple[int, int] | None]) -> None:
        self.raw = raw
        """token -> (spam, ham), or None for a token the store does not know"""

    def __getitem__(self, token: str) -> TokenCounts:
        pair = self.raw[token]
        if pair is None:
            raise KeyError(token)
        return TokenCounts(pair[0], pair[1])

    def __iter__(self) -> Iterator[str]:
        return (token for token, pair in self.raw.items() if pair is not None)

    def __len__(self) -> int:
        return sum(pair is not None for pair in self.raw.values())

    def __contains__(self, token: object) -> bool:
        return self.raw.get(token) is not None  # type: ignore[call-overload]
