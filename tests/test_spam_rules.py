"""The mailer, relay and date rules of spam/rules.py, on hand-made header sections: each hits where
SpamAssassin's rule of the same name would, and not on what legitimate mail software writes."""

from __future__ import annotations

import calendar
import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.spam.classifier import BayesResult
from mailtoaster.spam.mime import parse_message
from mailtoaster.spam.rules import (
    _COMMON_DATE,
    _DEAR,
    _HTTP_TO_IP,
    _IPV4,
    BODY_RULES,
    TRACE_RULES,
    Body,
    Fields,
    _parsed_timestamp,
    _posix_time,
    _private,
    _timestamp,
    _unknown_client,
    body_rules,
    cte_8bit_mismatch,
    date_in_future,
    date_in_past,
    dear_something,
    first_external_client,
    forged_freemail_rcvd,
    forged_mua_outlook,
    freemail_no_rdns,
    freemail_replyto,
    invalid_date,
    many_blank_lines,
    mime_qp_long_line,
    msgid_outlook_invalid,
    normal_http_to_ip,
    ratware_ms_hash,
    rdns_none,
    trace_rules,
    xprio_high,
)
from mailtoaster.spam.scoring import RULES, header_rules, score_message
from mailtoaster.spam.store import Totals

DATE = "Tue, 3 Sep 2002 10:00:00 +0000"
OUR_HOP = (
    "from mx.example.net (mx.example.net [203.0.113.7]) by mail.example.com (mailtoaster) with ESMTP id 1"
)
NO_RDNS_HOP = "from friend ([203.0.113.9]) by mail.example.com (mailtoaster) with ESMTP id 2"


def fields(*pairs: tuple[str, str]) -> Fields:
    return Fields.of(list(pairs))


def received(hop: str, when: str = DATE) -> tuple[str, str]:
    return ("Received", f"{hop}; {when}")


def outlook_msgid(when: str, host: str = "pc.example.com") -> str:
    """A Message-ID as Outlook writes it at ``when``: the FILETIME's high half in digits 5-12."""
    seconds = calendar.timegm(
        (2002, 9, int(when.split()[1]), int(when.split()[4][:2]), int(when.split()[4][3:5]), 0, 0, 1, 0)
    )
    token = int(seconds * 0.0023283064365387 + 27111902.8329849)
    return f"<001c{token:08x}$0a1b2c3d$4e5f6a7b@{host}>"


# --- Outlook fingerprints ---------------------------------------------------------------------------


def test_forged_mua_outlook() -> None:
    oe = ("X-Mailer", "Microsoft Outlook Express 6.00.2600.0000")
    assert forged_mua_outlook(fields(oe, ("Message-ID", "<AB12CD34EF56$01234567$89ABCDEF@pc>")))
    assert not forged_mua_outlook(fields(oe, ("Message-ID", "<000801c25330$1e4b7a40$0200a8c0@pc>")))
    assert forged_mua_outlook(fields(oe, ("Message-ID", "<20020903100000.ABC123@spamhost.example>")))
    outlook = ("X-Mailer", "Microsoft Outlook, Build 10.0.2627")
    assert forged_mua_outlook(fields(outlook, ("Message-ID", "<random.string@example.com>")))
    assert not forged_mua_outlook(
        fields(outlook, ("Message-ID", "<!~!UENERkVCMDkAAQACAAAAAAAAAAAAAAAAABgAAAAA@x>"))
    )
    assert forged_mua_outlook(fields(("X-Mailer", "Outlook"), ("Message-ID", "<1@example.com>")))
    # Later Outlooks write 32 upper-case hex digits; a list manager may rewrite the Message-ID.
    assert not forged_mua_outlook(fields(oe, ("Message-ID", "<" + "A1" * 16 + "@pc>")))
    listed = ("List-Unsubscribe", "<mailto:leave-friends-123@lists.example.org>")
    assert not forged_mua_outlook(fields(oe, ("Message-ID", "<lyris.1@lists.example.org>"), listed))
    # Other mailers are not Outlook.
    mutt = ("X-Mailer", "Mutt 1.4i")
    assert not forged_mua_outlook(fields(mutt, ("Message-ID", "<20020903100000.GA1@example.com>")))
    assert not forged_mua_outlook(fields(("Message-ID", "<1@example.com>")))


