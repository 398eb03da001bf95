"""The spam filter as a pipeline stage: every inbound message scored, SpamAssassin's fields on each
local copy, Junk by each recipient's own threshold.

One score per message (tokenizing is the expensive part): from the recipient's own Bayes filter when
the message has one local mailbox, from the global filter when it has several. Each mailbox's copy
then gets the fields for its user's threshold (the user's, else the domain's, else ``[spam]
required``), and goes to Junk when the score reaches it, so a user who asked for a lower threshold
gets a message in Junk that the others get in their INBOX.

Scoring a large message, or any message with a Redis store, runs in a worker thread (tokenizing is
CPU work, Redis is across the network). A small message with the local SQLite store is scored on
the event loop: its tokens cost about a millisecond, less than a hand-off to a thread, whose
contention for the GIL cost more CPU than the scoring itself in profiles; the server's several
worker processes keep that millisecond from holding up the others (docs/smtp.md). What can go wrong,
and what the sender sees:

* the message is over ``max_size``: not scored (as SpamAssassin's spamc), accepted, its fields say so
  (``tests=UNSCORED_TOO_BIG``);
* the token store is unavailable: ``451 4.7.1`` so the sender retries, never unfiltered mail; with
  ``fail_open``, accepted and scored by the rules that need no store (``tests=...,BAYES_UNAVAILABLE``),
  with a WARNING.

Incoming ``X-Spam-*`` fields are removed from every copy, whatever happens: the sender can write them,
and a mail reader (or a maildrop recipe) would take a forged ``X-Spam-Flag`` for ours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mailtoaster.config import SpamSettings
from mailtoaster.message import Message
from mailtoaster.pipeline.process import (
    FilterVerdict,
    MailboxVerdict,
    Submission,
    on_loop_if_small,
    spooled_bytes,
)
from mailtoaster.spam import DEFAULT_REQUIRED, RuleHit, SpamFilter, SpamScore, TokenStoreUnavailable
from mailtoaster.spam.scoring import render_fields, spam_fields
from mailtoaster.verify import VerifyReport

log = logging.getLogger("mailtoaster.spam")

REMOVED_FIELDS = ("x-spam-",)
"""Incoming header fields removed from every scored message, by lower-case name prefix."""
TEMPFAIL_REPLY = "451 4.7.1 Spam filter temporarily unavailable, please try again later"
INLINE_SIZE = 16 * 1024
"""The largest message scored on the event loop when the token store is local (a few milliseconds
of tokenizing at most)."""
DEFAULT_MAX_SIZE = SpamSettings.max_size
"""Octets; larger messages are not scored (SpamAssassin's spamc stops at 500 KB too)."""
TOO_BIG = RuleHit("UNSCORED_TOO_BIG", 0.0, "Message larger than [spam] max_size: not scored")
BAYES_UNAVAILABLE = RuleHit(
    "BAYES_UNAVAILABLE", 0.0, "Token store unavailable: scored without Bayes ([spam] fail_open)"
)

Thresholds = Callable[[str], float | None]
"""A local mailbox's own threshold (the user's, else the domain's); None: the default one."""


@dataclass(frozen=True)
class SpamCheckSettings:
    required: float = DEFAULT_REQUIRED
    """The threshold of mailboxes that have none of their own."""
    max_size: int = DEFAULT_MAX_SIZE
    fail_open: bool = False
    """Accept (scored without Bayes) when the token store is unavailable, instead of ``451``."""
    inline_size: int = 0
    """Messages up to this many octets are scored on the event loop; 0: all in a worker thread."""


@dataclass(frozen=True)
class _Scored:
    score: SpamScore
    thresholds: Mapping[str, float]
    """Each local mailbox's threshold."""


def _no_thresholds(mailbox: str) -> None:
    return None


class SpamCheck:
    """The :class:`~mailtoaster.pipeline.ContentFilter` that runs :class:`SpamFilter` on inbound mail.

    The pipeline calls it for inbound mail only: relay clients and authenticated users send mail out,
    which is signed, not judged."""

    def __init__(
        self,
        spam_filter: SpamFilter,
        settings: SpamCheckSettings | None = None,
        *,
        thresholds: Thresholds = _no_thresholds,
    ) -> None:
        self._filter = spam_filter
        self._settings = settings or SpamCheckSettings()
        self._thresholds = thresholds

    async def check(
        self,
        message: Message,
        submission: Submission,
        report: VerifyReport | None,
        mailboxes: Sequence[str],
    ) -> FilterVerdict:
        if not mailboxes:  # only forwarded elsewhere: no copy of ours carries a verdict
            return FilterVerdict(removes=REMOVED_FIELDS)
        if submission.size > self._settings.max_size:
            return await self._too_big(submission, mailboxes)
        try:
            scored = await on_loop_if_small(
                self._small(submission), self._score, submission, mailboxes, report
            )
        except TokenStoreUnavailable as error:
            return await self._unavailable(error, submission, mailboxes, report)
        return _verdict(scored, note=_note(scored))

    def _small(self, submission: Submission) -> bool:
        return submission.size <= self._settings.inline_size

    # -- in a worker thread, or inline for a small message -----------------------------------------

    def _score(
        self, submission: Submission, mailboxes: Sequence[str], report: VerifyReport | None
    ) -> _Scored:
        """One score for the message: the recipient's own filter when there is one recipient."""
        data = _read_spool(submission, self._settings.max_size)
        user = mailboxes[0] if len(mailboxes) == 1 else None
        score = self._filter.score(data, user, report, required=self._settings.required)
        return _Scored(score, self._threshold_map(mailboxes))

    def _score_without_bayes(
        self, submission: Submission, mailboxes: Sequence[str], report: VerifyReport | None
    ) -> _Scored:
        data = _read_spool(submission, self._settings.max_size)
        score = self._filter.score_without_bayes(data, report, required=self._settings.required)
        return _Scored(_with_hit(score, BAYES_UNAVAILABLE), self._threshold_map(mailboxes))

    def _threshold_map(self, mailboxes: Sequence[str]) -> dict[str, float]:
        default = self._settings.required
        return {mailbox: _or_default(self._thresholds(mailbox), default) for mailbox in mailboxes}

    # -- what could not be scored -------------------------------------------------------------------

    async def _too_big(self, submission: Submission, mailboxes: Sequence[str]) -> FilterVerdict:
        log.info(
            "spam check skipped: client=%s size=%d is over [spam] max_size=%d",
            submission.client_ip,
            submission.size,
            self._settings.max_size,
        )
        thresholds = await asyncio.to_thread(self._threshold_map, mailboxes)
        unscored = SpamScore(0.0, self._settings.required, (TOO_BIG,), None)
        return _verdict(_Scored(unscored, thresholds), note="spam=unscored(too-big)")

    async def _unavailable(
        self,
        error: TokenStoreUnavailable,
        submission: Submission,
        mailboxes: Sequence[str],
        report: VerifyReport | None,
    ) -> FilterVerdict:
        """``451`` (the sender keeps the message and retries), or with ``fail_open`` the rules that
        need no store."""
        if not self._settings.fail_open:
            log.error("spam filter unavailable, answering 451: client=%s: %s", submission.client_ip, error)
            return FilterVerdict(reply=TEMPFAIL_REPLY, note="spam=unavailable")
        log.warning(
            "spam filter unavailable, accepting without Bayes ([spam] fail_open): client=%s: %s",
            submission.client_ip,
            error,
        )
        scored = await on_loop_if_small(
            self._small(submission), self._score_without_bayes, submission, mailboxes, report
        )
        return _verdict(scored, note=_note(scored) + " bayes=unavailable")


def _read_spool(submission: Submission, limit: int) -> bytes:
    """The message as received, at most ``limit`` octets (the size was checked; a spool file that
    grew since must not make the filter read more)."""
    return spooled_bytes(submission, limit)


def _or_default(threshold: float | None, default: float) -> float:
    return default if threshold is None else threshold


def _with_hit(score: SpamScore, hit: RuleHit) -> SpamScore:
    return dataclasses.replace(score, hits=(*score.hits, hit))


def _verdict(scored: _Scored, *, note: str) -> FilterVerdict:
    """Each mailbox's fields and Junk vote, for its own threshold."""
    mailboxes = {}
    for mailbox, required in scored.thresholds.items():
        own = dataclasses.replace(scored.score, required=required)
        mailboxes[mailbox] = MailboxVerdict(render_fields(spam_fields(own)), own.is_spam)
    return FilterVerdict(mailboxes=mailboxes, removes=REMOVED_FIELDS, note=note)


def _note(scored: _Scored) -> str:
    """``spam=yes score=7.3`` for the log line: ``some`` when only some recipients' thresholds say
    spam."""
    votes = {scored.score.points >= required for required in scored.thresholds.values()}
    verdict = "some" if len(votes) > 1 else ("yes" if True in votes else "no")
    return f"spam={verdict} score={scored.score.points:.1f}"
