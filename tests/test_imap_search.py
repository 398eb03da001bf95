"""SEARCH: the criteria grammar, what each key matches (Dovecot's semantics), what a search reads, and
the same searches run by Dovecot over SpamAssassin corpus messages."""

from __future__ import annotations

import base64
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.imap.parser import ParseError, Search, parse_command
from mailtoaster.imap.reader import RawCommand
from mailtoaster.imap.search import (
    MAX_DEPTH,
    All,
    And,
    BodyContains,
    DateRelation,
    HasFlag,
    HeaderContains,
    HeaderMatch,
    InternalDate,
    Larger,
    Not,
    Or,
    SearchKey,
    SearchProgram,
    SearchSyntaxError,
    SentDate,
    SequenceNumbers,
    Smaller,
    TextContains,
    Token,
    TokenKind,
    Uids,
    UnknownCharsetError,
    decode_header_value,
    fold,
    format_addresses,
    parse_criteria,
    parse_date_header,
    resolve_charset,
)
from mailtoaster.imap.sequence import SequenceSet
from tests.peers import require
from tests.test_maildir import DOVECOT_IMAP, run_dovecot_imap

LOCAL = datetime.now().astimezone().tzinfo


@dataclass
class View:
    """A message as the search sees it, counting how often its content is read."""

    seq: int
    uid: int
    data: bytes
    flags: frozenset[str] = frozenset()
    internal_date: datetime = datetime(2024, 1, 15, 12, 0, tzinfo=LOCAL)
    header_reads: int = field(default=0, compare=False)
    message_reads: int = field(default=0, compare=False)

    @property
    def size(self) -> int:
        return len(self.data) + self.data.count(b"\n") - self.data.count(b"\r\n")

    def header_bytes(self) -> bytes:
        self.header_reads += 1
        end = self.data.find(b"\n\n")
        return self.data if end < 0 else self.data[: end + 2]

    def message_bytes(self) -> bytes:
        self.message_reads += 1
        return self.data


def criteria(text: bytes | str) -> SearchKey:
    data = text.encode() if isinstance(text, str) else text
    command = parse_command(RawCommand.from_bytes(b"t SEARCH " + data + b"\r\n"))
    assert isinstance(command, Search)
    return command.criteria


def matching(text: bytes | str, messages: Sequence[View]) -> list[int]:
    program = SearchProgram(
        criteria(text), message_count=len(messages), max_uid=max((m.uid for m in messages), default=0)
    )
    return [message.seq for message in messages if program.matches(message)]


def literal(text: str, charset: str = "utf-8") -> bytes:
    """``text`` as a LITERAL+ in ``charset``."""
    data = text.encode(charset)
    return b"{%d+}\r\n" % len(data) + data


def one(data: bytes, **fields: object) -> list[View]:
    return [View(1, 1, data, **fields)]  # type: ignore[arg-type]


def hits(text: bytes | str, data: bytes) -> bool:
    return matching(text, one(data)) == [1]


