"""FETCH items rendered from stored messages (mailtoaster.imap.fetch, .bodystructure), checked three ways.

1. Hand-written cases with the exact bytes expected: the values are Dovecot 2.3's answers (and
   :func:`test_expectations_are_dovecots_answers` asks a running Dovecot again, so they cannot drift).
2. Broken and unusual MIME (:data:`EDGE_MESSAGES`) and a sample of the SpamAssassin corpus, fetched
   from Dovecot over a copy of the same Maildir and compared item by item, byte for byte.
3. Properties that hold for any bytes at all: parsing never raises, ``BODY[]`` is the message in
   CRLF form, sections and partial ranges are slices of it, streaming gives the same bytes, a
   50 MB message is served without holding copies of it.

Dovecot's answers for two items depend on what else it has computed for the message, and for those
we give the answer it gives a client asking for the item alone (the comparison asks one item per
FETCH command, see :func:`compare_with_dovecot`), or RFC 3501's:

* BODYSTRUCTURE of plain US-ASCII text keeps the header's case; Dovecot lower-cases it only when
  items answered earlier in the same command cached "plain 7-bit". Both are the same structure.
* HEADER.FIELDS of a message without an empty line after its header (and so without a body) gets no
  empty line, as RFC 3501 §6.4.5 says; Dovecot adds one unless it answers from its header cache.
  This one is named by a predicate (:func:`header_without_empty_line`), counted, and the count is
  asserted; no corpus message is affected.
"""

from __future__ import annotations

import mmap
import os
import random
import re
import shutil
import tarfile
import tempfile
import tracemalloc
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.imap.bodystructure import MessagePart, header_stop, parse_message, walk
from mailtoaster.imap.fetch import (
    BodySection,
    FetchAttribute,
    FetchMessage,
    FetchSyntaxError,
    Section,
    open_message,
    parse_attribute,
    parse_section,
    sets_seen,
    to_crlf,
)
from tests.dovecotimap import (
    DovecotImap,
    dovecot_problem,
    fetch_all,
    parse_fetch,
    string_value,
    write_maildir,
)
from tests.peers import require

CORPUS = (
    Path(
        os.environ.get("MAILTOASTER_TESTDATA") or Path(__file__).resolve().parents[2] / "shared" / "testdata"
    )
    / "spam"
    / "spamassassin-public"
)


def value_of(message: bytes | FetchMessage, item: str) -> bytes:
    """What the server sends after the item's name, e.g. ``{5}\\r\\nhello`` for ``BODY[1]``."""
    fetched = message if isinstance(message, FetchMessage) else FetchMessage(message)
    attribute = parse_attribute(item)
    rendered = fetched.render(attribute)
    name = attribute.name() if isinstance(attribute, BodySection) else attribute.encode()
    assert rendered.startswith(name + b" ")
    return rendered[len(name) + 1 :]


def literal_content(value: bytes) -> bytes:
    found = re.match(rb"\{(\d+)\}\r\n", value)
    assert found is not None, value[:40]
    content = value[found.end() :]
    assert len(content) == int(found.group(1))
    return content


# -- 1. hand-written cases ------------------------------------------------------------------------

MULTIPART = (
    b"From: Alice <alice@example.org>\n"
    b"Subject: parts\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="outer"\n'
    b"\n"
    b"preamble\n"
    b"--outer\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"\n"
    b"caf\xc3\xa9\n"
    b"--outer\n"
    b"Content-Type: message/rfc822\n"
    b"Content-Description: forwarded\n"
    b"\n"
    b"Subject: inner\n"
    b"From: Bob <bob@example.net>\n"
    b"Content-Type: multipart/alternative; boundary=inner\n"
    b"\n"
    b"--inner\n"
    b"\n"
    b"plain\n"
    b"--inner\n"
    b"Content-Type: text/html\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"<p>html</p>\n"
    b"--inner--\n"
    b"--outer--\n"
    b"epilogue\n"
)