def test_msgid_outlook_invalid() -> None:
    honest = outlook_msgid(DATE)
    assert not msgid_outlook_invalid(fields(("Message-ID", honest), ("Date", DATE)))
    # The id's time matches the arrival, the Date was set back: still consistent with one of them.
    assert not msgid_outlook_invalid(
        fields(("Message-ID", honest), ("Date", "Tue, 1 Jan 2002 00:00:00 +0000"), received(OUR_HOP))
    )
    stale = outlook_msgid("Tue, 3 Sep 2002 10:00:00 +0000".replace("3 Sep", "1 Sep"))
    assert msgid_outlook_invalid(fields(("Message-ID", stale), ("Date", DATE), received(OUR_HOP)))
    assert msgid_outlook_invalid(
        fields(("Message-ID", "<0000ffffffff$00000000$00000000@pc>"), ("Date", DATE))
    )
    assert not msgid_outlook_invalid(fields(("Message-ID", "<1@example.com>"), ("Date", DATE)))


def test_ratware_ms_hash() -> None:
    msgid = ("Message-ID", "<000801c25330$1e4b7a40$0200a8c0@pc>")
    assert ratware_ms_hash(fields(msgid))
    assert not ratware_ms_hash(fields(msgid, ("X-MimeOLE", "Produced By Microsoft MimeOLE V6.00.2600.0000")))
    exchange = received("from pc ([10.0.0.2]) by exch.example.com with Microsoft Exchange Server id 1")
    assert not ratware_ms_hash(fields(msgid, exchange))
    assert not ratware_ms_hash(fields(("Message-ID", "<20020903.1@example.com>")))


# --- relays -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hop", "hits"),
    [
        ("from x.example (unknown [203.0.113.7]) by mx.example.com (Postfix) with ESMTP id 1", True),
        ("from x.example ([203.0.113.7]) by mx.example.com (8.11.6/8.11.6) with ESMTP id 1", True),
        ("from x.example (203.0.113.7) by mx.example.com with SMTP", True),
        ("from unknown (HELO x.example) (203.0.113.7) by mx.example.com with SMTP", True),
        ("from x.example (x.example [203.0.113.7]) by mx.example.com (Postfix) with ESMTP id 1", False),
        ("from mail.example.org (HELO x.example) (203.0.113.7) by mx.example.com with SMTP", False),
        ("from x.example (unknown [192.168.1.2]) by mx.example.com (Postfix) with ESMTP id 1", False),
    ],
)
def test_rdns_none(hop: str, hits: bool) -> None:
    assert rdns_none(fields(received(hop))) is hits


def test_first_external_client_skips_internal_hops() -> None:
    local = "from localhost (localhost [127.0.0.1]) by mx.example.com (Postfix) with ESMTP id 9"
    trace = [f"{local}; {DATE}", f"{NO_RDNS_HOP}; {DATE}", f"{OUR_HOP}; {DATE}"]
    assert first_external_client(trace) == "friend ([203.0.113.9])"
    assert first_external_client([f"{local}; {DATE}"]) is None
    assert first_external_client([]) is None
    assert rdns_none(Fields.of([("Received", value) for value in trace]))
    assert not rdns_none(fields(("From", "a@example.com")))


# --- dates ------------------------------------------------------------------------------------------


def test_invalid_date() -> None:
    assert not invalid_date(fields(("Date", DATE)))
    assert not invalid_date(fields(("Date", "3 Sep 2002 10:00 GMT")))
    assert not invalid_date(fields(("Date", "Tue, 03 Sep 2002 10:00:00 -0700 (PDT)")))
    assert invalid_date(fields(("Date", "Tuesday, September 03, 2002 10:00 AM")))
    assert invalid_date(fields(("Date", "Tue, 3 Sep 02 10:00:00 +0000")))
    assert invalid_date(fields(("Date", "2002-09-03 10:00:00")))
    assert not invalid_date(fields(("Subject", "no date")))


