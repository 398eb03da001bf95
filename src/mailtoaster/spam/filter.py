"""The spam filter's one entry point, shared by the server, the CLI and the benchmarks.

:class:`SpamFilter` puts the pieces together over any :class:`~mailtoaster.spam.store.TokenStore`:
parse and tokenize the message (:mod:`~mailtoaster.spam.tokenize`), read the counts of its tokens in
one store call, classify (:mod:`~mailtoaster.spam.classifier`) and add up the rules
(:mod:`~mailtoaster.spam.scoring`). It is synchronous and does only CPU work and store calls, so the
server runs it in a worker thread; it keeps no state between messages, so one instance serves every
thread.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailtoaster.spam.classifier import BayesParams, BayesResult, classify
from mailtoaster.spam.mime import ParsedMessage, parse_fields, parse_message, split_header
from mailtoaster.spam.scoring import DEFAULT_REQUIRED, RULES, Rule, SpamScore, score_message
from mailtoaster.spam.sqlite import SqliteTokenStore
from mailtoaster.spam.store import Label, TokenStore, Totals
from mailtoaster.spam.tokenize import tokenize_parsed
from mailtoaster.verify.report import VerifyReport

STORE_FILE = Path("spam") / "tokens.sqlite"
"""Where the token store lives under a data directory."""
DIGEST_FIELDS = ("message-id", "from", "subject", "date")
"""The header fields that go into a message's digest, with the body."""


class LearnOutcome(enum.StrEnum):
    LEARNED = "learned"
    """Counted for the first time."""
    ALREADY = "already learned"
    """It was learned as this class before: nothing changed."""
    MOVED = "moved"
    """It was learned as the other class; its tokens moved over."""
    FORGOTTEN = "forgotten"
    NOT_LEARNED = "not learned"
    """Asked to forget a message that was never learned."""


@dataclass(frozen=True)
class _Reading:
    message: ParsedMessage
    tokens: list[str]


_EMPTY = ParsedMessage([], [], False)
_SPACE = re.compile(r"\s+")


class SpamFilter:
    """Score and learn messages over a token store.

    ``params`` are the classifier's (Robinson's s and x, clue selection, the minimum learned before
    any Bayes score); ``required`` the default threshold; ``rules`` the point table (default
    :data:`~mailtoaster.spam.scoring.RULES`).
    """

    def __init__(
        self,
        store: TokenStore,
        *,
        params: BayesParams | None = None,
        required: float = DEFAULT_REQUIRED,
        rules: dict[str, Rule] | None = None,
    ) -> None:
        self.store = store
        self.params = params or BayesParams()
        self.required = required
        self.rules = rules or RULES

    @classmethod
    def open(cls, data_dir: str | Path, **settings: Any) -> SpamFilter:
        """The filter of a server's data directory: its SQLite store at
        ``<data_dir>/spam/tokens.sqlite`` (made when missing). Close it with :meth:`close`."""
        return cls(SqliteTokenStore(store_path(data_dir)), **settings)

    def close(self) -> None:
        self.store.close()

    # Scoring --------------------------------------------------------------------------------------

    def score(
        self,
        data: bytes,
        user: str | None = None,
        report: VerifyReport | None = None,
        *,
        required: float | None = None,
    ) -> SpamScore:
        """The message's score for ``user`` (their own filter once they have learned enough, the
        global one until then). Never raises for anything in the message; raises
        :class:`~mailtoaster.spam.store.TokenStoreUnavailable` when the store cannot be read."""
        reading = self._read(data)
        bayes = self.bayes(reading.tokens, user)
        return score_message(
            reading.message,
            bayes,
            report,
            self.required if required is None else required,
            rules=self.rules,
        )

    def bayes(self, tokens: list[str], user: str | None = None) -> BayesResult:
        """The classifier's result for a message's tokens, from the scope that has learned enough."""
        scope, totals = self._scope_for(_user_key(user))
        counts = self.store.counts(tokens, scope) if _enough(totals, self.params) else {}
        return classify(tokens, counts, totals, self.params)

    def _scope_for(self, user: str | None) -> tuple[str | None, Totals]:
        if user is not None:
            totals = self.store.totals(user)
            if _enough(totals, self.params):
                return user, totals
        return None, self.store.totals(None)

    @staticmethod
    def _read(data: bytes) -> _Reading:
        """Parse and tokenize. The reader is built to take any octets; should it still fail on some
        input, the message is scored as if it had no content rather than not at all."""
        try:
            message = parse_message(data)
            return _Reading(message, tokenize_parsed(message))
        except Exception:  # a filter that raises on hostile input is a hole
            return _Reading(_EMPTY, [])

    def tokens(self, data: bytes) -> list[str]:
        """The message's distinct tokens, as learning and scoring see them."""
        return self._read(data).tokens

    # Learning -------------------------------------------------------------------------------------

    def learn(self, data: bytes, label: Label | None, user: str | None = None) -> LearnOutcome:
        """Learn the message as ``label`` (None: forget it) in the global scope and, with ``user``,
        in the user's own; the outcome in the user's scope (the global one without a user)."""
        digest = message_digest(data)
        tokens = self._read(data).tokens
        before = self.store.learn(digest, tokens, label, _user_key(user))
        return _outcome(before, label)

    def learn_many(
        self, messages: Iterable[bytes], label: Label | None, user: str | None = None
    ) -> Iterator[LearnOutcome]:
        """:meth:`learn` for each message, in one store transaction when the store can group them
        (SQLite: one commit instead of one per message, several times faster)."""
        batch = getattr(self.store, "batch", None)
        context: AbstractContextManager[object] = batch() if callable(batch) else nullcontext()
        with context:
            for data in messages:
                yield self.learn(data, label, user)