EXPECTED: list[tuple[str, bytes, str, bytes]] = [
    # (case, message, item, exactly what Dovecot 2.3.19 sends after the item name)
    ("simple size", b"From: a@b.c\nSubject: hi\n\nbody\n", "RFC822.SIZE", b"34"),
    (
        "simple structure",
        b"From: a@b.c\nSubject: hi\n\nbody\n",
        "BODYSTRUCTURE",
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)',
    ),
    (
        "simple BODY",
        b"From: a@b.c\n\nbody\n",
        "BODY",
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1)',
    ),
    (
        "simple header",
        b"From: a@b.c\nSubject: hi\n\nbody\n",
        "BODY.PEEK[HEADER]",
        b"{28}\r\nFrom: a@b.c\r\nSubject: hi\r\n\r\n",
    ),
    ("simple part 1", b"From: a@b.c\n\nbody\n", "BODY.PEEK[1]", b"{6}\r\nbody\r\n"),
    ("missing part", b"From: a@b.c\n\nbody\n", "BODY.PEEK[2]", b"{0}\r\n"),
    ("partial", b"From: a@b.c\nSubject: hi\n\nbody\n", "BODY.PEEK[]<2.5>", b"{5}\r\nom: a"),
    ("partial past end", b"From: a@b.c\n\nbody\n", "BODY.PEEK[]<200.5>", b"{0}\r\n"),
    ("partial of nothing", b"From: a@b.c\n\nbody\n", "BODY.PEEK[]<0.0>", b"{0}\r\n"),
    (
        "folded envelope strings",
        (
            b'Date: Thu, 15 Feb 2007\n 01:02:03 +0200\nMessage-ID: <a@b>\n\t<c@d>\nSubject: a  b\tc "q"\n'
            b"From: x@y\n\nbody\n"
        ),
        "ENVELOPE",
        b'("Thu, 15 Feb 2007 01:02:03 +0200" {9}\r\na b c "q" ((NIL NIL "x" "y")) ((NIL NIL "x" "y")) ((NIL '
        b'NIL "x" "y")) NIL NIL NIL NIL "<a@b>\t<c@d>")',
    ),
    (
        "repeated fields: last string wins, addresses add up",
        b"To: a@b\nSubject: s1\nTo: c@d\nDate: d1\nDate: d2\nMessage-ID: <m1>\nMessage-ID: <m2>\nCc: e@f\n"
        b"In-Reply-To: <i1>\nIn-Reply-To: <i2>\nCc: g@h\n\nx\n",
        "ENVELOPE",
        b'("d2" "s1" NIL NIL NIL ((NIL NIL "a" "b")(NIL NIL "c" "d")) ((NIL NIL "e" "f")(NIL NIL "g" "h")) '
        b'NIL "<i2>" "<m2>")',
    ),
    (
        "encoded words stay encoded, groups, routes, broken addresses",
        b"Subject: =?utf-8?q?caf=C3=A9?=\nFrom: =?utf-8?q?J=C3=B6rg?= <j@x>\nTo: undisclosed-recipients:;\n"
        b'Cc: "a\\"b" <c@d>, e@f (Comment here), <@r1,@r2:g@h>, bad address, @x\n\nx\n',
        "ENVELOPE",
        b'(NIL "=?utf-8?q?caf=C3=A9?=" (("=?utf-8?q?J=C3=B6rg?=" NIL "j" "x")) '
        b'(("=?utf-8?q?J=C3=B6rg?=" NIL "j" "x")) (("=?utf-8?q?J=C3=B6rg?=" NIL "j" "x")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
        b'(({3}\r\na"b NIL "c" "d")("Comment here" NIL "e" "f")(NIL "@r1,@r2" "g" "h")'
        b'("bad address" NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "MISSING_MAILBOX" "x")) '
        b"NIL NIL NIL)",
    ),
    (
        "8-bit header text is a literal",
        b"Subject: caf\xc3\xa9\nFrom: J\xc3\xb6rg <j@x>\n\nx\n",
        "ENVELOPE",
        b'(NIL {5}\r\ncaf\xc3\xa9 (({5}\r\nJ\xc3\xb6rg NIL "j" "x")) (({5}\r\nJ\xc3\xb6rg NIL "j" "x")) '
        b'(({5}\r\nJ\xc3\xb6rg NIL "j" "x")) NIL NIL NIL NIL NIL)',
    ),
    (
        "NUL in header and body",
        b"Subject: x\x00y\nFrom: N\x00me <a@b>\n\nx\x00y\n",
        "ENVELOPE",
        b'(NIL {5}\r\nx\xef\xbf\xbdy ((NIL NIL "N" "MISSING_DOMAIN")) ((NIL NIL "N" "MISSING_DOMAIN")) '
        b'((NIL NIL "N" "MISSING_DOMAIN")) NIL NIL NIL NIL NIL)',
    ),
    (
        "NUL sent as 0x80",
        b"Subject: x\x00y\n\nx\x00y\n",
        "BODY.PEEK[]",
        b"{21}\r\nSubject: x\x80y\r\n\r\nx\x80y\r\n",
    ),
    (
        "empty and padded fields",
        b"Subject:    lots of space   \nFrom:a@b\nTo:\nCc:   \nBcc: ,\nReply-To: , a@b ,, c@d\n\nx\n",
        "ENVELOPE",
        b'(NIL {13}\r\nlots of space ((NIL NIL "a" "b")) ((NIL NIL "a" "b")) ((NIL NIL "MISSING_MAILBOX" '
        b'"MISSING_DOMAIN")(NIL NIL "a" "b")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "c" "d")) '
        b'NIL NIL ((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) NIL NIL)',
    ),
    (
        "address syntax",
        b'From: "Last, First" <a@b>, First Last <c@d>\nTo: group: ;\nCc: Group Name: a@b, c@d ;\n'
        b"Bcc: a@b (c1) (c2)\n\nx\n",
        "ENVELOPE",
        b'(NIL NIL (("Last, First" NIL "a" "b")("First Last" NIL "c" "d")) (("Last, First" NIL "a" '
        b'"b")("First Last" NIL "c" "d")) (("Last, First" NIL "a" "b")("First Last" NIL "c" "d")) ((NIL NIL '
        b'"group" NIL)(NIL NIL NIL NIL)) ((NIL NIL "Group Name" NIL)(NIL NIL "a" "b")(NIL NIL "c" "d")(NIL '
        b'NIL NIL NIL)) (("c2" NIL "a" "b")) NIL NIL)',
    ),
    (
        "dots and domains",
        b"From: a.b.@c, .x@y, a..b@c\nTo: Name <a@b\nCc: a@[1.2.3.4], b@c.d.\n\nx\n",
        "ENVELOPE",
        b'(NIL NIL ((NIL NIL "a.b." "c")(NIL NIL ".x" "y")(NIL NIL "a..b" "c")) ((NIL NIL "a.b." "c")(NIL '
        b'NIL ".x" "y")(NIL NIL "a..b" "c")) ((NIL NIL "a.b." "c")(NIL NIL ".x" "y")(NIL NIL "a..b" "c")) '
        b'(("Name" NIL "a" "SYNTAX_ERROR")) ((NIL NIL "a" "[1.2.3.4]")(NIL NIL "b" "MISSING_DOMAIN")) NIL '
        b"NIL NIL)",
    ),
    (
        "Content-Type without subtype",
        b"Content-Type: text\n\nx\n",
        "BODYSTRUCTURE",
        b'("text" "" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)',
    ),
    (
        "upper case kept when not plain us-ascii",
        b"Content-Type: TEXT/PLAIN; CHARSET=UTF-8\nContent-Transfer-Encoding: 8BIT\n\nx\n",
        "BODYSTRUCTURE",
        b'("TEXT" "PLAIN" ("CHARSET" "UTF-8") NIL NIL "8BIT" 3 1 NIL NIL NIL NIL)',
    ),
    (
        "plain US-ASCII keeps the header's case",
        b"MIME-Version: 1.0\nContent-Type: Text/Plain; Charset=US-ASCII\n"
        b"Content-Transfer-Encoding: 7BIT\n\nx\n",
        "BODYSTRUCTURE",
        b'("Text" "Plain" ("Charset" "US-ASCII") NIL NIL "7BIT" 3 1 NIL NIL NIL NIL)',
    ),
    (
        "broken Content-Type",
        b"MIME-Version: 1.0\nContent-Type: text/plain garbage; charset=x\n\nx\n",
        "BODYSTRUCTURE",
        b'("" "" NIL NIL NIL "7bit" 3 NIL NIL NIL NIL)',
    ),
    (
        "multipart without boundary",
        b"Content-Type: multipart/mixed\n\nx\n",
        "BODYSTRUCTURE",
        (
            b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" NIL '
            b"NIL NIL NIL)"
        ),
    ),
    (
        "second disposition replaces one without parameters",
        (
            b"Content-Disposition: inline\nContent-Disposition: attachment; filename=a\nContent-Type: "
            b"image/png\n\nx"
        ),
        "BODYSTRUCTURE",
        b'("image" "png" NIL NIL NIL "7bit" 1 NIL ("attachment" ("filename" "a")) NIL NIL)',
    ),
    (
        "Content-* ignored without MIME",
        b"Content-Transfer-Encoding: base64\nContent-Disposition: attachment\n\nx\n",
        "BODYSTRUCTURE",
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)',
    ),
    (
        "RFC 2231 parameters joined, left encoded",
        b"MIME-Version: 1.0\nContent-Type: application/x; name*0*=utf-8''a%20b; name*1=c%d; "
        b"title*=us-ascii'en'x; other*3=z; a*=1; b*0=x; b*2=y\nContent-Disposition: attachment; "
        b"filename*=utf-8''%E2%82%AC.txt; size=3\n\nx\n",
        "BODYSTRUCTURE",
        b'("application" "x" ("a*3*" "1" "b*0" "x" "b*2" "y" "name*" "utf-8\'\'a%20bc%25d" "other*3" "z" '
        b'"title*1*" "us-ascii\'en\'x") NIL NIL "7bit" 3 NIL ("attachment" ("size" "3" "filename*" '
        b"\"utf-8''%E2%82%AC.txt\")) NIL NIL)",
    ),
    (
        "multipart with message/rfc822",
        MULTIPART,
        "BODYSTRUCTURE",
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)("message" "rfc822" NIL '
        b'NIL "forwarded" "7bit" 223 (NIL "inner" (("Bob" NIL "bob" "example.net")) (("Bob" NIL "bob" '
        b'"example.net")) (("Bob" NIL "bob" "example.net")) NIL NIL NIL NIL NIL) (("text" "plain" '
        b'("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)("text" "html" ("charset" "us-ascii") '
        b'NIL NIL "quoted-printable" 11 0 NIL NIL NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL) '
        b'13 NIL NIL NIL NIL) "mixed" ("boundary" "outer") NIL NIL NIL)',
    ),
    ("part of a multipart", MULTIPART, "BODY.PEEK[1]", b"{5}\r\ncaf\xc3\xa9"),
    (
        "MIME header of a part",
        MULTIPART,
        "BODY.PEEK[1.MIME]",
        b"{43}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    ),
    (
        "header of an attached message",
        MULTIPART,
        "BODY.PEEK[2.HEADER]",
        b"{100}\r\nSubject: inner\r\nFrom: Bob <bob@example.net>\r\nContent-Type: multipart/alternative; "
        b"boundary=inner\r\n\r\n",
    ),
    ("part inside an attached message", MULTIPART, "BODY.PEEK[2.2]", b"{11}\r\n<p>html</p>"),
    (
        "MIME header inside",
        MULTIPART,
        "BODY.PEEK[2.2.MIME]",
        b"{72}\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
    ),
    ("TEXT of a non-message part", MULTIPART, "BODY.PEEK[1.TEXT]", b"{0}\r\n"),
    ("part 0 is the first part (Dovecot)", MULTIPART, "BODY.PEEK[0]", b"{5}\r\ncaf\xc3\xa9"),
    (
        "header fields, case-insensitive, in request order",
        b"Subject: a\n\tb\nFrom: x@y\nX-Foo: 1\nsubject: again\nNoColon line\n\nbody\n",
        "BODY.PEEK[HEADER.FIELDS (subject From)]",
        b"{45}\r\nSubject: a\r\n\tb\r\nFrom: x@y\r\nsubject: again\r\n\r\n",
    ),
    (
        "header fields not",
        b"Subject: a\n\tb\nFrom: x@y\nX-Foo: 1\nsubject: again\nNoColon line\n\nbody\n",
        "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]",
        b"{37}\r\nFrom: x@y\r\nX-Foo: 1\r\nNoColon line\r\n\r\n",
    ),
    ("header fields none match", b"Subject: a\n\nbody\n", "BODY.PEEK[HEADER.FIELDS (NOPE)]", b"{2}\r\n\r\n"),
    (
        "name before spaced colon",
        b"Subject : spaced\nX-Foo:1\n\nb\n",
        "BODY.PEEK[HEADER.FIELDS (SUBJECT)]",
        b"{20}\r\nSubject : spaced\r\n\r\n",
    ),
    (
        "header fields not, header cut by end of data",
        b"Subject: a\nFrom: x@y",
        "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]",
        b"{9}\r\nFrom: x@y",
    ),
    (
        "header without empty line",
        b"Subject: a\nFrom: x@y",
        "BODY.PEEK[HEADER]",
        b"{21}\r\nSubject: a\r\nFrom: x@y",
    ),
    ("no body", b"Subject: a\nFrom: x@y\n", "BODY.PEEK[TEXT]", b"{0}\r\n"),
    (
        "fields of an attached message",
        (
            b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nSubject: "
            b"in\nX: 1\n\ninner body\n--b\n\npart two\n--b--\n"
        ),
        "BODY.PEEK[1.HEADER.FIELDS (X)]",
        b"{8}\r\nX: 1\r\n\r\n",
    ),
    (
        "partial of header fields",
        b"Subject: a\n\nb\n",
        "BODY.PEEK[HEADER.FIELDS (X-FOO)]<0.3>",
        b"{2}\r\n\r\n",
    ),
    (
        "section name echoes field names",
        b"Subject: a\n\nb\n",
        'BODY.PEEK[HEADER.FIELDS ("x y" z)]',
        b"{2}\r\n\r\n",
    ),
    (
        "RFC 3501: no empty line added to a header that has none",
        b"Subject: a\nFrom: x@y\n",
        "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]",
        b"{23}\r\nSubject: a\r\nFrom: x@y\r\n",
    ),
]


