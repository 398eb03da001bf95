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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mailtoaster.spam.classifier import BayesParams, BayesResult, classify
from mailtoaster.spam.mime import ParsedMessage, parse_fields, parse_message, split_header
from mailtoaster.spam.scoring import DEFAULT_REQUIRED, RULES, Rule, SpamScore, score_message
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
    :data:`~mailtoaster.spam.scoring.RULES`). ``min_spam`` and ``min_ham`` (default: the params'
    ``min_learned``) are the messages of each class a scope must have learned before its Bayes result
    counts, SpamAssassin's ``bayes_min_spam_num`` and ``bayes_min_ham_num``.
    """

    def __init__(
        self,
        store: TokenStore,
        *,
        params: BayesParams | None = None,
        required: float = DEFAULT_REQUIRED,
        rules: dict[str, Rule] | None = None,
        min_spam: int | None = None,
        min_ham: int | None = None,
    ) -> None:
        self.store = store
        self.params = params or BayesParams()
        self.required = required
        self.rules = rules or RULES
        self.min_spam = self.params.min_learned if min_spam is None else min_spam
        self.min_ham = self.params.min_learned if min_ham is None else min_ham
        # The minimums are checked here, per class (the classifier has one for both), before the
        # message is tokenized; the classifier's own check must then let through what passed here.
        self._classify_params = replace(self.params, min_learned=0)

    @classmethod
    def open(cls, data_dir: str | Path, store: str = "", **settings: Any) -> SpamFilter:
        """The filter of a server's data directory: by default its SQLite store at
        ``<data_dir>/spam/tokens.sqlite`` (made when missing); ``store`` is the ``[spam] store``
        setting (another SQLite file, or a ``redis://`` URL, see :mod:`mailtoaster.spam.location`).
        Close it with :meth:`close`. Raises :class:`~mailtoaster.spam.store.TokenStoreUnavailable`."""
        from mailtoaster.spam.location import open_store  # it imports this module

        return cls(open_store(store, data_dir), **settings)

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
        :class:`~mailtoaster.spam.store.TokenStoreUnavailable` when the store cannot be read.

        The message is tokenized only when a scope has learned enough for a Bayes result: until
        then the header rules need the parsed message alone, and tokenizing is most of the work."""
        scope, totals = self._scope_for(_user_key(user))
        if self._enough(totals):
            reading = self._read(data)
            message = reading.message
            counts = self.store.counts(reading.tokens, scope)
            bayes = classify(reading.tokens, counts, totals, self._classify_params)
        else:
            message = _parse(data)
            bayes = BayesResult(None, (), totals)
        return self._points(message, bayes, report, required)

    def score_without_bayes(
        self, data: bytes, report: VerifyReport | None = None, *, required: float | None = None
    ) -> SpamScore:
        """The rules that need no token store (header checks and, with a report, authentication):
        what is left to score with when the store is unavailable and the server fails open."""
        return self._points(_parse(data), BayesResult(None, (), Totals(0, 0)), report, required)

    def _points(
        self, message: ParsedMessage, bayes: BayesResult, report: VerifyReport | None, required: float | None
    ) -> SpamScore:
        threshold = self.required if required is None else required
        return score_message(message, bayes, report, threshold, rules=self.rules)

    def bayes(self, tokens: list[str], user: str | None = None) -> BayesResult:
        """The classifier's result for a message's tokens, from the scope that has learned enough."""
        scope, totals = self._scope_for(_user_key(user))
        if not self._enough(totals):
            return BayesResult(None, (), totals)
        return classify(tokens, self.store.counts(tokens, scope), totals, self._classify_params)

    def _scope_for(self, user: str | None) -> tuple[str | None, Totals]:
        if user is not None:
            totals = self.store.totals(user)
            if self._enough(totals):
                return user, totals
        return None, self.store.totals(None)

    def _enough(self, totals: Totals) -> bool:
        return totals.spam >= self.min_spam and totals.ham >= self.min_ham

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


def _parse(data: bytes) -> ParsedMessage:
    """Parse only (as :meth:`SpamFilter._read`, for the rules that need no tokens)."""
    try:
        return parse_message(data)
    except Exception:  # as in _read: hostile input is scored as empty, never an exception
        return _EMPTY


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