# -- the grammar -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ALL", All()),
        ("answered", HasFlag("\\Answered")),
        ("UNANSWERED", Not(HasFlag("\\Answered"))),
        ("DELETED UNDELETED", And((HasFlag("\\Deleted"), Not(HasFlag("\\Deleted"))))),
        ("DRAFT", HasFlag("\\Draft")),
        ("UNDRAFT", Not(HasFlag("\\Draft"))),
        ("FLAGGED", HasFlag("\\Flagged")),
        ("UNFLAGGED", Not(HasFlag("\\Flagged"))),
        ("SEEN", HasFlag("\\Seen")),
        ("UNSEEN", Not(HasFlag("\\Seen"))),
        ("RECENT", HasFlag("\\Recent")),
        ("NEW", And((HasFlag("\\Recent"), Not(HasFlag("\\Seen"))))),
        ("OLD", Not(HasFlag("\\Recent"))),
        ("KEYWORD $Junk", HasFlag("$Junk")),
        ("UNKEYWORD $Junk", Not(HasFlag("$Junk"))),
        ('BCC "a b"', HeaderContains("Bcc", "a b", HeaderMatch.ADDRESS)),
        ("CC x", HeaderContains("Cc", "x", HeaderMatch.ADDRESS)),
        ("FROM x", HeaderContains("From", "x", HeaderMatch.ADDRESS)),
        ("TO x", HeaderContains("To", "x", HeaderMatch.ADDRESS)),
        ("SUBJECT {5+}\r\nhello", HeaderContains("Subject", "hello", HeaderMatch.SUBJECT)),
        ("HEADER X-Mailer Mutt", HeaderContains("X-Mailer", "Mutt", HeaderMatch.PLAIN)),
        ('BODY ""', BodyContains("")),
        ("TEXT a*b", TextContains("a*b")),
        ("BEFORE 1-Feb-2024", InternalDate(DateRelation.BEFORE, date(2024, 2, 1))),
        ('ON "01-feb-2024"', InternalDate(DateRelation.ON, date(2024, 2, 1))),
        ("SINCE 29-Feb-2024", InternalDate(DateRelation.SINCE, date(2024, 2, 29))),
        ("SENTBEFORE 1-Jan-2000", SentDate(DateRelation.BEFORE, date(2000, 1, 1))),
        ("SENTON 1-Jan-2000", SentDate(DateRelation.ON, date(2000, 1, 1))),
        ("SENTSINCE 1-Jan-2000", SentDate(DateRelation.SINCE, date(2000, 1, 1))),
        ("LARGER 100", Larger(100)),
        ("SMALLER 9223372036854775807", Smaller(2**63 - 1)),
        ("1:3,*", SequenceNumbers(SequenceSet(((1, 3), (None, None))))),
        ("UID 5:*", Uids(SequenceSet(((5, None),)))),
        ("NOT SEEN", Not(HasFlag("\\Seen"))),
        ("OR SEEN (FLAGGED DRAFT)", Or(HasFlag("\\Seen"), And((HasFlag("\\Flagged"), HasFlag("\\Draft"))))),
        ("((SEEN))", HasFlag("\\Seen")),
    ],
)
def test_every_search_key_parses(text: str, expected: SearchKey) -> None:
    assert criteria(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FOO", "Unknown search key 'FOO'"),
        ("UNRECENT", "Unknown search key 'UNRECENT'"),
        ("SUBJECT", "Missing a string argument"),
        ("OR SEEN", "Missing a search key"),
        ("()", "Empty parenthesised search criteria"),
        ("(SEEN", "Missing ')'"),
        ("SEEN)", "Expected a search key, got ')'"),
        ("SUBJECT (x)", "Expected a string, got '('"),
        ("BEFORE 1-Foo-2024", "Invalid search date"),
        ("BEFORE 31-Feb-2024", "Invalid search date"),
        ("BEFORE 1-Jan-24", "Invalid search date"),
        ("LARGER -1", "Invalid number"),
        ("LARGER 99999999999999999999", "Invalid number"),
        ("KEYWORD \\Seen", "Invalid keyword"),
        ("UID x", "Invalid sequence set"),
        ("1:0", "is not a number"),
        ("$", "Search result variable $ is not supported"),
        ("SEEN  SEEN", "Extra space"),
        ("NOT " * (MAX_DEPTH + 1) + "SEEN", "nested too deeply"),
        ("(" * (MAX_DEPTH + 1) + "SEEN" + ")" * (MAX_DEPTH + 1), "nested too deeply"),
    ],
)
def test_search_syntax_errors_are_bad_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ParseError) as error:
        criteria(text)
    assert message in error.value.message
    assert error.value.response.startswith(b"t BAD ")


def test_deep_nesting_is_refused_before_python_recursion_runs_out() -> None:
    tokens = [Token(TokenKind.OPEN)] * 100_000
    with pytest.raises(SearchSyntaxError, match="nested too deeply"):
        parse_criteria(tokens)


def test_charsets_are_python_text_codecs_and_us_ascii_reads_as_utf8() -> None:
    assert resolve_charset("US-ASCII") == "utf-8"
    assert resolve_charset("iso-8859-1") == "iso-8859-1"
    for unknown in ("KLINGON", "rot13", "base64", ""):
        with pytest.raises(UnknownCharsetError):
            resolve_charset(unknown)


def test_search_strings_are_decoded_in_the_charset() -> None:
    assert criteria(b"CHARSET ISO-8859-1 BODY " + literal("café", "latin-1")) == BodyContains("café")
    assert criteria(b"BODY " + literal("café")) == BodyContains("café")
    with pytest.raises(ParseError, match="not valid utf-8"):
        criteria(b"CHARSET UTF-8 BODY " + literal("café", "latin-1"))