@pytest.mark.parametrize(
    ("case", "message", "item", "expected"), EXPECTED, ids=[case[0] for case in EXPECTED]
)
def test_items_render_as_dovecot_renders_them(case: str, message: bytes, item: str, expected: bytes) -> None:
    assert value_of(message, item) == expected


def test_response_names_say_body_and_origin() -> None:
    message = FetchMessage(b"Subject: a\n\nbody\n")
    assert message.render(parse_attribute("body.peek[1]<2.3>")) == b"BODY[1]<2> {3}\r\ndy\r"
    assert message.render(parse_attribute("BODY[header.fields (a b)]")).startswith(
        b"BODY[HEADER.FIELDS (A B)] {"
    )
    assert message.render(parse_attribute('BODY[HEADER.FIELDS.NOT ("x y")]')).startswith(
        b'BODY[HEADER.FIELDS.NOT ("X Y")] {'
    )
    assert message.render(parse_attribute("rfc822.header")) == b"RFC822.HEADER {14}\r\nSubject: a\r\n\r\n"
    assert message.render(parse_attribute("RFC822.TEXT")) == b"RFC822.TEXT {6}\r\nbody\r\n"
    assert message.render(parse_attribute("RFC822")) == b"RFC822 {20}\r\nSubject: a\r\n\r\nbody\r\n"
    assert message.render_all([parse_attribute("RFC822.SIZE"), parse_attribute("BODY[1]")]) == (
        b"RFC822.SIZE 20 BODY[1] {6}\r\nbody\r\n"
    )


def test_only_non_peek_bodies_and_rfc822_text_set_seen() -> None:
    assert sets_seen([parse_attribute("BODY[]")])
    assert sets_seen([parse_attribute("BODY[1.MIME]<0.10>")])
    assert sets_seen([parse_attribute("RFC822")])
    assert sets_seen([parse_attribute("RFC822.TEXT")])
    assert sets_seen([parse_attribute("ENVELOPE"), parse_attribute("BODY[TEXT]")])
    assert not sets_seen([parse_attribute("BODY.PEEK[]"), parse_attribute("RFC822.HEADER")])
    assert not sets_seen(
        [parse_attribute(name) for name in ("ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822.SIZE")]
    )
    assert not sets_seen([])


