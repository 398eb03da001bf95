"""The classifier's maths, the scoring rules and headers, and the filter trained on the real corpus."""

from __future__ import annotations

import math
import os
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.spam import (
    BayesParams,
    LearnOutcome,
    MemoryTokenStore,
    SpamFilter,
    SpamScore,
    message_digest,
    spam_fields,
)
from mailtoaster.spam.classifier import (
    Clue,
    _chi2_cdf,
    chi2_survival,
    classify,
    fisher_indicator,
    select_clues,
    token_probability,
)
from mailtoaster.spam.counts import CountsTable
from mailtoaster.spam.mime import parse_message
from mailtoaster.spam.scoring import (
    RULES,
    SPAM_TOKENS,
    RuleHit,
    auth_rules,
    bayes_rules,
    bayes_token_rules,
    header_rules,
    render_fields,
    score_message,
    status_value,
)
from mailtoaster.spam.store import TokenCounts, Totals
from mailtoaster.verify.report import VerifyReport

PARAMS = BayesParams()


# The maths ------------------------------------------------------------------------------------------


def test_robinson_probability() -> None:
    totals = Totals(100, 100)
    # Seen in 10 spam and no ham: (0.45 * 0.5 + 10 * 1.0) / (0.45 + 10)
    assert token_probability(TokenCounts(10, 0), totals, PARAMS) == pytest.approx(10.225 / 10.45)
    # Equal ratios are no evidence, however often seen.
    assert token_probability(TokenCounts(30, 30), totals, PARAMS) == pytest.approx(0.5)
    # Ratios, not counts: 10 of 100 spam against 20 of 400 ham leans to spam.
    assert token_probability(TokenCounts(10, 20), Totals(100, 400), PARAMS) > 0.6
    # A token seen once is pulled towards 0.5: (0.225 + 1) / 1.45.
    once = token_probability(TokenCounts(1, 0), totals, PARAMS)
    assert once == pytest.approx(1.225 / 1.45)
    assert once < token_probability(TokenCounts(2, 0), totals, PARAMS)


def test_chi2_survival_known_values() -> None:
    # With 2 degrees of freedom the survival function is exp(-x/2).
    assert chi2_survival(3.0, 2) == pytest.approx(math.exp(-1.5))
    # The median of chi-square with 4 degrees of freedom is about 3.357.
    assert chi2_survival(3.357, 4) == pytest.approx(0.5, abs=1e-3)
    assert chi2_survival(0.0, 10) == 1.0
    assert chi2_survival(5000.0, 300) == pytest.approx(0.0, abs=1e-12)