# -- what matches ------------------------------------------------------------------------------------

PLAIN = (
    b"From: Jane Roe <jane@example.org>\n"
    b'To: bob@example.com, "Doe, John" <john@example.net>\n'
    b"Subject: Quarterly   report\tfor\n  review\n"
    b"Date: Tue, 09 Jan 2024 23:30:00 -0800\n"
    b"X-Mailer: Mutt/2.2\n"
    b"\n"
    b"Hello Bob,\nthe numbers are in.\n"
)


def test_flag_keys_compare_flags_without_regard_to_case() -> None:
    messages = [
        View(1, 10, PLAIN, frozenset({"\\Seen", "$junk"})),
        View(2, 20, PLAIN, frozenset({"\\Recent", "\\Flagged"})),
        View(3, 30, PLAIN, frozenset({"\\Recent", "\\Seen", "\\Answered", "\\Deleted", "\\Draft"})),
    ]
    assert matching("SEEN", messages) == [1, 3]
    assert matching("UNSEEN", messages) == [2]
    assert matching("NEW", messages) == [2]
    assert matching("OLD", messages) == [1]
    assert matching("KEYWORD $JUNK", messages) == [1]
    assert matching("UNKEYWORD $Junk", messages) == [2, 3]
    assert matching("ANSWERED DELETED DRAFT", messages) == [3]
    assert matching("OR FLAGGED ANSWERED", messages) == [2, 3]
    assert all(m.header_reads == 0 and m.message_reads == 0 for m in messages), "flags never read mail"


def test_sets_resolve_star_against_the_mailbox() -> None:
    messages = [View(1, 10, PLAIN), View(2, 20, PLAIN), View(3, 30, PLAIN)]
    assert matching("2:*", messages) == [2, 3]
    assert matching("*", messages) == [3]
    assert matching("5", messages) == [], "an out-of-range number matches nothing"
    assert matching("UID 15:25", messages) == [2]
    assert matching("UID 99:*", messages) == [3], "N:* above the last UID still names the last"
    assert matching("NOT UID 10,30", messages) == [2]


def test_size_and_internal_date_keys() -> None:
    messages = [
        View(1, 1, b"x" * 100, internal_date=datetime(2024, 3, 1, 0, 30, tzinfo=LOCAL)),
        View(2, 2, b"y\n" * 100, internal_date=datetime(2024, 3, 1, 23, 59, tzinfo=LOCAL)),
        View(3, 3, b"z" * 300, internal_date=datetime(2024, 3, 2, 0, 0, tzinfo=LOCAL)),
    ]
    assert [m.size for m in messages] == [100, 300, 300], "RFC822.SIZE counts CRLF line ends"
    assert matching("LARGER 100", messages) == [2, 3]
    assert matching("SMALLER 300", messages) == [1]
    assert matching("ON 1-Mar-2024", messages) == [1, 2], "only the date counts, not the time"
    assert matching("BEFORE 2-Mar-2024", messages) == [1, 2]
    assert matching("SINCE 2-Mar-2024", messages) == [3]


def test_sent_dates_use_the_header_date_in_its_own_zone() -> None:
    assert hits("SENTON 9-Jan-2024", PLAIN), "23:30 -0800 is the 10th in UTC, but the header says the 9th"
    assert not hits("SENTON 10-Jan-2024", PLAIN)
    assert hits("SENTBEFORE 10-Jan-2024 SENTSINCE 9-Jan-2024", PLAIN)
    undated = b"Subject: x\n\nbody\n"
    assert hits("SENTON 1-Jan-1970", undated), "no Date: counts as the epoch, as in Dovecot"
    assert hits("SENTON 1-Jan-1970", b"Date: someday soon\n\nx\n")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"Tue, 09 Jan 2024 23:30:00 -0800", date(2024, 1, 9)),
        (b"9 Jan 2024 23:30 +0000", date(2024, 1, 9)),
        (b" Wed , 1 Jan 03 10:00:00 GMT (comment)", date(2003, 1, 1)),
        (b"1 January 1999 1.02.03 EST", date(1999, 1, 1)),
        (b"1 Jan 69 10:00:00", date(2069, 1, 1)),
        (b"1 Jan 70 10:00:00", date(1970, 1, 1)),
        (b"31 Feb 2024 10:00:00", None),
        (b"1 Jan 2024 24:00:00", None),
        (b"1 Jan 1899 10:00:00", None),
        (b"Tuesday, 1 Jan 2024 10:00:00", None),
        (b"1 Jan 2024", None),
        (b"", None),
    ],
)
def test_date_headers_parse_as_dovecot_reads_them(value: bytes, expected: date | None) -> None:
    assert parse_date_header(value) == expected


