"""The spam tokenizer and its MIME reader: what becomes a token, and that no input can hurt it."""

from __future__ import annotations

import base64
import re
import sys
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.spam import tokenize as tokenize_module
from mailtoaster.spam.mime import MAX_PARTS, parse_message, part_text, split_header, to_text
from mailtoaster.spam.tokenize import MAX_TOKENS, registered_domain, split_address, tokenize, word_tokens

PLAIN = (
    b"From: Alice Example <alice@mail.example.com>\r\n"
    b"To: bob@example.org\r\n"
    b"Received: from relay.example.net by mx.example.org\r\n"
    b"Subject: Cheap watches for you\r\n"
    b"Message-ID: <123@mail.example.com>\r\n"
    b"X-Spam-Status: Yes, score=9.9\r\n"
    b"X-Mailer: Mutt 1.4\r\n"
    b"\r\n"
    b"Hello Bob, visit http://shop.example.net/watches/cheap now!\r\n"
)


def test_header_tokens_carry_the_field_name() -> None:
    tokens = tokenize(PLAIN)
    assert "subject:cheap" in tokens
    assert "subject:watches" in tokens
    assert "from:addr:alice@mail.example.com" in tokens
    assert "from:domain:mail.example.com" in tokens
    assert "from:domain:example.com" in tokens
    assert "from:name:alice" in tokens
    assert "message-id:@mail.example.com" in tokens
    assert "x-mailer:mutt 1.4" in tokens
    # A field name gives a token only when spelled unusually: the spelling is the mailer's fingerprint.
    assert "header:Message-ID" in tokens
    assert not any(token in ("header:X-Mailer", "header:Subject", "header:From") for token in tokens)
    # The same word in the body is a different token from the one in the Subject.
    assert "watches" not in tokens or "subject:watches" in tokens


def test_delivery_recipient_and_own_fields_give_no_content_tokens() -> None:
    tokens = tokenize(PLAIN)
    assert not any(token.startswith("received") for token in tokens)  # only the rcvd: relay tokens
    assert not any("x-spam" in token.lower() for token in tokens)
    assert "to:count:1" in tokens  # the recipients' structure, never who they are
    assert not any("bob@example.org" in token or "to:domain" in token for token in tokens)


RELAYED = (
    b"Received: from localhost (localhost [127.0.0.1]) by mx.example.org (Postfix) with ESMTP id 1A2B\r\n"
    b"\tfor <bob@example.org>; Tue, 3 Sep 2002 15:02:38 -0500\r\n"
    b"Received: from mail.sender.example (203-0-113-7.dsl.isp.example [203.0.113.7])\r\n"
    b"\tby mx.example.org (8.12.2/8.12.2) with ESMTP id g83K2buK013193; Tue, 3 Sep 2002 15:02:38 -0500\r\n"
    b"Received: from unknown (HELO friend) (198.51.100.9) by relay.isp.example with SMTP; 3 Sep 2002\r\n"
    b"From: a@sender.example\r\n"
    b"To: undisclosed-recipients:;\r\n"
    b"Message-ID: <005401c1e706$0ecc13c0$147ba8c0@XG395.local>\r\n"
    b'Content-Type: multipart/alternative; boundary="----=_NextPart_000_003F_01C1E716.64A6E300"\r\n'
    b"\r\n"
    b"body\r\n"
)


def test_received_relay_structure() -> None:
    tokens = tokenize(RELAYED)
    assert "rcvd:hops:3" in tokens
    # The public client's address and its /24 and /16, its names and parent domains, the HELO.
    assert {"rcvd:ip:203.0.113.7", "rcvd:ip:203.0.113", "rcvd:ip:203.0"} <= set(tokens)
    assert "rcvd:host:203-0-113-7.dsl.isp.example" in tokens
    assert "rcvd:host:isp.example" in tokens
    assert "rcvd:helo:mail.sender.example" in tokens
    assert "rcvd:helo-differs" in tokens  # HELO sender.example, reverse name isp.example
    assert "rcvd:dynamic" in tokens
    assert "rcvd:by:mx.example.org" in tokens
    assert "rcvd:with:esmtp" in tokens
    # qmail's form: no reverse name, a HELO without a dot.
    assert {"rcvd:unknown", "rcvd:helo-nodot", "rcvd:helo:friend", "rcvd:with:smtp"} <= set(tokens)
    # The loopback hand-off gives nothing, and dates, queue ids and recipients never do.
    assert "rcvd:ip:127.0.0.1" not in tokens
    assert "rcvd:helo:localhost" not in tokens
    assert not any("g83k2buk013193" in token or "2002" in token or "bob@" in token for token in tokens)