def _series_survival(chi2: float, degrees: int) -> float:
    """The Poisson series summed term by term to the end, as the module docstring states it."""
    half = chi2 / 2.0
    term = total = math.exp(-half)
    for index in range(1, degrees // 2):
        term *= half / index
        total += term
    return min(total, 1.0)


@settings(max_examples=3000, deadline=None)
@given(
    chi2=st.one_of(st.floats(0.0, 60.0), st.floats(0.0, 4000.0), st.floats(0.0, 1e6)),
    terms=st.integers(1, 200),
)
def test_the_shortcuts_of_the_chi_square_series_change_no_result(chi2: float, terms: int) -> None:
    """chi2_survival sums the series in numpy accumulations, and the indicator skips the series when 1
    minus it is certain to be 1.0: both give exactly what the loop over the whole series gives."""
    assert chi2_survival(chi2, 2 * terms) == _series_survival(chi2, 2 * terms)
    assert _chi2_cdf(chi2, 2 * terms) == 1.0 - _series_survival(chi2, 2 * terms)


def test_fisher_indicator() -> None:
    assert fisher_indicator([]) == 0.5
    assert fisher_indicator([0.99] * 20) > 0.99
    assert fisher_indicator([0.01] * 20) < 0.01
    # Strong evidence both ways: unsure, not a verdict.
    assert fisher_indicator([0.99] * 20 + [0.01] * 20) == pytest.approx(0.5, abs=0.01)
    assert fisher_indicator([0.9, 0.8, 0.95]) > 0.5


def test_clue_selection_and_minimum_learned() -> None:
    counts = CountsTable.of_pairs(["strong", "weak", "hammy", "also"], [(50, 0), (51, 49), (0, 40), (20, 1)])
    clues = select_clues(["weak", "strong", "unknown", "hammy", "also"], counts, Totals(200, 200), PARAMS)
    assert [clue.token for clue in clues] == ["strong", "hammy", "also"]  # strongest first; "weak" is no clue
    assert select_clues(["strong", "hammy"], counts, Totals(200, 200), BayesParams(max_clues=1))[0].token == (
        "strong"
    )
    with_unknown = CountsTable.of_pairs(["strong", "unknown"], [(50, 0), None])  # None: not in the store
    assert list(with_unknown) == ["strong"] and len(with_unknown) == 1
    assert "unknown" not in with_unknown and with_unknown["strong"] == TokenCounts(50, 0)
    with pytest.raises(KeyError):
        with_unknown["unknown"]
    assert [
        clue.token for clue in select_clues(["unknown", "strong"], with_unknown, Totals(200, 200), PARAMS)
    ] == ["strong"]
    plain = {"strong": TokenCounts(50, 0)}  # any Mapping works, not only CountsTable
    assert select_clues(["strong"], plain, Totals(200, 200), PARAMS)[0].spam == 50
    assert classify(["strong"], counts, Totals(199, 500), PARAMS).probability is None
    assert classify(["strong"], counts, Totals(500, 199), PARAMS).probability is None
    assert classify(["strong"], counts, Totals(200, 200), PARAMS).probability == pytest.approx(1.0, abs=0.1)


def _one_token_at_a_time(
    tokens: list[str], counts: dict[str, TokenCounts], totals: Totals, params: BayesParams
) -> tuple[list[tuple[str, float]], float, int]:
    """The classifier's steps written out plainly, token by token, as the module docstring states them."""
    candidates = []
    for token in tokens:
        found = counts.get(token)
        if found is None or not (min(found.spam, totals.spam) + min(found.ham, totals.ham)):
            continue
        f = token_probability(found, totals, params)
        if abs(f - 0.5) >= params.min_deviation and 0.0 < f < 1.0:
            candidates.append((abs(f - 0.5), token, f))
    strong = sum(1 for _deviation, _token, f in candidates if f >= params.strong_spam)
    candidates.sort(key=lambda candidate: candidate[0], reverse=True)  # stable: token order among equals
    chosen = [(token, f) for _deviation, token, f in candidates[: params.max_clues]]
    return chosen, fisher_indicator(f for _token, f in chosen), strong


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(
        st.one_of(st.none(), st.tuples(st.integers(0, 400), st.integers(0, 400))), min_size=0, max_size=300
    ),
    totals=st.tuples(st.integers(1, 300), st.integers(1, 300)),
    max_clues=st.integers(1, 200),
    as_table=st.booleans(),
)
def test_the_vectorised_classifier_agrees_with_the_formula_token_by_token(
    pairs: list[tuple[int, int] | None], totals: tuple[int, int], max_clues: int, as_table: bool
) -> None:
    """Every clue, its f to the last bit, the order of equal clues, the strong-spam count and the
    indicator: the store's aligned arrays and any other mapping give what the plain formula gives."""
    tokens = [f"t{index}" for index in range(len(pairs))]
    known = {token: TokenCounts(*pair) for token, pair in zip(tokens, pairs, strict=True) if pair is not None}
    counts: Mapping[str, TokenCounts] = CountsTable.of_pairs(tokens, pairs) if as_table else known
    params = BayesParams(max_clues=max_clues, min_learned=0)
    scope = Totals(*totals)
    result = classify(tokens, counts, scope, params)
    chosen, indicator, strong = _one_token_at_a_time(tokens, known, scope, params)
    assert [(clue.token, clue.probability) for clue in result.clues] == chosen
    assert [TokenCounts(clue.spam, clue.ham) for clue in result.clues] == [known[t] for t, _f in chosen]
    assert result.spam_tokens == strong
    assert result.probability == pytest.approx(indicator, rel=1e-12, abs=1e-15)
    _check_clues_read_as_a_tuple(result.clues)