@pytest.mark.parametrize(
    ("text", "section"),
    [
        ("", Section()),
        ("HEADER", Section(kind="HEADER")),
        ("text", Section(kind="TEXT")),
        ("1", Section((1,))),
        ("1.2.3", Section((1, 2, 3))),
        ("2.MIME", Section((2,), "MIME")),
        ("4.1.header", Section((4, 1), "HEADER")),
        ("HEADER.FIELDS (From to)", Section((), "HEADER.FIELDS", ("FROM", "TO"))),
        ('3.HEADER.FIELDS.NOT ("X-A" x-b)', Section((3,), "HEADER.FIELDS.NOT", ("X-A", "X-B"))),
    ],
)
def test_sections_parse(text: str, section: Section) -> None:
    assert parse_section(text) == section


@pytest.mark.parametrize(
    "text",
    [
        "MIME",
        "1.",
        "1..2",
        "1.FOO",
        "HEADER.FIELDS",
        "HEADER.FIELDS ()",
        "HEADER.FIELDS (a",
        "1HEADER",
        "TEXT.1",
    ],
)
def test_invalid_sections_are_refused(text: str) -> None:
    with pytest.raises(FetchSyntaxError):
        parse_section(text)


@pytest.mark.parametrize(
    "text", ["FLAGS", "UID", "INTERNALDATE", "BODY[", "BODY[]<1>", "BODY.PEEK", "RFC822.PEEK", "ALL"]
)
def test_non_message_or_broken_attributes_are_refused(text: str) -> None:
    with pytest.raises(FetchSyntaxError):
        parse_attribute(text)


# -- 2. compared with Dovecot ---------------------------------------------------------------------


def nested_multipart(depth: int) -> bytes:
    head = b"".join(
        b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(depth)
    )
    tail = b"".join(b"--b%d--\n" % i for i in reversed(range(depth)))
    return b"Content-Type: multipart/mixed; boundary=b0\n\n" + head + b"--b%d\n\ninner\n" % depth + tail


def nested_rfc822(depth: int) -> bytes:
    levels = b"".join(b"Subject: level %d\nContent-Type: message/rfc822\n\n" % i for i in range(depth))
    return levels + b"Subject: core\n\ncore body\n"


EDGE_MESSAGES: dict[str, bytes] = {
    "missing close delimiter": b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\n\ntwo\n",
    "boundary never appears": b"Content-Type: multipart/mixed; boundary=b\n\njust text\n",
    "boundaries sharing a prefix": (
        b"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/mixed; boundary=ab\n\n"
        b"--ab\n\nx\n--a\n\ny\n--ab--\n--a--\n"
    ),
    "same boundary nested": (
        b"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/mixed; boundary=a\n\n"
        b"--a\n\nx\n--a--\n\ny\n--a--\n"
    ),
    "part header ends at a boundary": (
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\nX-A: 1\n--b\n"
        b"Content-Type: text/html\n\n<p>\n--b--\n"
    ),
    "body starts with the parent boundary": (
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n--b\n\nsecond\n"
        b"--b--\n"
    ),
    "message/rfc822 cut short": (
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\n--b\n"
        b"Content-Type: message/rfc822\n\nSubject: s\n--b\nContent-Type: message/rfc822\n\nSubject: t\n\n"
        b"body\n--b--\n"
    ),
    "digest": (
        b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\nFrom: a@b\n\nfirst\n--d\n"
        b"Content-Type: text/plain\n\nsecond\n--d\n\n--d--\n"
    ),
    "message in a message": (
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nSubject: outer\n"
        b"Content-Type: message/rfc822\n\nSubject: inner\nTo: x@y, z@w\nContent-Type: "
        b"multipart/alternative; boundary=c\n\n--c\n\nplain\n--c\nContent-Type: text/html\n\n<b>\n--c--\n"
        b"--b--\n"
    ),
    "multipart nesting 98 deep": nested_multipart(98),
    "multipart nesting 99 deep": nested_multipart(99),
    "multipart nesting 120 deep": nested_multipart(120),
    "message/rfc822 nesting 99 deep": nested_rfc822(99),
    "message/rfc822 nesting 120 deep": nested_rfc822(120),
    "more parts than the limit": (
        b"Content-Type: multipart/mixed; boundary=b\n\n"
        + b"".join(b"--b\n\n%d\n" % i for i in range(10005))
        + b"--b--\n"
    ),
    "more messages than the part limit": (
        b"Content-Type: multipart/mixed; boundary=b\n\n"
        + b"".join(b"--b\nContent-Type: message/rfc822\n\nSubject: %d\n\nx\n" % i for i in range(5003))
        + b"--b--\n"
    ),
    "8-bit headers": (
        b"Subject: \xe4\xf6\xfc caf\xc3\xa9\nFrom: \xc4nne <a@\xe9x.com>\nContent-Type: text/plain"
        b"; charset=iso-8859-1; "
        b'name="f\xe9.txt"\nContent-Description: d\xe9scr\n\nbody \xff\n'
    ),
    "NUL bytes": (
        b'Subject: a\x00b\nX-N\x00ul: v\nContent-Type: text/plain; charset="a\x00b"\n\nbo\x00dy\n\x00\n'
    ),
    "CRLF": (
        b"Subject: crlf\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n"
    ),
    "mixed line ends and a lone CR": b"Subject: mixed\r\nX: 1\n\nline\r\nline2\nlone\rcr\n\r\n",
    "white space after boundary": b"Content-Type: multipart/mixed; boundary=b\n\n--b  \n\none\n--b--  \n",
    "boundary ending in dashes": (
        b'Content-Type: multipart/alternative; boundary="--x---"\n\n'
        b"----x---\n\none\n----x---\n\ntwo\n----x-----\n"
    ),
    "extension fields": (
        b"MIME-Version: 1.0\nContent-Type: text/plain\nContent-Disposition: inline\n"
        b"Content-Language: en-US, de ,fr\nContent-Location:\n http://x/y\nContent-MD5: Q2hlY2s=\n"
        b'Content-ID: <id@x>\nContent-Description: a "quoted" desc\n\nx\n'
    ),
    "empty disposition": b"MIME-Version: 1.0\nContent-Disposition: ;x=y\n\nx\n",
    "boundary line at end without LF": b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b",
    "boundary line at end with LF": b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\none\n--b\n",
    "preamble and epilogue": (
        b"Content-Type: multipart/mixed; boundary=b\n\npreamble\n--b\n\none\n--b--\nepilogue\n-- not a "
        b"boundary\n"
    ),
    "comments in Content-Type": (
        b"MIME-Version: 1.0\nContent-Type: text/plain (comment); charset=x (another)\n\nx\n"
    ),
    "boundary longer than 80": (
        b'Content-Type: multipart/mixed; boundary="'
        + b"x" * 100
        + b'"\n\n--'
        + b"x" * 100
        + b"\n\none\n--"
        + b"x" * 100
        + b"--\n"
    ),
    "empty boundary": b'Content-Type: multipart/mixed; boundary=""\n\n--\n\none\n----\n',
    "part header cut by end of data": (
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain"
    ),
    "only an empty line": b"\r\n",
    "empty message": b"",
    "no empty line, no newline": b"no header at all",
    "two Content-Types": (
        b"MIME-Version: 1.0\nContent-Type: text/html\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\n\nx\n--b--\n"
    ),
    "message/rfc822 without MIME-Version": b"Content-Type: message/rfc822\n\nSubject: in\n\nbody\n",
    "message/rfc822 at the top": (
        b"MIME-Version: 1.0\nContent-Type: message/rfc822\n\nSubject: in\nFrom: a@b\n\nbody\n"
    ),
    "unterminated comment": b"MIME-Version: 1.0\nContent-Type: text/plain; charset=(x\n\nbody\n",
    "address zoo": (
        b'From: "A, B" <a@b>, (c) d@e (f), g: h@i, "j k"@l;, <@r:m@n>, o@[1.2.3.4]\n'
        b'To: "quoted local"@x, =?utf-8?b?w6k=?= <q@r>, Name <@a,@b:c@d>\n'
        b"Cc: ;, :;, a b c, <>, @, a@, @b, a@b@c\nBcc: undisclosed:;\nSender: a@b.c (comment \\) n"
        b"ested (x))\n"
        b'Reply-To: "" <>\n\nx\n'
    ),
    "first line starts with white space": b" leading: space\nSubject: x\n\nbody\n",
    "dashes that are no boundary": (
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\n-- sig\n--bb\n--b-\n--b--\n"
    ),
    "folded envelope fields": (
        b"Subject: =?utf-8?q?a?=\n\t=?utf-8?q?b?=\nDate: Mon,\n\t1 Jan 2001\nMessage-ID:\n <x@y>\n"
        b"In-Reply-To: <a@b>\n <c@d>\n\nx\n"
    ),
    "two boundary parameters": (
        b'Content-Type: multipart/mixed;\n boundary="b"; boundary=c\n\n--b\n\nx\n--c\n\ny\n--b--\n'
    ),
    "spaced transfer encoding": (
        b"MIME-Version: 1.0\nContent-Transfer-Encoding:  Quoted-Printable (qp) \n"
        b'Content-Type: text/plain; charset="utf-8"; format=flowed\n\nx\n'
    ),
    "two-word transfer encoding": b"MIME-Version: 1.0\nContent-Transfer-Encoding: 8bit x\n\nx\n",
    "odd parameters": (
        b"MIME-Version: 1.0\n"
        b'Content-Type: text/plain; ; charset=utf-8;; x; y=; z="q\\"t"; =v; w==abc==; u=a b\n\nx\n'
    ),
    "multipart closed at once": b"Content-Type: multipart/alternative; boundary=b\n\n--b--\nafter\n",
    "mbox From line kept": b"From sender@x Mon Jan  1 00:00:00 2001\nFrom: a@b\nSubject: hi\n\nx\n",
}