def test_header_keys_match_decoded_values_case_insensitively() -> None:
    assert hits("SUBJECT QUARTERLY", PLAIN)
    assert hits('SUBJECT "report for review"', PLAIN), "SUBJECT squeezes white space and unfolds"
    assert not hits('HEADER Subject "report for review"', PLAIN), "HEADER does not squeeze"
    assert hits('HEADER x-mailer "mutt/2"', PLAIN)
    assert hits('HEADER X-Mailer ""', PLAIN) and not hits('HEADER X-Other ""', PLAIN)
    assert not hits("SUBJECT hello", PLAIN), "the body is not a header"
    encoded = b"Subject: =?UTF-8?B?R3LDvMOfZQ==?= =?iso-8859-1?q?_aus_K=F6ln?=\n\nx\n"
    assert hits(b"CHARSET UTF-8 SUBJECT " + literal("grüße aus köln"), encoded)


def test_address_keys_match_the_address_list_as_dovecot_rewrites_it() -> None:
    assert hits('FROM "jane roe"', PLAIN)
    assert hits('FROM "\\"Jane Roe\\" <jane@"', PLAIN), "names are quoted, addresses bracketed"
    assert hits('TO "<bob@example.com>"', PLAIN)
    assert hits('TO "\\"Doe, John\\""', PLAIN)
    assert not hits("CC example", PLAIN) and not hits('CC ""', PLAIN)
    assert hits("FROM Someone", b"From: who@example.org (Someone)\n\nx\n"), "a comment becomes the name"
    assert not hits('FROM "(Someone)"', b"From: who@example.org (Someone)\n\nx\n")


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (b"Jane Roe <jane@example.org>", b'"Jane Roe" <jane@example.org>'),
        (b"jane@example.org", b"<jane@example.org>"),
        (b"Jane <jane@example.org>, bob@example.com", b"Jane <jane@example.org>, <bob@example.com>"),
        (b"jane@example.org (Jane Roe)", b'"Jane Roe" <jane@example.org>'),
        (b'"O\'Neil, J" <j@x.org>', b'"O\\\'Neil, J" <j@x.org>'),
        (b"undisclosed-recipients:;", b"undisclosed-recipients:;"),
        (b"team: a@x.org, b@x.org;", b"team: <a@x.org>, <b@x.org>;"),
        (b"=?utf-8?q?J=C3=B6rg?= <j@x.org>", b"=?utf-8?q?J=C3=B6rg?= <j@x.org>"),
        (b"<@route.example:j@x.org>", b"<@route.example:j@x.org>"),
        (b"someone", b"<someone@MISSING_DOMAIN>"),
        (b"Some One", b'"Some One" <MISSING_MAILBOX@MISSING_DOMAIN>'),
        (b"Broken <j@", b"Broken <j@SYNTAX_ERROR>"),
        (b"", b""),
    ],
)
def test_addresses_are_written_as_dovecot_writes_them_for_searching(value: bytes, written: bytes) -> None:
    assert format_addresses(value) == written


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (b"plain", "plain"),
        (b"=?utf-8?q?a_b?=", "a b"),
        (b"=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),
        (b"x =?utf-8?q?a?= y", "x a y"),
        (b"=?iso-8859-1?b?Y2Fm6Q==?=", "café"),
        (b"=?unknown?q?caf=C3=A9?=", "café"),
        (b"=?utf-8?x?abc?=", "=?utf-8?x?abc?="),
        (b"=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
        (b"raw \xe9", "raw \ufffd"),
    ],
)
def test_header_values_are_rfc2047_decoded(value: bytes, text: str) -> None:
    assert decode_header_value(value) == text


def test_header_searches_read_only_the_header() -> None:
    messages = one(PLAIN)
    assert matching("OR SUBJECT report SENTON 1-Jan-2000", messages) == [1]
    assert messages[0].header_reads == 1 and messages[0].message_reads == 0