def test_date_in_future_reads_the_newest_received() -> None:
    early = "Tue, 3 Sep 2002 06:00:00 +0000"
    assert date_in_future(fields(("Date", DATE), received(OUR_HOP, early)))
    assert not date_in_future(fields(("Date", DATE), received(OUR_HOP, "Tue, 3 Sep 2002 07:30:00 +0000")))
    # Time zones count: 12:00 +0200 is 10:00 UTC.
    assert not date_in_future(fields(("Date", "Tue, 3 Sep 2002 12:00:00 +0200"), received(OUR_HOP, DATE)))
    # Only the newest (our own, on live mail) counts: an older hop's clock may be anything.
    older = received(NO_RDNS_HOP, early)
    assert not date_in_future(fields(("Date", DATE), received(OUR_HOP, DATE), older))
    assert not date_in_future(fields(("Date", DATE)))
    assert not date_in_future(fields(("Date", "garbage"), received(OUR_HOP, early)))
    assert not date_in_future(fields(("Date", DATE), ("Received", OUR_HOP)))


def test_date_in_past_reads_the_earliest_received() -> None:
    old = "Thu, 29 Aug 2002 09:00:00 +0000"  # 5 days before DATE
    assert date_in_past(fields(("Date", old), received(OUR_HOP, DATE)))
    assert not date_in_past(fields(("Date", "Sat, 31 Aug 2002 09:00:00 +0000"), received(OUR_HOP, DATE)))
    # Fetched days later, but its first hop was on time.
    assert not date_in_past(fields(("Date", old), received(OUR_HOP, DATE), received(NO_RDNS_HOP, old)))
    assert not date_in_past(fields(("Date", old)))


# The fast reading of the common date form must give what parsedate_tz gives, to the bit, for any
# text: near misses of the form (other spacing, case, widths, zones, tails) go the slow way.
_DATE_TEXT = st.builds(
    lambda *pieces: "".join(pieces),
    st.sampled_from(["", "Tue, ", "Tue ", "Tue,", "tue, ", "Xyz, ", " ", "Tue,  ", "Tuesday, "]),
    st.sampled_from(["3", "03", "0", "31", "32", "99", "003", "", "\u0663"]),
    st.sampled_from([" ", "  ", "\t", "-"]),
    st.sampled_from(["Sep", "sep", "SEP", "September", "Sept", "Feb", "Dec", "Xyz"]),
    st.sampled_from([" ", "  ", "-", ", "]),
    st.sampled_from(["2002", "1970", "1969", "2200", "2201", "02", "69", "0099", "1000", "29999", "2_002"]),
    st.sampled_from([" ", "  ", "\t"]),
    st.sampled_from(["10:00:00", "9:05:07", "24:00:00", "23:59:61", "23:60:00", "10:00", "10.00.00"]),
    st.sampled_from([" ", "  ", "", "\t"]),
    st.sampled_from(["+0000", "-0000", "+0200", "-0700", "+0099", "-1259", "+9999", "GMT", "EST", "", "+00"]),
    st.sampled_from(["", " ", " (PDT)", "\t(PDT)", " (Pacific Daylight Time)", ",x", "x", " \n(x)"]),
)


@settings(max_examples=2000, deadline=None)
@given(_DATE_TEXT)
def test_fast_date_reading_agrees_with_parsedate(text: str) -> None:
    assert repr(_timestamp(text)) == repr(_parsed_timestamp(text))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fast_date_reading_agrees_on_any_text(text: str) -> None:
    assert repr(_timestamp(text)) == repr(_parsed_timestamp(text))


def test_fast_date_reading_takes_the_common_form() -> None:
    assert _COMMON_DATE.fullmatch(DATE)
    assert _COMMON_DATE.fullmatch("Tue, 03 Sep 2002 03:00:00 -0700 (PDT)")
    assert _timestamp("Tue, 03 Sep 2002 03:00:00 -0700 (PDT)") == _timestamp(DATE)
    assert _timestamp("Tue, 3 Sep 2002 10:00:00 -0000") == _timestamp(DATE)