def test_identifier_shapes_and_recipient_structure() -> None:
    tokens = tokenize(RELAYED)
    assert "message-id:shape:H$H$H" in tokens
    assert "message-id:@xg395.local" in tokens
    assert "boundary:----=_NextPart_H_H_H.H" in tokens
    assert "to:undisclosed" in tokens
    assert "to:count:0" in tokens


def test_received_garbage_never_raises() -> None:
    for value in (b"", b"by only", b"from", b"from x by", b"from [999.1.1.1] by y", b"from (((( by )"):
        tokenize(b"Received: " + value + b"\r\n\r\nbody")


def test_body_words_urls_and_hosts() -> None:
    tokens = tokenize(PLAIN)
    assert "hello" in tokens
    assert "bob," in tokens  # punctuation is kept: SpamBayes found it telling
    assert "url:shop.example.net" in tokens
    assert "url:example.net" in tokens
    assert "url:watches" in tokens
    assert "bi:hello bob," in tokens
    assert "rel:url-elsewhere" in tokens  # the link goes to another domain than the sender's


def test_mime_base64_quoted_printable_and_charsets_are_decoded() -> None:
    latin = "Grüße aus Köln".encode("iso-8859-1")
    message = (
        b"From: a@example.com\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/alternative; boundary="XX"\n\n'
        b"preamble\n--XX\nContent-Type: text/plain; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(latin) + b"\n--XX\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        b"caf=C3=A9 cr=C3=A8me=\n br=C3=BBl=C3=A9e\n--XX--\nepilogue\n"
    )
    tokens = tokenize(message)
    assert "grüße" in tokens
    assert "köln" in tokens
    assert "café" in tokens
    assert "crème" in tokens
    assert "brûlée" in tokens
    assert "subject:grüße" in tokens
    assert "charset:iso-8859-1" in tokens
    assert "cte:base64" in tokens
    assert "part:text/plain" in tokens


def test_unknown_and_hostile_charsets_fall_back() -> None:
    for charset in ("x-no-such-charset", "undefined", "idna", "base64", "rot13", "../../etc", "utf-7"):
        assert isinstance(to_text(b"caf\xe9 +AGEAYgBj-", charset), str)
    message = b"Content-Type: text/plain; charset=x-unknown\n\nna\xefve r\xe9sum\xe9 text\n"
    assert "naïve" in tokenize(message)


def test_html_is_reduced_to_text() -> None:
    message = (
        b"Content-Type: text/html\n\n<html><head><style>p { color: red }</style></head><body>"
        b"<p>Buy V<!-- x -->iagra <b>now</b></p><a href='http://10.1.2.3/x'>here</a>"
        b'<img src="http://img.example.biz/a.gif">&amp; save&nbsp;today</body></html>\n'
    )
    tokens = tokenize(message)
    assert "viagra" in tokens  # the comment split the word; it comes back whole
    assert "now" in tokens
    assert "color:" not in tokens  # style sheets are not text
    assert "url:ip" in tokens
    assert "url:img.example.biz" in tokens
    assert "html:only" in tokens
    assert not any(token.startswith("<") for token in tokens)


def test_long_runs_become_skip_tokens() -> None:
    tokens = tokenize(b"Subject: x\n\nshort " + b"a" * 45 + b" end\n")
    assert "skip:a 40" in tokens
    assert not any(len(token) > 40 and not token.startswith("bi:") for token in tokens)


def test_words_split_at_white_space_and_control_characters() -> None:
    expected = ["alpha", "beta", "gamma", "delta", "bi:alpha beta", "bi:beta gamma", "bi:gamma delta"]
    assert word_tokens("alpha beta\tgamma\r\ndelta") == expected
    assert word_tokens("alpha\x01beta\x1fgamma\u2003delta") == expected  # controls, Unicode spaces
    assert word_tokens("\x00alpha\x0e\x1bbeta  gamma\xa0delta\x08") == expected
    assert word_tokens("ab alpha " + "x" * 13 + " beta gamma") == [
        "alpha",
        "skip:x 10",
        "beta",
        "gamma",
        "bi:beta gamma",
    ]