MULTIPART = (
    b"""From: a@example.org
Subject: parts
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble words are never searched
--outer
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Caf=E9 cr=E8me and soft=
ly broken lines
--outer
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

"""
    + base64.encodebytes("<p>Grüße &amp; <b>Tschüss</b></p>".encode())
    + b"""--outer
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

"""
    + base64.encodebytes(b"secret attachment words")
    + b"""--outer
Content-Type: text/plain
Content-Transfer-Encoding: x-uuencode

uuencoded stays hidden
--outer
Content-Type: message/rfc822

Subject: inner subject
From: inner@example.org

inner body text
--outer--
epilogue words are never searched
"""
)


@pytest.mark.parametrize(
    ("key", "matches"),
    [
        ("BODY café", True),
        ("BODY CAFE", True),
        ("BODY crème", True),
        ("BODY softly", True),
        ('BODY "grüße"', True),
        ('BODY "<b>tschüss</b>"', True),
        ('BODY "&amp;"', True),
        ("BODY preamble", False),
        ("BODY epilogue", False),
        ('BODY "secret attachment"', False),
        ("BODY uuencoded", False),
        ('BODY "inner body"', True),
        ('BODY "inner subject"', False),
        ('TEXT "inner subject"', True),
        ('TEXT "content-type: application/octet-stream"', True),
        ('BODY "content-type"', False),
        ('TEXT "subject: parts"', True),
        ('SUBJECT "inner"', False),
        ('TEXT "secret attachment"', False),
    ],
)
def test_body_and_text_search_the_decoded_text_parts(key: str, matches: bool) -> None:
    assert hits(key.encode(), MULTIPART) is matches


def test_body_searches_follow_the_content_type_as_dovecot_parses_it() -> None:
    broken_type = b"Content-Type: TEXT/PLAIN charset=US-ASCII\n\nvisible?\n"
    assert not hits("BODY visible", broken_type), "no ';' after the subtype: not text to Dovecot 2.3"
    assert hits("BODY visible", b"Content-Type: TEXT/PLAIN; charset=US-ASCII\n\nvisible?\n")
    assert hits("BODY visible", b"Subject: none\n\nvisible?\n"), "no Content-Type is text/plain"
    assert not hits("BODY visible", b"Content-Type: image/png\n\nvisible?\n")
    undeclared = b"Subject: x\n\nna\xefve\n"
    assert not hits(b"CHARSET UTF-8 BODY " + literal("naïve"), undeclared), "8-bit without charset is UTF-8"


def test_text_searches_read_the_message_once() -> None:
    messages = one(MULTIPART)
    assert matching("TEXT inner BODY inner NOT BODY nothing", messages) == [1]
    assert messages[0].message_reads == 1


def test_unicode_casemap_folding() -> None:
    assert fold("café") == fold("CAFÉ")
    assert fold("e") in fold("É"), "decomposed: the base letter matches the accented one"
    assert fold("ß") != fold("SS"), "ß has no single-character title case"
    assert fold("ﬁ") == "fi", "compatibility ligatures decompose"


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=600),
    st.sampled_from(["TEXT x", "BODY y", "FROM z", "SENTON 1-Jan-1970", 'HEADER a ""']),
)
def test_any_bytes_as_a_message_never_break_a_search(data: bytes, key: str) -> None:
    matching(key, one(data))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"Content-Type: multipart/mixed; boundary=b\n",
                b"Content-Type: message/rfc822\n",
                b"Content-Type: text/plain; charset=utf-16\n",
                b"Content-Transfer-Encoding: base64\n",
                b"Content-Transfer-Encoding: quoted-printable\n",
                b"From: =?x?q?=ZZ?= <\n",
                b"Date: 1 Jan\n",
                b"\n",
                b"--b\n",
                b"--b--\n",
                b"=?utf-8?b?////?=\n",
                b"text\xff\n",
            ]
        ),
        max_size=30,
    )
)
def test_mime_soup_never_breaks_a_search(lines: list[bytes]) -> None:
    matching("OR TEXT x OR BODY y FROM z", one(b"".join(lines)))