# --- senders ----------------------------------------------------------------------------------------


def test_forged_freemail_rcvd() -> None:
    hotmail = ("From", "Jo <jo1234@hotmail.com>")
    assert forged_freemail_rcvd(fields(hotmail, received(OUR_HOP)))
    real = received("from hotmail.com (f135.law8.hotmail.com [216.33.241.135]) by mx.example.com id 1")
    assert not forged_freemail_rcvd(fields(hotmail, received(OUR_HOP), real))
    yahoo = ("From", "someone@yahoo.com")
    assert forged_freemail_rcvd(fields(yahoo, received(NO_RDNS_HOP)))
    web = received("from [1.2.3.4] by web1.mail.yahoo.com via HTTP")
    assert not forged_freemail_rcvd(fields(yahoo, received(OUR_HOP), web))
    assert not forged_freemail_rcvd(fields(("From", "a@example.com"), received(OUR_HOP)))
    assert not forged_freemail_rcvd(fields(hotmail))  # no trace at all: nothing to judge


def test_freemail_no_rdns() -> None:
    assert freemail_no_rdns(fields(("From", "jo@hotmail.com"), received(NO_RDNS_HOP)))
    assert not freemail_no_rdns(fields(("From", "jo@hotmail.com"), received(OUR_HOP)))
    assert not freemail_no_rdns(fields(("From", "jo@example.com"), received(NO_RDNS_HOP)))


def test_freemail_replyto() -> None:
    assert freemail_replyto(fields(("From", "Anna <x@abptrade.com.br>"), ("Reply-To", "<letmego@bk.ru>")))
    assert freemail_replyto(fields(("From", "shop@example.com"), ("Reply-To", "deals@yahoo.com")))
    # Replies to the sender's own free mail address, or to a company's own domain, are ordinary.
    assert not freemail_replyto(fields(("From", "jo@hotmail.com"), ("Reply-To", "jo.smith@hotmail.com")))
    assert not freemail_replyto(fields(("From", "a@example.com"), ("Reply-To", "list@lists.example.org")))
    assert not freemail_replyto(fields(("From", "a@example.com")))


def test_xprio_high() -> None:
    assert xprio_high(fields(("X-Priority", "1 (Highest)")))
    assert xprio_high(fields(("X-Priority", "2")))
    assert not xprio_high(fields(("X-Priority", "3 (Normal)")))
    assert not xprio_high(fields(("Subject", "hi")))


# --- in the scoring ---------------------------------------------------------------------------------


def body(text: bytes, content_type: str = "text/plain", encoding: str = "") -> Body:
    head = f"From: a@example.com\nContent-Type: {content_type}\n"
    if encoding:
        head += f"Content-Transfer-Encoding: {encoding}\n"
    return Body.of(parse_message(head.encode() + b"\n" + text))


def test_mime_qp_long_line() -> None:
    assert mime_qp_long_line(body(b"x" * 77 + b"\n", encoding="quoted-printable"))
    assert not mime_qp_long_line(
        body(b"x" * 75 + b"=\r\n" + b"y" * 76 + b"\r\n", encoding="quoted-printable")
    )
    assert not mime_qp_long_line(body(b"x" * 200 + b"\n"))  # not quoted-printable: no such limit


def test_cte_8bit_mismatch() -> None:
    assert cte_8bit_mismatch(body("caf\u00e9\n".encode("latin-1")))
    assert cte_8bit_mismatch(body("caf\u00e9\n".encode(), encoding="7bit"))
    assert not cte_8bit_mismatch(body("caf\u00e9\n".encode(), encoding="8bit"))
    assert not cte_8bit_mismatch(body(b"plain ascii\n"))
    assert not cte_8bit_mismatch(body("<p>caf\u00e9</p>".encode(), "text/html"))