def test_tokens_are_capped_and_deterministic() -> None:
    words = b" ".join(b"w%06d" % index for index in range(100_000))
    message = b"Subject: many\n\n" + words + b"\n"
    started = time.perf_counter()
    first = tokenize(message)
    assert time.perf_counter() - started < 5.0
    assert len(first) == MAX_TOKENS
    assert first == tokenize(message)
    assert first[0] == "subject:many"  # header tokens come first and survive the cap


def test_binary_garbage_and_broken_mime_never_raise() -> None:
    samples = [
        bytes(range(256)) * 40,
        b"\x00\xff" * 5000,
        b"Content-Type: multipart/mixed; boundary=\n\n--\n--\n",
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n' * 200,
        b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n!!!not base64 at all===\n",
        b"Content-Type: message/rfc822\n\n" * 50 + b"Subject: deep\n\nbottom\n",
        b"",
        b"\n\n\n",
        b"Subject: =?utf-8?b?broken?==?x?q?\n\nbody\n",
    ]
    for sample in samples:
        assert isinstance(tokenize(sample), list)


def test_nesting_and_part_count_are_bounded() -> None:
    boundary = b"--b\nContent-Type: text/plain\n\npart\n"
    message = b'Content-Type: multipart/mixed; boundary="b"\n\n' + boundary * 1000 + b"--b--\n"
    assert len(parse_message(message).parts) == MAX_PARTS


def test_fifty_megabytes_are_read_only_up_to_the_body_limit() -> None:
    """Bounded work, shown by what is read rather than by a clock: the body past ``MAX_BODY_BYTES``
    is never decoded (``body:truncated``), the attachment's part header is still seen."""
    attachment = base64.encodebytes(b"\x00" * (37 << 20))
    message = (
        b'Subject: big\nContent-Type: multipart/mixed; boundary="z"\n\n--z\nContent-Type: text/plain\n\n'
        b"see the attachment\n--z\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: "
        b'base64\nContent-Disposition: attachment; filename="data.bin"\n\n' + attachment + b"\n--z--\n"
    )
    assert len(message) > 50_000_000
    tokens = tokenize(message)
    assert "body:truncated" in tokens and len(tokens) <= MAX_TOKENS
    assert "attachment" in tokens
    assert "part:ext:bin" in tokens


def test_a_hundred_thousand_words_give_at_most_max_tokens() -> None:
    words = " ".join(f"word{number}" for number in range(100_000)).encode()
    tokens = tokenize(b"Subject: many words\n\n" + words + b"\n")
    assert len(tokens) == MAX_TOKENS and len(set(tokens)) == len(tokens)


def test_mbox_from_line_and_header_split() -> None:
    header, body = split_header(b"From someone@example.com Mon Jan 1\nSubject: s\n\nbody\n")
    assert header == b"Subject: s"
    assert body == b"body\n"
    assert split_header(b"no header here at all") == (b"no header here at all", b"")
    assert part_text(parse_message(b"Subject: s\n\nplain body\n").parts[0]) == "plain body\n"


def test_address_and_domain_helpers() -> None:
    assert split_address('"Alice A." <Alice@Example.COM>') == ("Alice A.", "alice@example.com")
    assert split_address("bob@example.org (Bob)") == ("Bob", "bob@example.org")
    assert split_address("undisclosed") == ("undisclosed", "")
    assert registered_domain("www.example.co.uk") == "example.co.uk"
    assert registered_domain("a.b.example.com") == "example.com"


def test_the_control_characters_are_those_the_word_split_takes_and_str_split_does_not() -> None:
    every = map(chr, range(0x110000))
    controls = [char for char in every if tokenize_module._WORD_SPLIT.fullmatch(char) and not char.isspace()]
    assert list(tokenize_module._CONTROL_CHARS) == controls


_CACHES = (tokenize_module._CLIENTS, tokenize_module._BYS, tokenize_module._URLS, tokenize_module._FIELDS)