SEARCH_TOKENS = st.sampled_from(
    [
        "ALL", "SEEN", "UNSEEN", "NEW", "OLD", "RECENT", "UNRECENT", "KEYWORD", "UNKEYWORD", "$Junk",
        "\\Seen", "FROM", "TO", "CC", "BCC", "SUBJECT", "HEADER", "BODY", "TEXT", "NOT", "OR", "UID",
        "LARGER", "SMALLER",
        "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "1-Jan-2002", '"31-Dec-2001"', "0", "1",
        "99999999999999999999", "1:*", "*", "5:2", "1,", "$", "(", ")", '""', '"x y"', "{3+}\r\nabc", "x",
        "\xe9", "CHARSET", "UTF-8",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(SEARCH_TOKENS, min_size=1, max_size=12))
def test_random_search_criteria_parse_or_fail_cleanly_and_evaluate(tokens: list[str]) -> None:
    text = " ".join(tokens).replace("( ", "(").replace(" )", ")")
    try:
        found = criteria(text.encode("utf-8"))
    except ParseError as error:
        assert error.response.startswith(b"t ")
        return
    messages = [View(1, 3, PLAIN, frozenset({"\\Seen"})), View(2, 7, MULTIPART)]
    program = SearchProgram(found, message_count=2, max_uid=7)
    assert all(isinstance(program.matches(message), bool) for message in messages)


# -- against Dovecot ---------------------------------------------------------------------------------

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "spam" / "spamassassin-public"
SAMPLE_EVERY = 40
"""Every 40th message of each corpus archive (about 150), plus :data:`CHOSEN` and :data:`SYNTHETIC`."""
CHOSEN = {
    "spam/00293": "Big5 quoted-printable encoded words",
    "spam/00322": "GBK base64 encoded words",
    "spam/00326": "ISO-2022-JP encoded words",
    "spam/00397": "GB2312 subject",
    "spam_2/00259": "gb2312 quoted-printable subject",
    "spam/00089": "8-bit ISO-8859-1 body",
    "spam_2/01104": "ISO-8859-1 accented text",
    "spam_2/00204": "Content-Type without ';' before its parameter",
}
UNSUPPORTED_BY_ICONV = re.compile(rb"charset=\"?ks_c_5601", re.IGNORECASE)
"""Deliberate difference: Python decodes ks_c_5601-1987 (as cp949); glibc's iconv, which Dovecot uses,
does not know the name, so Dovecot reads such parts as UTF-8 (mostly U+FFFD, and the odd accidental
UTF-8 sequence that makes, say, ``TEXT ü`` match Korean text). Such messages are left out."""
BASE_TIME = int(datetime(2002, 9, 1, 12, 0, tzinfo=UTC).timestamp())
"""Internal dates fall at noon UTC, so their calendar date is the same in any zone within 11 hours."""
MAILDIR_FLAGS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
    "a": "$Junk",
}

SYNTHETIC = [
    b"From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>\nTo: team: a@x.org, b@x.org;\n"
    b"Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\nDate: Sat, 31 Aug 2002 23:59:59 -1200\n\n"
    b"Sch\xc3\xb6ne Gr\xc3\xbc\xc3\x9fe\n",
    b"From: plain@example.org (Plain Person)\nSubject: no date here\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: base64\n\n"
    + base64.encodebytes("Straße, naïve café — 免费 テスト".encode()),
    MULTIPART,
    b"From: <>\nCc: Broken <x@\nSubject: Re: re:\tfolded\n\tsubject   line\nDate: 7 Sep 02 1:02 PDT\n"
    b"Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n"
    b"Caf=E9 =3D equals and a soft=\n break\n",
]