EDGE_ITEMS = (
    "RFC822.SIZE",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "BODY.PEEK[]",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[1]",
    "BODY.PEEK[1.MIME]",
    "BODY.PEEK[2]",
    "BODY.PEEK[2.MIME]",
    "BODY.PEEK[1.1]",
    "BODY.PEEK[1.2]",
    "BODY.PEEK[1.HEADER]",
    "BODY.PEEK[1.TEXT]",
    "BODY.PEEK[2.HEADER]",
    "BODY.PEEK[2.TEXT]",
    "BODY.PEEK[3]",
    "BODY.PEEK[3.1]",
    "BODY.PEEK[2.1.1]",
    "BODY.PEEK[1.HEADER.FIELDS (SUBJECT X-A)]",
    "BODY.PEEK[2.HEADER.FIELDS.NOT (SUBJECT)]",
    "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM X-NUL)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]",
    "BODY.PEEK[]<5.20>",
    "BODY.PEEK[TEXT]<3.4>",
)


def header_without_empty_line(message: bytes, item: str) -> bool:
    """Where we choose RFC 3501 over Dovecot: HEADER.FIELDS of a message whose header has no empty
    line after it (no body). RFC 3501 §6.4.5: the blank line is included "except in the case of a
    message which has no body and no blank line". Dovecot adds one when it filters the header
    itself but not when it answers from its header cache, so its answer depends on what was
    fetched before; ours does not."""
    top_level_fields = re.fullmatch(r"BODY(?:\.PEEK)?\[HEADER\.FIELDS \(.*\)\](?:<.*>)?", item) is not None
    return top_level_fields and not header_stop(message, 0, len(message))[1]


def partial_after_lone_cr(message: bytes, item: str) -> bool:
    """A Dovecot bug we do not copy: a partial fetch ``<origin.count>`` of LF-stored text whose
    origin falls right after a lone CR (one not followed by LF). Dovecot's message_skip_virtual()
    reports "ended after a CR", and imap_msgpart_crlf_seek() then drops one more byte, meant for
    the LF of a CRLF pair, so it sends bytes ``origin+1``.. instead of ``origin``... Ours are a
    slice of the full section, as RFC 3501 defines partial fetches."""
    attribute = parse_attribute(item)
    if not isinstance(attribute, BodySection) or attribute.partial is None or attribute.partial[0] == 0:
        return False
    whole = FetchMessage(message).section(attribute.section).read()
    origin = attribute.partial[0]
    return whole[origin - 1 : origin] == b"\r" and whole[origin : origin + 1] != b"\n"


DOCUMENTED_DIFFERENCES = {
    "no empty line after the header": header_without_empty_line,
    "partial fetch right after a lone CR": partial_after_lone_cr,
}


def compare_with_dovecot(
    messages: Sequence[bytes], items: Sequence[str], tmp_path: Path
) -> tuple[list[tuple[int, str, bytes, bytes]], list[tuple[int, str, str]], int]:
    """Fetch ``items`` for ``messages`` from Dovecot and from us: (differences, documented
    differences as (message number, item, reason from :data:`DOCUMENTED_DIFFERENCES`), values
    compared).

    Dovecot is asked for one item per FETCH command. Its answers depend on what it computed for
    other items of the same command: a plain US-ASCII text/plain BODYSTRUCTURE comes out in its
    fixed lower-case form (``"text" "plain" ("charset" "us-ascii") ... "7bit"``) when RFC822.SIZE,
    BODY or BODY[] were answered first in that command, because it then caches "plain 7-bit" and
    rebuilds the structure from that flag, but with the header's own case when BODYSTRUCTURE is
    asked alone. Both describe the same part (IMAP compares these strings case-insensitively); we
    always give the header's case, the answer Dovecot gives to a client that asks for the item."""
    maildir = tmp_path / "Maildir"
    write_maildir(maildir, messages)
    theirs: dict[int, dict[str, bytes]] = {}
    with DovecotImap(maildir, tmp_path / "dovecot") as server:
        assert server.select() == len(messages)
        for item in items:  # one FETCH per item, see the docstring
            for number, found in fetch_all(server, len(messages), [item], batch=2000).items():
                theirs.setdefault(number, {}).update(found)
    attributes = [parse_attribute(item) for item in items]
    differences: list[tuple[int, str, bytes, bytes]] = []
    documented: list[tuple[int, str, str]] = []
    compared = 0
    for number, message in enumerate(messages, start=1):
        fetched = FetchMessage(message)
        for item, attribute in zip(items, attributes, strict=True):
            name = attribute.name() if isinstance(attribute, BodySection) else attribute.encode()
            ours = value_of(fetched, item)
            expected = theirs[number].get(name.decode())
            compared += 1
            if ours == expected:
                continue
            reasons = [reason for reason, applies in DOCUMENTED_DIFFERENCES.items() if applies(message, item)]
            if reasons:
                documented.append((number, item, reasons[0]))
            else:
                differences.append((number, item, ours, expected or b""))
    return differences, documented, compared