def test_dear_something() -> None:
    assert dear_something(body(b"Dear Friend,\n\nI am a banker in Lagos.\n"))
    assert dear_something(body(b"DEAR SIR/MADAM,\n"))
    assert dear_something(body(b"<p>Dear <b>Investor</b>,</p>", "text/html"))  # the text, not the tags
    assert dear_something(body(b"<p>Dear Homeowner,</p>", "text/html"))
    assert not dear_something(body(b"Dear Alice,\n\nsee you tomorrow.\n"))
    assert not dear_something(body(b"my dearest friend\n"))


def text_body(text: str) -> Body:
    """A Body of one text, as both a text/plain part and an HTML part's text and markup."""
    return Body(parse_message(b""), [text], [text], [text])


# Texts made of the letters of the patterns, their case variants and the characters the re module
# treats as case-equivalent to ASCII letters (long s, Kelvin sign, dotted and dotless i).
_RULE_TEXT = st.text(st.sampled_from([*"dDeEaArR fFiIsSnN", "\u017f", "\u212a", "\u0130", "\u0131", "\n"]))
_SALUTATION = st.lists(
    st.sampled_from(
        [
            *("Dear", "DEAR", "dEaR", "dear ", "Dear ", "Friend", "friend", "Sir", "IT", "\u017fir", "xdear"),
            *(" ", "\n", ",", "x", "\u0130", "\u212a"),
        ]
    ),
    max_size=10,
).map("".join)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_RULE_TEXT, _SALUTATION, st.text()))
def test_dear_something_is_the_pattern(text: str) -> None:
    """The rule matches only where the lower-cased text has ``dear `` (``İ`` lower-cases to two
    characters, which moves the places: then the whole text is searched)."""
    assert dear_something(text_body(text)) is bool(_DEAR.search(text))


_LINK = st.lists(
    st.sampled_from(
        [
            *("http", "HTTP", "HTTPS", "htt\u017f", "https", "://", ":/", "/", "@", "u", "u:p", "x"),
            *("8", "203", "10", "172", ".", " ", "\u0663"),
        ]
    ),
    max_size=24,
).map("".join)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_LINK, st.text()))
def test_normal_http_to_ip_is_the_pattern(text: str) -> None:
    """The rule looks for the pattern only where its hint (``://``) is: the same answer as searching
    the whole text."""
    expected = any(not _private(match.groups()) for match in _HTTP_TO_IP.finditer(text))
    assert normal_http_to_ip(text_body(text)) is expected


def test_many_blank_lines() -> None:
    assert many_blank_lines(body(b"Hallo\n" + b"\n" * 30 + b"reply to be removed\n"))
    assert many_blank_lines(body(b"Hallo\r\n" + b" \t\r\n" * 25 + b"x\r\n"))
    assert not many_blank_lines(body(b"Hallo\n" + b"\n" * 20 + b"x\n"))
    assert not many_blank_lines(body(b"<p>" + b"\n" * 40 + b"</p>", "text/html"))  # HTML ignores them


def test_normal_http_to_ip() -> None:
    assert normal_http_to_ip(body(b"go to http://203.0.113.5/offer.html now\n"))
    assert normal_http_to_ip(body(b'<a href="HTTP://user@198.51.100.7:8080/x">win</a>', "text/html"))
    assert not normal_http_to_ip(body(b"http://192.168.1.10/admin and http://10.0.0.1/\n"))
    assert not normal_http_to_ip(body(b"http://www.example.com/ and version 1.2.3.4\n"))
    assert not normal_http_to_ip(body(b"http://1.2.3.4.example.com/\n"))


def test_body_rules_of_a_message() -> None:
    spam = (
        b"From: Anna <x@example.com.br>\nReply-To: letmego@bk.ru\nSubject: hi\n"
        b"MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
        + b"Dear Friend, " * 10
        + b"\n--b\nContent-Type: text/html\n\n<a href=http://203.0.113.5/>here</a>\n--b--\n"
    )
    assert body_rules(parse_message(spam)) == ["MIME_QP_LONG_LINE", "DEAR_SOMETHING", "NORMAL_HTTP_TO_IP"]
    assert "FREEMAIL_REPLYTO" in header_rules(parse_message(spam))
    assert body_rules(parse_message(HONEST)) == []
    assert body_rules(parse_message(b"")) == []