def test_tokens_are_the_same_whether_remembered_or_not() -> None:
    """The relays, URLs and field names are remembered across messages: the second reading of a
    message, from the caches, gives the very same list as the first, and a hop from a private address
    still gives nothing."""
    message = RELAYED + b"See http://www.shop.example.net/a/b and http://203.0.113.9:8080/x%41\r\n"
    for cache in _CACHES:
        cache.clear()
    first = tokenize(message)
    assert "localhost (localhost [127.0.0.1])" in tokenize_module._CLIENTS
    assert first == tokenize(message)
    assert not any("127.0.0" in token for token in first)


def test_the_caches_stay_bounded() -> None:
    cache: dict[str, int] = {}
    for index in range(3 * tokenize_module._MAX_REMEMBERED):
        assert tokenize_module._remembered(cache, f"key{index}", index) == index
        assert len(cache) <= tokenize_module._MAX_REMEMBERED
    long_key = "x" * (tokenize_module._MAX_REMEMBERED_KEY + 1)
    assert tokenize_module._remembered(cache, long_key, -1) == -1
    assert long_key not in cache
    long_client = b"Received: from " + b"x" * 1000 + b".example.com by mx.example.org\r\n"
    assert "rcvd:by:mx.example.org" in tokenize(long_client + b"Subject: s\r\n\r\nbody\r\n")
    for cache_of_tokens in _CACHES:
        assert all(len(key) <= tokenize_module._MAX_REMEMBERED_KEY for key in cache_of_tokens)


# The faster forms of the HTML reading give what the plain forms give, on markup made of the pieces that
# matter: the tag names in any case, the characters the re module takes as case-equivalent to ASCII
# letters (long s, Kelvin sign, dotted and dotless i), Sigma, whose lower case depends on its neighbours.
_CASE_PIECES = ["\u017f", "\u212a", "\u0130", "\u0131", "\u03a3", "\u00e9", "\u0663", "\u00df", "\u2028"]
_MARKUP = st.lists(
    st.sampled_from(
        [
            *("<", "</", ">", "/>", " ", "\n", "=", "'", '"', "x", "1", "-", ":", "."),
            *("p", "P", "br", "BR", "bR", "div", "DIV", "td", "th", "tr", "li", "ul", "ol", "table", "h1"),
            *("H6", "hr", "blockquote", "BLOCKQUOTE", "title", "center", "option", "head", "body", "html"),
            *("bloc\u212aquote", "t\u0131tle", "d\u0130v", "pre", "b", "a", "font", "span", "img"),
            *("href", "HREF", "src", "\u017frc", "action", "background", "BACK", "ground", "http://X.com/A"),
            *_CASE_PIECES,
        ]
    ),
    max_size=30,
).map("".join)


_PLAIN_HTML_BREAK = re.compile(
    r"</?(?:p|br|div|td|th|tr|li|ul|ol|table|h\d|hr|blockquote|title|center|option|head|body|html)\b[^>]*>",
    re.IGNORECASE,
)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(_MARKUP, st.text()))
def test_html_break_is_the_case_blind_pattern(markup: str) -> None:
    assert tokenize_module._HTML_BREAK.sub(" ", markup) == _PLAIN_HTML_BREAK.sub(" ", markup)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(_MARKUP, st.text()))
def test_html_urls_are_the_case_blind_pattern(markup: str) -> None:
    expected = [url.lower() for url in tokenize_module._HTML_URL.findall(markup)]
    assert tokenize_module._html_urls(markup) == expected


def test_case_traps_are_all_the_case_equivalents_of_the_letters() -> None:
    """The letters of the tag names and attributes, and the characters re.IGNORECASE takes for each: the
    ASCII pair but for those in the patterns' classes and in :data:`_CASE_TRAPS`. And ``İ`` is the one
    character whose lower case is longer than one character."""
    everything = "".join(chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF)
    extra = {"i": "\u0130\u0131", "k": "\u212a", "s": "\u017f"}
    for letter in "abcdefghiklmnoprstuvy":
        found = "".join(re.findall(letter, everything, re.IGNORECASE))
        assert found == "".join(sorted(letter.upper() + letter + extra.get(letter, "")))
    assert set(extra["i"] + extra["k"] + extra["s"]) <= set(tokenize_module._CASE_TRAPS)
    assert [char for char in everything if len(char.lower()) != 1] == ["\u0130"]