def _check_clues_read_as_a_tuple(clues: Sequence[Clue]) -> None:
    """The classifier's lazily made clues answer every way of reading them as the tuple of them does."""
    whole = tuple(clues)
    assert len(clues) == len(whole)
    assert clues == whole
    assert hash(clues) == hash(whole)
    assert [clues[index] for index in range(-len(whole), len(whole))] == [*whole, *whole]
    for wanted in (slice(10), slice(2, 5), slice(None, None, -1), slice(-3, None), slice(5, 2)):
        assert clues[wanted] == whole[wanted]
    for past in (len(whole), -len(whole) - 1):
        with pytest.raises(IndexError):
            clues[past]


def test_strong_spam_tokens_are_counted_over_every_token_not_only_the_clues() -> None:
    """f >= 0.95 needs 5 spam and no ham (Robinson's prior pulls a token seen once to 0.85); the
    count covers tokens the clue cap leaves out, and the padding's ham tokens do not lower it."""
    totals = Totals(200, 200)
    counts = CountsTable.of_pairs(
        ["once", "four", "five", "many", "mixed", "ham"], [(1, 0), (4, 0), (5, 0), (60, 0), (60, 2), (0, 60)]
    )
    assert (
        token_probability(TokenCounts(5, 0), totals, PARAMS)
        >= 0.95
        > token_probability(TokenCounts(4, 0), totals, PARAMS)
    )
    tokens = ["once", "four", "five", "many", "mixed", "ham", "unknown"]
    assert classify(tokens, counts, totals, PARAMS).spam_tokens == 3  # five, many, mixed
    assert classify(tokens, counts, totals, BayesParams(max_clues=1)).spam_tokens == 3
    assert classify(tokens, counts, totals, BayesParams(strong_spam=0.99)).spam_tokens == 1
    assert classify(tokens, counts, Totals(10, 10), PARAMS).spam_tokens == 0  # too few learned: no result


def test_spam_padded_with_ham_text_hits_bayes_spam_tokens() -> None:
    """The rule reads the count, whatever the probability: the padded message is unsure (near 0.5),
    yet its SPAM_TOKENS strong spam tokens hit; one fewer does not."""
    totals = Totals(400, 400)
    spammy = {f"offer{i}": (40, 0) for i in range(SPAM_TOKENS)}
    padding = {f"word{i}": (0, 40) for i in range(SPAM_TOKENS)}
    pairs = {**spammy, **padding}
    counts = CountsTable.of_pairs(list(pairs), pairs.values())
    padded = classify([*spammy, *padding], counts, totals, PARAMS)
    assert padded.probability == pytest.approx(0.5, abs=0.01) and padded.spam_tokens == SPAM_TOKENS
    assert bayes_token_rules(padded) == ["BAYES_SPAM_TOKENS"]
    short = classify([*list(spammy)[1:], *padding], counts, totals, PARAMS)
    assert bayes_token_rules(short) == []
    score = score_message(parse_message(b"Subject: hi\n\nhello\n"), padded)
    assert "BAYES_SPAM_TOKENS" in score.tests
    without = score_message(parse_message(b"Subject: hi\n\nhello\n"), short)
    assert set(score.tests) - set(without.tests) == {"BAYES_SPAM_TOKENS"} and "BAYES_50" in without.tests
    assert score.points == pytest.approx(without.points + RULES["BAYES_SPAM_TOKENS"].points)
    unlearned = classify([*spammy], counts, Totals(10, 10), PARAMS)
    assert unlearned.probability is None and bayes_token_rules(unlearned) == []


# Rules and the fields the server adds ----------------------------------------------------------------


def test_bayes_bands() -> None:
    assert bayes_rules(None) == []
    assert bayes_rules(0.0) == ["BAYES_00"]
    assert bayes_rules(0.03) == ["BAYES_05"]
    assert bayes_rules(0.5) == ["BAYES_50"]
    assert bayes_rules(0.97) == ["BAYES_95"]
    assert bayes_rules(0.995) == ["BAYES_99"]
    assert bayes_rules(0.9995) == ["BAYES_99", "BAYES_999"]
    # A sure Bayes verdict is enough alone (no network tests here to add the rest).
    assert RULES["BAYES_99"].points + RULES["BAYES_999"].points >= 5.0
    assert RULES["BAYES_99"].points < 5.0


