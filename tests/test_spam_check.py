"""The spam filter's pipeline stage (``pipeline/spamfilter.py``), the filter's learning minimums and
where its store is (``spam/location.py``), without a server: an in-memory store, spool files in
``tmp_path``."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import pytest

from mailtoaster.message import Message
from mailtoaster.pipeline import FilterVerdict, Submission
from mailtoaster.pipeline.spamfilter import TEMPFAIL_REPLY, SpamCheck, SpamCheckSettings
from mailtoaster.policy import ClientPolicy
from mailtoaster.spam import (
    MemoryTokenStore,
    SpamFilter,
    SqliteTokenStore,
    TokenCounts,
    TokenStoreUnavailable,
    Totals,
)
from mailtoaster.spam import filter as filter_module
from mailtoaster.spam.location import describe, open_store
from tests.redisserver import free_port
from tests.spamtraining import ham_message, spam_message

ALICE = "alice@example.org"
BOB = "bob@example.org"
LEARNED = 5
"""Each class learned by the filters here, with minimums to match: quick, and plenty for these
messages."""


def trained_filter() -> SpamFilter:
    spam_filter = SpamFilter(MemoryTokenStore(), min_spam=LEARNED, min_ham=LEARNED)
    list(spam_filter.learn_many((spam_message(index) for index in range(LEARNED)), "spam"))
    list(spam_filter.learn_many((ham_message(index) for index in range(LEARNED)), "ham"))
    return spam_filter


def submission(tmp_path: Path, data: bytes) -> Submission:
    spool = tmp_path / "in.1.spool"
    spool.write_bytes(data)
    return Submission(
        client_ip="192.0.2.7",
        client_name="client.example",
        mail_from="someone@example.net",
        recipients=(ALICE,),
        policy=ClientPolicy(),
        authenticated_as=None,
        tls=False,
        extended=True,
        spool=spool,
        size=len(data),
    )


async def check(
    stage: SpamCheck, tmp_path: Path, data: bytes, mailboxes: tuple[str, ...] = (ALICE,)
) -> FilterVerdict:
    return await stage.check(Message.parse(data), submission(tmp_path, data), None, mailboxes)


class DownStore(MemoryTokenStore):
    """A store whose every read fails, as a Redis that went away."""

    calls = 0

    def totals(self, user: str | None = None) -> Totals:
        DownStore.calls += 1
        raise TokenStoreUnavailable("Redis at 127.0.0.1:1 db 0: ConnectionError: refused")

    def counts(self, tokens: Collection[str], user: str | None = None) -> Mapping[str, TokenCounts]:
        raise TokenStoreUnavailable("Redis at 127.0.0.1:1 db 0: ConnectionError: refused")


# -- the stage ------------------------------------------------------------------------------------


async def test_spam_gets_the_fields_and_the_junk_vote_of_each_mailbox(tmp_path: Path) -> None:
    thresholds = {BOB: 50.0}
    stage = SpamCheck(trained_filter(), thresholds=thresholds.get)
    verdict = await check(stage, tmp_path, spam_message(100), (ALICE, BOB))
    assert verdict.reply is None and verdict.fields == b"" and verdict.spam is False
    alice, bob = verdict.mailboxes[ALICE], verdict.mailboxes[BOB]
    assert alice.spam and not bob.spam
    assert alice.fields.startswith(b"X-Spam-Flag: YES\r\nX-Spam-Score: ")
    assert b"X-Spam-Status: Yes, score=" in alice.fields and b"required=5.0" in alice.fields
    assert b"X-Spam-Status: No, score=" in bob.fields and b"required=50.0" in bob.fields
    assert verdict.removes == ("x-spam-",)
    assert verdict.note.startswith("spam=some score=")


async def test_ham_is_ham_for_everyone(tmp_path: Path) -> None:
    verdict = await check(SpamCheck(trained_filter()), tmp_path, ham_message(100), (ALICE, BOB))
    assert not any(own.spam for own in verdict.mailboxes.values())
    assert verdict.note.startswith("spam=no score=-")


async def test_one_recipient_is_scored_with_their_own_filter(tmp_path: Path) -> None:
    """Bob's own filter has learned the opposite of Alice's: each verdict comes from its user's."""
    spam_filter = SpamFilter(MemoryTokenStore(), min_spam=LEARNED, min_ham=LEARNED)
    bob, alice = range(LEARNED), range(LEARNED, 2 * LEARNED)  # different messages: different digests
    list(spam_filter.learn_many((ham_message(index) for index in bob), "spam", BOB))
    list(spam_filter.learn_many((spam_message(index) for index in bob), "ham", BOB))
    list(spam_filter.learn_many((spam_message(index) for index in alice), "spam", ALICE))
    list(spam_filter.learn_many((ham_message(index) for index in alice), "ham", ALICE))
    stage = SpamCheck(spam_filter)
    assert (await check(stage, tmp_path, spam_message(101), (BOB,))).mailboxes[BOB].spam is False
    assert (await check(stage, tmp_path, spam_message(101), (ALICE,))).mailboxes[ALICE].spam is True