def test_body_rules_are_bounded_on_hostile_input() -> None:
    hostile = (
        b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
        + b" " * 300_000
        + b"http://" * 20_000
        + b"\n \n" * 50_000
    )
    started = time.perf_counter()
    body_rules(parse_message(hostile))
    body_rules(parse_message(b"Content-Type: text/html\n\n" + b"<a href=http://1." * 30_000))
    assert time.perf_counter() - started < 2.0


def test_empty_message() -> None:
    assert "EMPTY_MESSAGE" in header_rules(parse_message(b"Subject: x\n\n \r\n\t\x0b\x0c\n"))
    assert "EMPTY_MESSAGE" in header_rules(parse_message(b"Subject: x\n\n"))
    assert "EMPTY_MESSAGE" not in header_rules(parse_message(b"Subject: x\n\n \n.\n"))
    assert "EMPTY_MESSAGE" not in header_rules(parse_message(b"Subject: x\n\n\xa0\n"))


def test_every_rule_has_points() -> None:
    for name in [*TRACE_RULES, *BODY_RULES]:
        assert name in RULES
        assert 0 < RULES[name].points <= 2.0  # none decides alone, even with BAYES_50


HONEST = (
    b"Received: from mx.example.net (mx.example.net [203.0.113.7])\n"
    b"\tby mail.example.com (mailtoaster) with ESMTP id 1; Tue, 3 Sep 2002 10:00:05 +0000\n"
    b"From: Alice <alice@example.net>\nTo: bob@example.com\nDate: Tue, 3 Sep 2002 10:00:00 +0000\n"
    b"Message-ID: <20020903100000.GA1@example.net>\nSubject: Lunch tomorrow\n"
    b"X-Mailer: Mutt 1.4i\n\nsee you\n"
)
FORGED = (
    b"Received: from pc (unknown [203.0.113.9])\n"
    b"\tby mail.example.com (mailtoaster) with SMTP id 2; Tue, 3 Sep 2002 02:00:00 +0000\n"
    b"From: Jo <jo1234@hotmail.com>\nTo: bob@example.com\nDate: Tue, 3 Sep 2002 10:00:00 +0000\n"
    b"Message-ID: <ab12cd34ef56$01234567$89abcdef@pc>\nSubject: Lunch tomorrow\n"
    b"X-Mailer: Microsoft Outlook Express 6.00.2600.0000\nX-Priority: 1\n\nsee you\n"
)


def test_trace_rules_of_a_message() -> None:
    assert trace_rules(parse_message(HONEST).headers) == []
    assert header_rules(parse_message(HONEST)) == []
    assert trace_rules(parse_message(FORGED).headers) == [
        "MSGID_OUTLOOK_INVALID",
        "RATWARE_MS_HASH",
        "RDNS_NONE",
        "DATE_IN_FUTURE_03_XX",
        "FORGED_FREEMAIL_RCVD",
        "FREEMAIL_NO_RDNS",
        "XPRIO_HIGH",
    ]
    assert trace_rules([]) == []


def test_points_add_up_with_bayes() -> None:
    bayes = BayesResult(0.9, (), Totals(200, 200))  # BAYES_80: 2.0, not spam alone
    honest = score_message(parse_message(HONEST), bayes)
    assert honest.tests == ["BAYES_80"]
    assert not honest.is_spam
    forged = score_message(parse_message(FORGED), bayes)
    assert forged.is_spam
    assert forged.points == pytest.approx(sum(RULES[name].points for name in forged.tests))


def test_garbage_never_raises() -> None:
    for data in (
        b"Date: Tue, 31 Feb 2002 99:99:99 +9999\nReceived: from ; \xff\xfe\n\n",
        b"Received: from a (b [999.1.1.1]) by c; Mon, 1 Jan 10000 00:00:00 +0000\nDate: x\n\n",
        b"Message-ID: <0000zzzzzzzz$0$0@x>\nX-Priority:\nFrom: @hotmail.com\n\n",
    ):
        trace_rules(parse_message(data).headers)
        body_rules(parse_message(data))