def store_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / STORE_FILE


def _outcome(before: Label | None, label: Label | None) -> LearnOutcome:
    if label is None:
        return LearnOutcome.FORGOTTEN if before is not None else LearnOutcome.NOT_LEARNED
    if before is None:
        return LearnOutcome.LEARNED
    return LearnOutcome.ALREADY if before == label else LearnOutcome.MOVED


def _enough(totals: Totals, params: BayesParams) -> bool:
    return totals.spam >= params.min_learned and totals.ham >= params.min_learned


def _user_key(user: str | None) -> str | None:
    """Addresses in one case, so ``Alice@Example.com`` and ``alice@example.com`` share a filter."""
    return user.strip().lower() if user else None


def message_digest(data: bytes) -> str:
    """What makes two copies of a message the same message, as a hex SHA-256.

    The body (carriage returns dropped and trailing white space removed, so CRLF and LF copies agree)
    and the unfolded values of Message-ID, From, Subject and Date. Not the whole message: each hop
    adds Received fields, this server adds X-Spam-* and Authentication-Results, a mail reader adds
    Status or X-Keywords, so the same message would be learned once per copy, and moving a scored
    copy from Junk back to the inbox would count it twice instead of moving it. Not the body alone:
    two different messages with the same body (short notices, the same newsletter to two lists) are
    two pieces of evidence. Those four fields are the ones the author's software writes once and
    nobody on the way changes.
    """
    section, body = split_header(data)
    wanted: dict[str, str] = {}
    for name, value in parse_fields(section):
        lower = name.lower()
        if lower in DIGEST_FIELDS and lower not in wanted:
            wanted[lower] = _SPACE.sub(" ", value).strip()
    digest = hashlib.sha256()
    for name in DIGEST_FIELDS:
        digest.update(f"{name}:{wanted.get(name, '')}\n".encode("utf-8", "surrogatepass"))
    digest.update(b"\n")
    tail = body[-_CHUNK:]
    end = len(body) - (len(tail) - len(tail.rstrip()))
    view = memoryview(body)
    for start in range(0, end, _CHUNK):
        digest.update(bytes(view[start : min(end, start + _CHUNK)]).replace(b"\r", b""))
    return digest.hexdigest()


_CHUNK = 1 << 20
