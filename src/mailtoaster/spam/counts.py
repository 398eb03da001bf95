"""A read-only mapping of token counts that keeps plain tuples inside.

A store answers ``counts()`` for a few hundred tokens per message; making a frozen
:class:`~mailtoaster.spam.store.TokenCounts` for each costs more than the database look-up. A
:class:`CountsTable` makes them only when asked, and the classifier reads :attr:`CountsTable.raw`
directly, so scoring never makes them at all. Any store may return one (or any other mapping).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from mailtoaster.spam.store import TokenCounts


class CountsTable(Mapping[str, TokenCounts]):
    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, tuple[int, int]]) -> None:
        self.raw = raw
        """token -> (spam, ham)"""

    def __getitem__(self, token: str) -> TokenCounts:
        spam, ham = self.raw[token]
        return TokenCounts(spam, ham)

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __contains__(self, token: object) -> bool:
        return token in self.raw