async def test_a_message_over_max_size_is_not_read(tmp_path: Path) -> None:
    DownStore.calls = 0
    stage = SpamCheck(SpamFilter(DownStore()), SpamCheckSettings(max_size=100))
    verdict = await check(stage, tmp_path, spam_message(102))
    assert DownStore.calls == 0 and verdict.reply is None
    assert b"tests=UNSCORED_TOO_BIG" in verdict.mailboxes[ALICE].fields
    assert verdict.note == "spam=unscored(too-big)"


async def test_mail_only_forwarded_elsewhere_is_not_scored(tmp_path: Path) -> None:
    DownStore.calls = 0
    verdict = await check(SpamCheck(SpamFilter(DownStore())), tmp_path, spam_message(103), ())
    assert DownStore.calls == 0 and verdict.reply is None and verdict.mailboxes == {}
    assert verdict.removes == ("x-spam-",)


async def test_an_unavailable_store_is_a_temporary_failure(tmp_path: Path) -> None:
    verdict = await check(SpamCheck(SpamFilter(DownStore())), tmp_path, spam_message(104))
    assert verdict.reply == TEMPFAIL_REPLY and verdict.reply.startswith("451 4.7.1 ")
    assert verdict.mailboxes == {} and verdict.note == "spam=unavailable"


async def test_failing_open_scores_without_bayes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stage = SpamCheck(SpamFilter(DownStore()), SpamCheckSettings(fail_open=True))
    verdict = await check(stage, tmp_path, spam_message(105))
    assert verdict.reply is None
    fields = verdict.mailboxes[ALICE].fields.decode()
    assert "SUBJ_ALL_CAPS" in fields and "BAYES_UNAVAILABLE" in fields and "BAYES_9" not in fields
    assert verdict.note.endswith(" bayes=unavailable")
    assert [record.levelname for record in caplog.records] == ["WARNING"]


# -- the filter -----------------------------------------------------------------------------------


def test_the_learning_minimums_are_per_class() -> None:
    spam_filter = SpamFilter(MemoryTokenStore(), min_spam=3, min_ham=6)
    list(spam_filter.learn_many((spam_message(index) for index in range(3)), "spam"))
    list(spam_filter.learn_many((ham_message(index) for index in range(5)), "ham"))
    assert spam_filter.score(spam_message(50)).bayes is None
    spam_filter.learn(ham_message(5), "ham")
    assert spam_filter.score(spam_message(50)).bayes is not None


def test_an_untrained_filter_does_not_tokenize(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until Bayes can count, scoring is the header rules on the parsed message: the tokenizer's
    work (most of a score's cost) would be thrown away."""

    def refuse(*args: object) -> list[str]:
        raise AssertionError("tokenized")

    monkeypatch.setattr(filter_module, "tokenize_parsed", refuse)
    score = SpamFilter(MemoryTokenStore()).score(spam_message(1))
    assert score.bayes is None and "SUBJ_ALL_CAPS" in score.tests


def test_scoring_without_bayes_reads_no_store() -> None:
    score = SpamFilter(DownStore()).score_without_bayes(spam_message(1), required=2.0)
    assert score.bayes is None and score.is_spam and "MIME_HTML_ONLY" in score.tests


# -- where the store is ---------------------------------------------------------------------------


def test_the_default_store_is_the_data_directorys_sqlite(tmp_path: Path) -> None:
    assert isinstance(open_store("", tmp_path, create=False), MemoryTokenStore)
    assert not (tmp_path / "spam").exists()  # asking without create makes nothing
    store = open_store("", tmp_path)
    assert isinstance(store, SqliteTokenStore) and store.path == tmp_path / "spam" / "tokens.sqlite"
    store.close()
    elsewhere = tmp_path / "other" / "bayes.sqlite"
    store = open_store(str(elsewhere), tmp_path)
    assert isinstance(store, SqliteTokenStore) and store.path == elsewhere
    store.close()
    assert describe("", tmp_path) == str(tmp_path / "spam" / "tokens.sqlite")


def test_a_redis_store_is_asked_at_once_and_its_password_never_shown(tmp_path: Path) -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/3"
    with pytest.raises(TokenStoreUnavailable) as raised:
        open_store(url, tmp_path, timeout=1.0)
    assert "secret" not in str(raised.value) and "db 3" in str(raised.value)
    assert describe(url, tmp_path) == f"redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}"
    assert not (tmp_path / "spam").exists()