DOVECOT_CRITERIA = [
    "ALL", "SEEN", "UNSEEN", "FLAGGED", "UNANSWERED", "DELETED", "DRAFT", "UNDRAFT", "RECENT", "NEW", "OLD",
    "KEYWORD $Junk", "UNKEYWORD $Junk", "SEEN FLAGGED", "OR DELETED DRAFT",
    "SUBJECT re", 'SUBJECT "re: re:"', 'SUBJECT "  the "', 'SUBJECT "folded subject line"', "SUBJECT adv",
    'HEADER Subject "  "', 'HEADER Subject "re:"',
    "FROM spamassassin", 'FROM "\\""', 'FROM "<"', 'FROM "MISSING"', 'CC "SYNTAX_ERROR"', 'FROM "("',
    "FROM yahoo.com", 'TO "undisclosed"', 'TO ";"', 'TO "team: "', "CC example", 'CC ", "', 'BCC ""',
    'NOT FROM ""',
    "HEADER X-Mailer Microsoft", 'HEADER X-Mailer ""', "HEADER Content-Type html",
    'HEADER Received "(8.11.6"',
    'HEADER Message-Id "@"', 'HEADER Content-Transfer-Encoding ""', 'NOT HEADER Content-Type ""',
    'BODY "click here"', "BODY remove", 'BODY "<html>"', "BODY nbsp", 'BODY "=3D"', 'BODY "=20"',
    'BODY "= equals"', 'BODY "http://"', "BODY epilogue", 'BODY "secret attachment"',
    'TEXT "click here"', "TEXT linux", 'TEXT "Received: from"', 'TEXT "content-type: text/plain"',
    "TEXT boundary", 'TEXT "Subject: Re"', 'TEXT "=3D"', "TEXT charset=",
    "LARGER 5000", "SMALLER 3000", "LARGER 10000 SMALLER 20000",
    "SENTSINCE 1-Aug-2002", "SENTBEFORE 1-Aug-2002", "SENTON 22-Aug-2002", "SENTON 31-Aug-2002",
    "SENTON 7-Sep-2002", "SENTBEFORE 1-Jan-1990", "SENTON 1-Jan-1970", "SENTSINCE 1-Dec-2002",
    "SINCE 1-Oct-2002", "BEFORE 1-Oct-2002", "ON 5-Sep-2002", "ON 7-Sep-2002",
    "OR SUBJECT free FROM yahoo", "NOT SUBJECT re", 'OR (SUBJECT "$" LARGER 4000) NOT BODY the',
    "1:10,20:*", "UID 5:15", "UID 140:*", "NOT 1:*",
    "CHARSET UTF-8 SUBJECT 你", "CHARSET UTF-8 SUBJECT の", "CHARSET UTF-8 BODY 的", "CHARSET UTF-8 BODY é",
    "CHARSET UTF-8 TEXT ü", "CHARSET UTF-8 BODY €", "CHARSET UTF-8 BODY ß", "CHARSET UTF-8 BODY 免费",
    "CHARSET UTF-8 SUBJECT grüße", "CHARSET UTF-8 FROM müller", "CHARSET UTF-8 BODY cafe",
    "CHARSET UTF-8 BODY straße", "CHARSET UTF-8 BODY STRASSE", "CHARSET UTF-8 BODY naive",
    "CHARSET UTF-8 TEXT テスト",
]  # fmt: skip


@dataclass(frozen=True)
class CorpusMessage:
    name: str
    data: bytes


def corpus_sample() -> Iterator[CorpusMessage]:
    """The corpus messages the comparison uses, without their mbox ``From `` line."""
    for archive in sorted(CORPUS.glob("*.tar.bz2")):
        with tarfile.open(archive) as tar:
            members = [member for member in tar if member.isfile()]
            for index, member in enumerate(members):
                short = member.name.rsplit(".", 1)[0]
                if index % SAMPLE_EVERY and short not in CHOSEN:
                    continue
                extracted = tar.extractfile(member)
                assert extracted is not None
                data = extracted.read()
                if data.startswith(b"From "):
                    data = data.split(b"\n", 1)[1]
                if not UNSUPPORTED_BY_ICONV.search(data):
                    yield CorpusMessage(member.name, data)
    for number, data in enumerate(SYNTHETIC):
        yield CorpusMessage(f"synthetic/{number}", data)


def maildir_flags(number: int) -> str:
    flags = {"S": number % 3 == 0, "F": number % 7 == 0, "R": number % 5 == 0, "T": number % 11 == 0}
    flags |= {"D": number % 13 == 0, "a": number % 4 == 0}
    return "".join(sorted(letter for letter, on in flags.items() if on))


def write_corpus_maildir(maildir: Path, messages: Sequence[CorpusMessage]) -> list[View]:
    """The messages in ``maildir/cur`` in order, with flags, a ``$Junk`` keyword and spread-out
    internal dates (file times, which Dovecot takes as the internal date); the matching views."""
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "dovecot-keywords").write_text("0 $Junk\n")
    views = []
    for number, message in enumerate(messages, start=1):
        letters = maildir_flags(number)
        path = maildir / "cur" / f"{BASE_TIME + number}.M{number}P1.test,S={len(message.data)}:2,{letters}"
        path.write_bytes(message.data)
        mtime = BASE_TIME + (number % 60) * 86400
        os.utime(path, (mtime, mtime))
        flags = frozenset({MAILDIR_FLAGS[letter] for letter in letters} | {"\\Recent"})
        when = datetime.fromtimestamp(mtime).astimezone()
        views.append(View(number, number, message.data, flags, when))
    return views