def test_header_rules() -> None:
    good = parse_message(
        b"From: Alice <alice@example.com>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
        b"Message-ID: <1@example.com>\nSubject: Lunch tomorrow\n\nsee you\n"
    )
    assert header_rules(good) == []
    bad = parse_message(
        b"From: nobody\nMessage-ID: not-an-id\nSubject: FREE MONEY FOR YOU\n"
        b"Content-Type: text/html\n\n<b>x</b>\n"
    )
    assert header_rules(bad) == [
        "MISSING_DATE",
        "INVALID_MSGID",
        "FROM_MALFORMED",
        "SUBJ_ALL_CAPS",
        "MIME_HTML_ONLY",
    ]
    assert header_rules(parse_message(b"\n\n")) == [
        "MISSING_DATE",
        "MISSING_MID",
        "MISSING_FROM",
        "MISSING_SUBJECT",
        "EMPTY_MESSAGE",
    ]


def _report(spf: str, dkim: list[tuple[str, bool]], dmarc: str) -> VerifyReport:
    """Only what the rules read of a VerifyReport."""
    fake: Any = SimpleNamespace(
        spf=SimpleNamespace(result=SimpleNamespace(value=spf)),
        dkim=[SimpleNamespace(result=SimpleNamespace(value=value), passed=passed) for value, passed in dkim],
        dmarc=SimpleNamespace(result=SimpleNamespace(value=dmarc)),
    )
    return cast(VerifyReport, fake)


def test_auth_rules() -> None:
    assert auth_rules(_report("fail", [("fail", False)], "fail")) == [
        "SPF_FAIL",
        "DKIM_INVALID",
        "DMARC_FAIL",
        "NO_AUTH",
    ]
    assert auth_rules(_report("softfail", [], "none")) == ["SPF_SOFTFAIL", "NO_AUTH"]
    assert auth_rules(_report("none", [("pass", True)], "pass")) == ["DKIM_VALID", "DMARC_PASS"]
    assert auth_rules(_report("pass", [], "none")) == ["SPF_PASS"]


def _score(points: float, names: list[str]) -> SpamScore:
    hits = tuple(RuleHit(name, RULES[name].points, "") for name in names)
    return SpamScore(points, 5.0, hits, 0.999, (Clue("free", 0.99, 10, 0),))


def test_spam_fields() -> None:
    spam = dict(spam_fields(_score(7.3, ["BAYES_99", "SPF_FAIL"]), version="1.2"))
    assert spam["X-Spam-Flag"] == "YES"
    assert spam["X-Spam-Score"] == "7.3"
    assert spam["X-Spam-Level"] == "*******"
    assert spam["X-Spam-Status"] == (
        "Yes, score=7.3 required=5.0 tests=BAYES_99,SPF_FAIL\n\tautolearn=no version=1.2"
    )
    ham = dict(spam_fields(_score(-1.9, ["BAYES_00"])))
    assert "X-Spam-Flag" not in ham
    assert ham["X-Spam-Level"] == ""
    assert ham["X-Spam-Status"].startswith("No, score=-1.9 required=5.0 tests=BAYES_00 ")
    assert dict(spam_fields(_score(0.0, [])))["X-Spam-Status"].startswith(
        "No, score=0.0 required=5.0 tests=none"
    )


def test_status_is_folded_like_spamassassin() -> None:
    names = [
        "BAYES_99",
        "BAYES_999",
        "MISSING_DATE",
        "MISSING_MID",
        "SUBJ_ALL_CAPS",
        "MIME_HTML_ONLY",
        "SPF_FAIL",
    ]
    value = status_value(_score(12.5, names), version="0.1.0")
    lines = value.split("\n")
    assert len(lines) > 1
    assert all(line.startswith("\t") for line in lines[1:])
    assert len("X-Spam-Status: " + lines[0]) <= 78
    assert all(len(line.expandtabs(8)) <= 78 for line in lines[1:])
    assert value.replace("\n\t", "").replace(" ", "") == (
        "Yes,score=12.5required=5.0tests=" + ",".join(names) + "autolearn=noversion=0.1.0"
    )
    rendered = render_fields(spam_fields(_score(12.5, names)))
    assert rendered.endswith(b"\r\n")
    assert b"\r\n\t" in rendered
    assert b"\n" not in rendered.replace(b"\r\n", b"")


