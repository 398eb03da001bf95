"""The token store behind the Bayes filter: one interface, SQLite (the embedded default) and Redis
(several servers sharing one filter).

Counts are kept per *scope*: the global scope (``user=None``) that every learned message counts in,
and one scope per user who has learned messages of their own. Learning for a user counts in the
user's scope **and** in the global one, so the global filter learns from everyone; the classifier
reads the user's scope once it holds enough messages, the global one until then.

A message is learned at most once per scope, known by its digest: learning it again as the same class
does nothing, learning it as the other class moves its tokens from one side to the other, forgetting
it takes them away. Every such change is atomic (a crash or a second server never leaves a message
half counted).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

Label = Literal["spam", "ham"]


def as_label(value: object) -> Label | None:
    """A label as a store keeps it (text), or None for anything else."""
    if value == "spam":
        return "spam"
    if value == "ham":
        return "ham"
    return None


class TokenStoreUnavailable(Exception):
    """The store cannot be reached or used (Redis down, database locked or unreadable); the message
    says which and why. The server turns it into a temporary failure, never into unfiltered mail."""


@dataclass(frozen=True)
class TokenCounts:
    spam: int
    """In how many learned spam messages the token occurs (once per message)."""
    ham: int


@dataclass(frozen=True)
class Totals:
    spam: int
    """Learned spam messages in the scope."""
    ham: int


@dataclass(frozen=True)
class StoreStats:
    totals: Totals
    """The global scope's."""
    tokens: int
    """Distinct tokens in the global scope."""
    users: int
    """Scopes of users who learned messages of their own."""
    size_bytes: int
    """The database's size on disk (SQLite) or in memory (Redis ``used_memory`` of our keys' database)."""


class TokenStore(Protocol):
    def totals(self, user: str | None = None) -> Totals: ...

    def counts(self, tokens: Collection[str], user: str | None = None) -> Mapping[str, TokenCounts]:
        """The counts of those of ``tokens`` that the scope knows; unknown tokens are left out."""
        ...

    def learned_as(self, digest: str, user: str | None = None) -> Label | None:
        """How the message with this digest was learned in the scope, if it was."""
        ...

    def learn(
        self, digest: str, tokens: Collection[str], label: Label | None, user: str | None = None
    ) -> Label | None:
        """Count the message as ``label`` (None: forget it) in the global scope and, when ``user`` is
        given, in the user's; ``tokens`` are the message's distinct tokens. Returns how the message was
        learned before in the narrowest scope (None: it was not), so the caller can say
        learned / already learned / moved. Records when each token was last learned, for ``expire``."""
        ...

    def expire(self, unused_since: float) -> int:
        """Remove tokens not learned since that Unix time and seen in at most one message; returns how
        many went. Stale one-off tokens are most of a store's size and carry no evidence."""
        ...

    def stats(self) -> StoreStats: ...

    def close(self) -> None: ...