def dovecot_command(criterion: str) -> str:
    """``SEARCH criterion`` with every non-ASCII argument sent as a LITERAL+ in UTF-8 (the only encoding
    ``run_dovecot_imap`` sends; other charsets are covered above without Dovecot)."""

    def literal(found: re.Match[str]) -> str:
        text = found.group(0).strip('"')
        return f"{{{len(text.encode())}+}}\r\n{text}"

    return "SEARCH " + re.sub(r'"[^"]*[^\x00-\x7f][^"]*"|[^ "]*[^\x00-\x7f][^ "]*', literal, criterion)


def dovecot_answers(output: str, count: int) -> dict[str, tuple[str, list[int]]]:
    """Tag → (status line, message numbers found). Dovecot answers pipelined commands with all their
    untagged lines first, so the searches ask for ESEARCH (RFC 4731), whose answer names its tag."""
    statuses = dict(re.findall(r"^(t\d+) (.*)$", output, re.MULTILINE))
    found = {
        tag: list(SequenceSet.parse(numbers).resolve(count)) if numbers else []
        for tag, numbers in re.findall(
            r'^\* ESEARCH \(TAG "(t\d+)"\)(?: ALL (\S+))?\r?$', output, re.MULTILINE
        )
    }
    return {tag: (status, found.get(tag, [])) for tag, status in statuses.items()}


def our_answer(command: str, views: Sequence[View]) -> list[int]:
    parsed = parse_command(RawCommand.from_bytes(b"t " + command.encode() + b"\r\n"))
    assert isinstance(parsed, Search)
    program = SearchProgram(parsed.criteria, message_count=len(views), max_uid=len(views))
    return [view.seq for view in views if program.matches(view)]


def test_search_results_match_dovecot_on_corpus_messages() -> None:
    """Our SEARCH and Dovecot's, message number for message number, over a Maildir of sampled corpus
    messages with flags, a keyword and spread-out internal dates. (Run once over all 6046 corpus
    messages with these criteria and some sixty more, the only difference was the one documented at
    :data:`UNSUPPORTED_BY_ICONV`.)"""
    require(None if DOVECOT_IMAP.exists() else "Dovecot is not installed (apt-get install dovecot-imapd)")
    require(None if CORPUS.is_dir() else f"the SpamAssassin corpus is not at {CORPUS}")
    messages = list(corpus_sample())
    base = Path(tempfile.mkdtemp(prefix="mailtoaster-search-"))
    try:
        os.chmod(base, 0o755)  # Dovecot runs unprivileged and must reach the Maildir
        root = base / "home"
        root.mkdir(mode=0o755)
        views = write_corpus_maildir(root / "Maildir", messages)
        commands = [dovecot_command(criterion) for criterion in DOVECOT_CRITERIA]
        esearches = [command.replace("SEARCH ", "SEARCH RETURN (ALL) ", 1) for command in commands]
        output = run_dovecot_imap(root, ["SELECT INBOX", "FETCH 1:* (RFC822.SIZE)", *esearches])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    sizes = {int(n): int(size) for n, size in re.findall(r"\* (\d+) FETCH \(RFC822\.SIZE (\d+)\)", output)}
    assert sizes == {view.seq: view.size for view in views}, "same messages, same order, same sizes"
    answers = dovecot_answers(output, len(views))
    differences = []
    for index, command in enumerate(commands, start=2):
        status, theirs = answers[f"t{index}"]
        assert status.startswith("OK"), f"Dovecot refused {command!r}: {status}"
        ours = our_answer(command, views)
        if ours != theirs:
            only_ours = [messages[n - 1].name for n in sorted(set(ours) - set(theirs))]
            only_theirs = [messages[n - 1].name for n in sorted(set(theirs) - set(ours))]
            differences.append(f"{command!r}: only ours {only_ours[:5]}, only Dovecot's {only_theirs[:5]}")
    assert not differences, "\n".join(differences)
    assert len(messages) > 140