# The faster forms of the rules give what the plain forms give, on texts made of the pieces that matter.


def _blank_run_by_lines(text: str) -> bool:
    """MANY_BLANK_LINES as it was first written: a loop over the lines."""
    run = 0
    for line in text.splitlines():
        run = 0 if line.strip() else run + 1
        if run >= 25:
            return True
    return False


_BLANK_TEXT = st.lists(
    st.sampled_from(["\n", "\r", "\r\n", " ", "\t", "x", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u00a0"]),
    max_size=120,
).map("".join)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_BLANK_TEXT, st.integers(20, 30).map(lambda n: "a\n" + " \n" * n + "b")))
def test_many_blank_lines_is_the_line_loop(text: str) -> None:
    assert many_blank_lines(text_body(text)) is _blank_run_by_lines(text)


_CLIENT = st.lists(
    st.sampled_from(
        ["unknown", "UNKNOWN", "un\u212anown", "x", " ", "(", ")", "[", "]", "1", "203", ".", "host.example"]
    ),
    max_size=14,
).map("".join)


_PLAIN_UNKNOWN_CLIENT = re.compile(
    r"\(\s*(?:unknown\s*)?\[?\d{1,3}(?:\.\d{1,3}){3}\]?\s*\)|\bunknown\s*\[", re.IGNORECASE
)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_CLIENT, st.text()))
def test_unknown_client_is_the_pattern(client: str) -> None:
    assert _unknown_client(client) is bool(_PLAIN_UNKNOWN_CLIENT.search(client))


_PLAIN_IPV4 = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_ADDRESS_TEXT = st.lists(st.sampled_from(["1", "23", "255", "1234", ".", "..", " ", "x", "\u0663"]))


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_ADDRESS_TEXT.map("".join), st.text()))
def test_ipv4_is_the_pattern(text: str) -> None:
    def found(pattern: re.Pattern[str]) -> tuple[int, int, tuple[str | Any, ...]] | None:
        match = pattern.search(text)
        return None if match is None else (*match.span(), match.groups())

    assert found(_IPV4) == found(_PLAIN_IPV4)


@settings(max_examples=1000, deadline=None)
@given(
    st.integers(1970, 2200),
    st.integers(1, 12),
    st.integers(1, 31),
    st.integers(0, 24),
    st.integers(0, 59),
    st.integers(0, 61),
    st.integers(-99 * 3600, 99 * 3600),
)
def test_posix_time_is_timegm(
    year: int, month: int, day: int, hour: int, minute: int, second: int, zone: int
) -> None:
    expected = float(calendar.timegm((year, month, day, hour, minute, second, 0, 1, 0)) - zone)
    assert repr(_posix_time((year, month, day, hour, minute, second), zone)) == repr(expected)


_ZONE_NAMES = ["UT", "UTC", "GMT", "Z", "AST", "ADT", "EST", "EDT", "CST", "CDT", "MST", "MDT", "PST", "PDT"]


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(["Tue, 3 Sep 2002 10:00:00 ", "3 Sep 2002 23:59:59 ", "Mon,  31 Dec 2199 0:00:00 "]),
    st.sampled_from([*_ZONE_NAMES, "gmt", "Utc", "BST", "XST", "UTCX", "ZZ", ""]),
    st.sampled_from(["", " ", " (EDT)", ",", "\t", " x"]),
)
def test_fast_date_reading_agrees_with_parsedate_on_zone_names(moment: str, zone: str, tail: str) -> None:
    text = moment + zone + tail
    assert repr(_timestamp(text)) == repr(_parsed_timestamp(text))


def test_fields_compute_each_value_once() -> None:
    gathered = fields(("Date", DATE), received(NO_RDNS_HOP, DATE))
    assert gathered.date_time == _timestamp(DATE)
    assert vars(gathered)["date_time"] == gathered.date_time  # stored where the next read finds it
    assert gathered.external_client == first_external_client(gathered.received)
    assert "external_client" in vars(gathered)
    assert Fields.date_time.__doc__  # read on the class, the descriptor itself