def describe(differences: Sequence[tuple[int, str, bytes, bytes]], names: Sequence[str] | None = None) -> str:
    lines = []
    for number, item, ours, theirs in differences[:8]:
        label = names[number - 1] if names else f"message {number}"
        lines.append(f"{label} {item}:\n  ours    {ours[:300]!r}\n  Dovecot {theirs[:300]!r}")
    return f"{len(differences)} differences\n" + "\n".join(lines)


@pytest.fixture
def dovecot_dir() -> Iterator[Path]:
    """A directory Dovecot can reach: it runs as ``nobody`` under root, and pytest's own temporary
    directories are private to their owner."""
    require(dovecot_problem())
    base = Path(tempfile.mkdtemp(prefix="mailtoaster-fetch-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def test_expectations_are_dovecots_answers(dovecot_dir: Path) -> None:
    """Every hand-written expectation above is what Dovecot sends, except the one documented case."""
    messages = list(dict.fromkeys(message for _case, message, _item, _expected in EXPECTED))
    items = list(dict.fromkeys(item for _case, _message, item, _expected in EXPECTED))
    maildir = dovecot_dir / "Maildir"
    write_maildir(maildir, messages)
    with DovecotImap(maildir, dovecot_dir / "dovecot") as server:
        server.select()
        answers = {item: server.fetch(f"1:{len(messages)}", f"({item})") for item in items}
    documented = 0
    for case, message, item, expected in EXPECTED:
        attribute = parse_attribute(item)
        name = attribute.name() if isinstance(attribute, BodySection) else attribute.encode()
        theirs = answers[item][messages.index(message) + 1][name.decode()]
        if header_without_empty_line(message, item):
            documented += 1
            with_empty_line = literal_content(expected) + b"\r\n"
            assert theirs in (expected, b"{%d}\r\n" % len(with_empty_line) + with_empty_line), case
        else:
            assert theirs == expected, case
    assert documented == 1


def test_edge_messages_match_dovecot(dovecot_dir: Path) -> None:
    names = list(EDGE_MESSAGES)
    differences, documented, compared = compare_with_dovecot(
        list(EDGE_MESSAGES.values()), EDGE_ITEMS, dovecot_dir
    )
    assert not differences, describe(differences, names)
    assert compared == len(names) * len(EDGE_ITEMS)
    without_empty_line = [
        name for name, message in EDGE_MESSAGES.items() if not header_stop(message, 0, len(message))[1]
    ]
    assert without_empty_line == ["empty message", "no empty line, no newline"]
    assert {names[number - 1] for number, _item, _reason in documented} <= set(without_empty_line)
    assert {item for _number, item, _reason in documented} <= {
        "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM X-NUL)]"
    }


def test_dovecot_fetch_responses_parse_into_exact_values() -> None:
    """The Dovecot helper keeps every value exactly as sent: literals (even holding parentheses and
    quotes), quoted strings with escapes, nested lists, names with sections and origins."""
    response = (
        b'* 12 FETCH (UID 7 FLAGS (\\Seen $X) BODY[HEADER.FIELDS (A B)] {8}\r\n(a) "b\r\n '
        b'BODY[]<0> "x\\"y)" ENVELOPE (NIL "s" ((NIL NIL "a" "b")) NIL) RFC822.SIZE 44)\r\n'
    )
    number, items = parse_fetch(response)
    assert number == 12
    assert items == {
        "UID": b"7",
        "FLAGS": b"(\\Seen $X)",
        "BODY[HEADER.FIELDS (A B)]": b'{8}\r\n(a) "b\r\n',
        "BODY[]<0>": b'"x\\"y)"',
        "ENVELOPE": b'(NIL "s" ((NIL NIL "a" "b")) NIL)',
        "RFC822.SIZE": b"44",
    }
    assert string_value(items["BODY[HEADER.FIELDS (A B)]"]) == b'(a) "b\r\n'
    assert string_value(items["BODY[]<0>"]) == b'x"y)'
    assert string_value(b"NIL") is None


# -- the SpamAssassin corpus ----------------------------------------------------------------------

CORPUS_ITEMS = (
    "RFC822.SIZE",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[1.2]",
    "BODY.PEEK[]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[1]",
    "BODY.PEEK[2]",
    "BODY.PEEK[1.1]",
    "BODY.PEEK[2.MIME]",
    "BODY.PEEK[2.1]",
    "BODY.PEEK[2.HEADER]",
    "BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED)]",
    "BODY.PEEK[]<100.200>",
)
SAMPLE_EVERY = 8


def _archive_members(archive: Path) -> list[tuple[str, bytes]]:
    """An archive's messages sorted by name, read in one streaming pass (no seeking in bz2)."""
    members = []
    with tarfile.open(archive, "r|bz2") as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                members.append((member.name, extracted.read()))
    return sorted(members)


@cache
def corpus_messages() -> tuple[tuple[str, bytes], ...]:
    """Every corpus message by archive and name, LF line ends as stored, the mbox ``From `` line
    dropped (delivery never stores it). The archives decompress in parallel (bz2 frees the GIL)."""
    archives = sorted(CORPUS.glob("*.tar.bz2"))
    with ThreadPoolExecutor(max_workers=len(archives) or 1) as pool:
        extracted = pool.map(_archive_members, archives)
    messages = []
    for members in extracted:
        for name, data in members:
            messages.append((name, data[data.index(b"\n") + 1 :] if data.startswith(b"From ") else data))
    return tuple(messages)


def corpus_sample() -> list[tuple[str, bytes]]:
    """Every eighth message, plus every multipart or message/rfc822 one, every one with 8-bit bytes
    in its header and every one with CR bytes: the varied ones are all in, the rest sampled."""
    sample = []
    for index, (name, data) in enumerate(corpus_messages()):
        root = parse_message(data)
        header = data[: root.header_end]
        if (
            index % SAMPLE_EVERY == 0
            or root.is_multipart
            or root.is_rfc822
            or not header.isascii()
            or b"\r" in data
        ):
            sample.append((name, data))
    return sample


@pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").exists(), reason="SpamAssassin corpus not present")
def test_corpus_sample_matches_dovecot(dovecot_dir: Path) -> None:
    sample = corpus_sample()
    multipart = sum(1 for _name, data in sample if parse_message(data).is_multipart)
    assert len(sample) > 1100 and multipart > 450, "the sample must stay varied"
    names = [name for name, _data in sample]
    differences, documented, compared = compare_with_dovecot(
        [data for _name, data in sample], CORPUS_ITEMS, dovecot_dir
    )
    assert not differences, describe(differences, names)
    assert not documented  # no corpus message meets a documented difference
    assert compared == len(sample) * len(CORPUS_ITEMS)


NOISE_TOKENS = (
    b"--b\n",
    b"--b--\n",
    b"--c\r\n",
    b"--c--",
    b"--bc\n",
    b"--b--x\n",
    b"\n",
    b"\r\n",
    b"\r",
    b"Content-Type: multipart/mixed; boundary=b\n",
    b"Content-Type: multipart/digest; boundary=c\r\n",
    b'Content-Type: multipart/alternative; boundary="bc"\n',
    b"Content-Type: message/rfc822\n",
    b'Content-Type: text/plain; charset="x"\n',
    b"Content-Type: text/html; name*0=a; name*1=b\n",
    b"MIME-Version: 1.0\n",
    b"Content-Transfer-Encoding: base64\n",
    b'Content-Disposition: attachment; filename="x y"\n',
    b"Content-ID: <a@b>\n",
    b"Content-Language: en, de\n",
    b"Content-Location: x\n",
    b"Content-MD5: abc\n",
    b"Content-Description: d\n",
    b"Subject: s\n",
    b"Subject: =?utf-8?q?x?=\n",
    b"From: a@b, (c) <d@e>\n",
    b"To: g: a@b;, c\n",
    b'Cc: "q\\" x" <x@y>\n',
    b"Date: Mon, 1 Jan 2001\n",
    b"Message-ID: <m@x>\n",
    b"In-Reply-To: <i@x>\n",
    b"Reply-To: r@x\n",
    b"Sender: s@x\n",
    b" folded\n",
    b"\tfolded\n",
    b"body line\n",
    b"\0\xff\r",
    b"--",
    b"x: y",
    b"NoColon\n",
    b"caf\xc3\xa9\n",
)
NOISE_ITEMS = (
    "RFC822.SIZE",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "BODY.PEEK[]",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[1]",
    "BODY.PEEK[1.MIME]",
    "BODY.PEEK[2.MIME]",
    "BODY.PEEK[1.1]",
    "BODY.PEEK[1.2]",
    "BODY.PEEK[1.HEADER]",
    "BODY.PEEK[1.TEXT]",
    "BODY.PEEK[2.1.1]",
    "BODY.PEEK[1.HEADER.FIELDS (SUBJECT FROM)]",
    "BODY.PEEK[2.HEADER.FIELDS.NOT (SUBJECT)]",
    "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM X)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]",
    "BODY.PEEK[]<5.20>",
)


def test_mime_shaped_noise_matches_dovecot(dovecot_dir: Path) -> None:
    """Seeded random messages made of MIME pieces (boundaries that do and do not match, headers cut
    off, stray CRs, NULs, 8-bit bytes): Dovecot and we agree on every item except the documented
    differences, which are counted."""
    rng = random.Random(1)
    messages = [b"".join(rng.choice(NOISE_TOKENS) for _ in range(rng.randint(0, 50))) for _ in range(600)]
    differences, documented, compared = compare_with_dovecot(messages, NOISE_ITEMS, dovecot_dir)
    assert not differences, describe(differences)
    assert compared == len(messages) * len(NOISE_ITEMS)
    reasons = Counter(reason for _number, _item, reason in documented)
    assert set(reasons) <= set(DOCUMENTED_DIFFERENCES)
    without_empty_line = sum(1 for message in messages if not header_stop(message, 0, len(message))[1])
    assert reasons["no empty line after the header"] <= without_empty_line
    assert reasons["partial fetch right after a lone CR"] <= len(messages) // 50


# -- 3. properties that hold for any input --------------------------------------------------------

ALL_ITEMS = tuple(dict.fromkeys(EDGE_ITEMS + CORPUS_ITEMS + ("RFC822", "RFC822.HEADER", "RFC822.TEXT")))


def check_invariants(message: bytes) -> None:
    """What must hold whatever the bytes: every item renders, BODY[] is the CRLF form, sections are
    pieces of it, partial ranges are slices, streamed chunks add up to the same bytes."""
    fetched = FetchMessage(message)
    for item in ALL_ITEMS:
        value_of(fetched, item)
    whole = literal_content(value_of(fetched, "BODY.PEEK[]"))
    assert whole == to_crlf(message)
    assert len(whole) == fetched.size == int(value_of(fetched, "RFC822.SIZE"))
    header = literal_content(value_of(fetched, "BODY.PEEK[HEADER]"))
    assert header + literal_content(value_of(fetched, "BODY.PEEK[TEXT]")) == whole
    for origin, count in ((0, 1), (3, 7), (len(whole) // 2, 10**9), (len(whole), 5)):
        assert (
            literal_content(value_of(fetched, f"BODY.PEEK[]<{origin}.{count}>"))
            == whole[origin : origin + count]
        )
    streamed = b"".join(fetched.render_chunks(parse_attribute("BODY.PEEK[]"), chunk_size=7))
    assert streamed == fetched.render(parse_attribute("BODY.PEEK[]"))

    def check_part(part: MessagePart) -> None:
        assert 0 <= part.start <= part.header_end <= part.end <= len(message)
        assert not part.is_rfc822 or len(part.children) == 1
        assert part.is_multipart or part.is_rfc822 or not part.children

    walk(fetched.root, check_part)


@pytest.mark.parametrize("name", list(EDGE_MESSAGES))
def test_edge_messages_keep_the_invariants(name: str) -> None:
    check_invariants(EDGE_MESSAGES[name])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_keep_the_invariants(message: bytes) -> None:
    check_invariants(message)


_MIME_TOKENS = st.sampled_from(
    [
        b"--b\n",
        b"--b--\n",
        b"--c\r\n",
        b"--c--",
        b"\n",
        b"\r\n",
        b"Content-Type: multipart/mixed; boundary=b\n",
        b"Content-Type: multipart/digest; boundary=c\r\n",
        b"Content-Type: message/rfc822\n",
        b'Content-Type: text/plain; charset="x"\n',
        b"MIME-Version: 1.0\n",
        b"Subject: s\n",
        b"From: a@b, (c) <d@e>\n",
        b" folded\n",
        b"body line\n",
        b"\0\xff\r",
        b"--",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_MIME_TOKENS, max_size=40))
def test_mime_shaped_noise_keeps_the_invariants(tokens: list[bytes]) -> None:
    check_invariants(b"".join(tokens))


@st.composite
def mime_trees(draw: st.DrawFn, depth: int = 0) -> tuple[bytes, object]:
    """A well-formed MIME entity and the shape the parser must find: "text", "message" (shape of
    the enclosed message) or a list of child shapes."""
    kind = draw(st.sampled_from(["text", "text", "multipart", "message"] if depth < 3 else ["text"]))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    if kind == "text":
        lines = draw(st.lists(st.sampled_from([b"hello", b"-- sig", b"", b"--", b"caf\xc3\xa9"]), max_size=4))
        return b"Content-Type: text/plain" + newline + newline + b"".join(
            line + newline for line in lines
        ), "text"
    if kind == "message":
        inner, shape = draw(mime_trees(depth + 1))
        return b"Content-Type: message/rfc822" + newline + newline + b"MIME-Version: 1.0" + newline + inner, (
            "message",
            shape,
        )
    boundary = b"b%d=_%d" % (depth, draw(st.integers(0, 99)))
    children = draw(st.lists(mime_trees(depth + 1), min_size=1, max_size=3))
    body = b"preamble" + newline
    for child, _shape in children:
        body += b"--" + boundary + newline + child + newline
    body += b"--" + boundary + b"--" + newline + b"epilogue" + newline
    head = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"' + newline + newline
    return head + body, [shape for _child, shape in children]


def shape_of(part: MessagePart) -> object:
    if part.is_multipart:
        return [shape_of(child) for child in part.children]
    if part.is_rfc822:
        return ("message", shape_of(part.children[0]))
    return "text"


@settings(max_examples=200, deadline=None)
@given(mime_trees())
def test_well_formed_mime_parses_to_the_tree_it_was_built_from(entity: tuple[bytes, object]) -> None:
    data, shape = entity
    message = b"MIME-Version: 1.0\n" + data
    assert shape_of(parse_message(message)) == shape
    check_invariants(message)


def test_sections_cover_each_leaf_exactly() -> None:
    """Every leaf's BODY[n.MIME] + BODY[n] appears in BODY[], in order (offsets are right)."""
    fetched = FetchMessage(MULTIPART)
    whole = literal_content(value_of(fetched, "BODY.PEEK[]"))
    position = 0
    for section in ("1", "2", "2.1", "2.2"):
        mime = literal_content(value_of(fetched, f"BODY.PEEK[{section}.MIME]"))
        body = literal_content(value_of(fetched, f"BODY.PEEK[{section}]"))
        found = whole.index(mime + body, position)
        position = found + len(mime)


def test_streaming_never_splits_crlf_pairs() -> None:
    message = b"Subject: x\r\n\r\n" + b"a\r\nb\nc\r" * 1000
    fetched = FetchMessage(message)
    attribute = parse_attribute("BODY.PEEK[TEXT]")
    whole = fetched.render(attribute)
    for chunk_size in (1, 2, 3, 5, 64):
        assert b"".join(fetched.render_chunks(attribute, chunk_size=chunk_size)) == whole
    text = literal_content(value_of(fetched, "BODY.PEEK[TEXT]"))
    assert text == b"a\r\nb\r\nc\r" * 1000
    assert text.count(b"\n") == text.count(b"\r\n") == 2000
    content = fetched.section(Section(kind="TEXT"))
    for origin, count in ((0, 5), (1, 1), (4, 6), (4999, 100), (8999, 10), (9000, 1)):
        for chunk_size in (1, 3, 64):
            assert b"".join(content.chunks(origin, count, chunk_size)) == text[origin : origin + count]


# -- big messages ---------------------------------------------------------------------------------


def big_message(megabytes: int) -> Iterator[bytes]:
    """A multipart message with a text part and a base64 attachment of about ``megabytes`` MB."""
    yield (
        b"From: big@example.org\nSubject: big\nMIME-Version: 1.0\nContent-Type: multipart/mixed; "
        b"boundary=big\n\n"
    )
    yield (
        b"--big\nContent-Type: text/plain\n\nsee attachment\n--big\nContent-Type: application/octet-stream\n"
    )
    yield b"Content-Transfer-Encoding: base64\n\n"
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\n"
    block = line * (1 << 14)
    for _ in range(megabytes * (1 << 20) // len(block)):
        yield block
    yield b"--big--\n"


def test_fifty_megabytes_are_served_without_copies(tmp_path: Path) -> None:
    """A 50 MB message, mapped from its file: parsing, BODYSTRUCTURE, RFC822.SIZE and streaming
    BODY[] and BODY[2] allocate a few chunks, never the message (tracemalloc's peak says so)."""
    path = tmp_path / "big"
    crlf_size = 0
    with open(path, "wb") as handle:
        for piece in big_message(50):
            handle.write(piece)
            crlf_size += len(piece) + piece.count(b"\n")
    size = path.stat().st_size
    assert size > 50 * 10**6
    tracemalloc.start()
    try:
        with open_message(path) as fetched:
            assert isinstance(fetched.data, mmap.mmap)
            structure = fetched.bodystructure()
            total = fetched.size
            streamed = 0
            for item in ("BODY.PEEK[]", "BODY.PEEK[2]", "BODY.PEEK[]<40000000.5000000>"):
                for chunk in fetched.render_chunks(parse_attribute(item)):
                    streamed += len(chunk)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == crlf_size
    assert b'("application" "octet-stream" NIL NIL NIL "base64" ' in structure
    assert streamed > 2 * total
    assert peak < 8 * 10**6, f"peak {peak} bytes while serving {size} bytes"


def test_big_message_in_memory_parses_once_and_streams_in_chunks() -> None:
    data = b"".join(big_message(20))
    tracemalloc.start()
    try:
        fetched = FetchMessage(data)
        largest = max(len(chunk) for chunk in fetched.render_chunks(parse_attribute("BODY.PEEK[]")))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert largest <= 512 * 1024
    assert peak < 4 * 10**6
    assert fetched.root.children[1].end - fetched.root.children[1].header_end > 20 * 10**6


def test_small_files_are_read_and_big_ones_mapped(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"Subject: s\n\nx\n")
    with open_message(small) as fetched:
        assert isinstance(fetched.data, bytes)
        assert fetched.render(parse_attribute("RFC822.SIZE")) == b"RFC822.SIZE 17"


def attributes_of(items: Sequence[str]) -> list[FetchAttribute]:
    return [parse_attribute(item) for item in items]


def test_answer_says_whether_seen_is_to_be_set() -> None:
    fetched = FetchMessage(b"Subject: s\n\nbody\n")
    peek = fetched.answer(attributes_of(["RFC822.SIZE", "BODY.PEEK[1]"]))
    assert peek.items == b"RFC822.SIZE 20 BODY[1] {6}\r\nbody\r\n"
    assert not peek.sets_seen
    assert fetched.answer(attributes_of(["BODY[1]"])).sets_seen


def test_repeated_items_are_answered_from_one_parse() -> None:
    fetched = FetchMessage(MULTIPART)
    root = fetched.root
    first = fetched.render_all(attributes_of(["ENVELOPE", "BODYSTRUCTURE", "BODY"]))
    second = fetched.render_all(attributes_of(["ENVELOPE", "BODYSTRUCTURE", "BODY"]))
    assert first == second
    assert fetched.root is root