# The filter -----------------------------------------------------------------------------------------


def test_digest_ignores_what_relays_add() -> None:
    original = b"From: a@example.com\nSubject: hi\nMessage-ID: <1@x>\n\nbody line\n"
    relayed = b"Received: from relay\nX-Spam-Status: No\n" + original.replace(b"\n", b"\r\n") + b"\r\n\r\n"
    assert message_digest(original) == message_digest(relayed)
    assert message_digest(original) != message_digest(original.replace(b"body line", b"other body"))
    assert message_digest(original) != message_digest(original.replace(b"Subject: hi", b"Subject: ho"))


def test_learn_outcomes_and_score_never_raises() -> None:
    spam_filter = SpamFilter(MemoryTokenStore())
    message = b"Subject: hello\n\nsome words here\n"
    assert spam_filter.learn(message, "spam") is LearnOutcome.LEARNED
    assert spam_filter.learn(b"Received: x\n" + message, "spam") is LearnOutcome.ALREADY
    assert spam_filter.learn(message, "ham") is LearnOutcome.MOVED
    assert spam_filter.learn(message, None) is LearnOutcome.FORGOTTEN
    assert spam_filter.learn(message, None) is LearnOutcome.NOT_LEARNED
    for data in (b"", b"\x00\xff" * 1000, bytes(range(256)), b"Content-Type: multipart/x\n\n--"):
        score = spam_filter.score(data)
        assert score.bayes is None  # nothing learned: no Bayes verdict at all
        assert score.verdict in ("spam", "ham")


# Trained on the real corpus ---------------------------------------------------------------------------

CORPUS = (
    Path(
        os.environ.get("MAILTOASTER_TESTDATA") or Path(__file__).resolve().parents[2] / "shared" / "testdata"
    )
    / "spam"
    / "spamassassin-public"
)


def _train_part(archive: str, group: str, count: int) -> list[bytes]:
    """The first ``count`` messages of one archive that are in the fixed split's *train* part (the
    corpus sorted by path; index mod 5 == 0 is test), read without unpacking the rest."""
    paths = sorted(
        line.split("\t")[1]
        for line in (CORPUS / "MANIFEST.tsv").read_text().splitlines()
        if line and not line.startswith("#")
    )
    train = {path for index, path in enumerate(paths) if index % 5 != 0 and path.startswith(group + "/")}
    found: list[bytes] = []
    for name, data in _members(CORPUS / archive):
        if name in train:
            found.append(data)
            if len(found) == count:
                break
    return found


def _members(archive: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(archive, "r:bz2") as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                yield member.name.removeprefix("./"), extracted.read()


@pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").exists(), reason="SpamAssassin corpus not present")
def test_trained_on_the_corpus_spam_scores_higher_than_ham() -> None:
    spam = _train_part("20030228_spam.repack.tar.bz2", "spam", 400)
    ham = _train_part("20030228_easy_ham.repack.tar.bz2", "easy_ham", 400)
    spam_filter = SpamFilter(MemoryTokenStore())

    # Below the minimum (200 of each) there is no Bayes verdict at all.
    list(spam_filter.learn_many(spam[:300], "spam"))
    list(spam_filter.learn_many(ham[:199], "ham"))
    assert spam_filter.score(spam[350]).bayes is None
    assert "BAYES_" not in ",".join(spam_filter.score(spam[350]).tests)
    list(spam_filter.learn_many(ham[199:300], "ham"))
    assert spam_filter.store.totals() == Totals(300, 300)

    spam_scores = [spam_filter.score(data) for data in spam[300:]]
    ham_scores = [spam_filter.score(data) for data in ham[300:]]
    assert all(score.bayes is not None for score in spam_scores + ham_scores)
    spam_mean = sum(score.points for score in spam_scores) / len(spam_scores)
    ham_mean = sum(score.points for score in ham_scores) / len(ham_scores)
    assert spam_mean > ham_mean + 4.0
    assert sum(score.is_spam for score in spam_scores) >= 0.8 * len(spam_scores)
    assert sum(score.is_spam for score in ham_scores) == 0
    assert spam_scores[0].telling  # the most telling tokens come with the score
