"""IMAP wire encoding (mailtoaster.imap.response): quoted strings versus literals, NIL, lists, flags,
status lines and dates, with the choices Dovecot 2.3 makes (clients see them, and the FETCH tests
compare us with Dovecot byte for byte)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailtoaster.imap import response


def decode_string(encoded: bytes) -> bytes:
    """What a client reads from a quoted string or literal (the inverse of ``response.string``)."""
    if encoded.startswith(b"{"):
        length, _, rest = encoded[1:].partition(b"}\r\n")
        assert int(length) == len(rest)
        return rest
    assert encoded.startswith(b'"') and encoded.endswith(b'"')
    body = encoded[1:-1]
    out = bytearray()
    index = 0
    while index < len(body):
        if body[index] == 0x5C:
            index += 1
            assert body[index] in b'"\\', "only quote and backslash may be escaped"
        else:
            assert body[index] not in b'"\\', "an unescaped quote or backslash ends the string early"
        out.append(body[index])
        index += 1
    return bytes(out)


# -- strings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (b"", b'""'),
        (b"hello world", b'"hello world"'),
        (b"tab\there", b'"tab\there"'),
        (b'say "hi"', b'"say \\"hi\\""'),
        (b"back\\slash", b'"back\\\\slash"'),
        (b'""""', b'"\\"\\"\\"\\""'),  # four escapes still quoted
        (b'"""""', b'{5}\r\n"""""'),  # the fifth makes a literal shorter on average (Dovecot)
        (b"caf\xc3\xa9", b"{5}\r\ncaf\xc3\xa9"),
        (b"two\r\nlines", b"{10}\r\ntwo\r\nlines"),
        (b"lf\nonly", b"{7}\r\nlf\nonly"),
        (b"nul\0", b"{4}\r\nnul\0"),
    ],
)
def test_string_is_quoted_when_safe_else_a_literal(value: bytes, encoded: bytes) -> None:
    assert response.string(value) == encoded
    assert decode_string(encoded) == value


@given(st.binary(max_size=40))
def test_any_bytes_survive_string_encoding(value: bytes) -> None:
    encoded = response.string(value)
    assert decode_string(encoded) == value
    if encoded.startswith(b'"'):
        assert b"\r" not in encoded and b"\n" not in encoded and encoded.isascii()


def test_literal_counts_bytes_not_characters() -> None:
    assert response.literal("é".encode()) == b"{2}\r\n\xc3\xa9"
    assert response.literal(b"") == b"{0}\r\n"


def test_nstring_writes_nil_for_none_and_a_string_otherwise() -> None:
    assert response.nstring(None) == b"NIL"
    assert response.nstring(b"NIL") == b'"NIL"'
    assert response.nstring(b"") == b'""'


def test_nstring_nolf_unfolds_without_gluing_words() -> None:
    """Dovecot's ENVELOPE date and message ids: a line break is dropped before white space and
    becomes a space before anything else; a value without line breaks is untouched."""
    assert response.nstring_nolf(b"Thu, 15 Feb 2007\n 01:02:03 +0200") == b'"Thu, 15 Feb 2007 01:02:03 +0200"'
    assert response.nstring_nolf(b"<a@b>\n\t<c@d>") == b'"<a@b>\t<c@d>"'
    assert response.nstring_nolf(b"a\r\nb") == b'"a b"'
    assert response.nstring_nolf(b"end\n") == b'"end"'
    assert response.nstring_nolf(None) == b"NIL"
    assert response.nstring_nolf(b"caf\xc3\xa9\n x") == b"{7}\r\ncaf\xc3\xa9 x"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (b"", b'""'),
        (b"plain words", b'"plain words"'),
        (b"  padded  ", b"{6}\r\npadded"),
        (b"a  b\tc", b"{5}\r\na b c"),
        (b"folded\n line", b"{11}\r\nfolded line"),
        (b'say "hi"', b'{8}\r\nsay "hi"'),  # changed nothing, but Dovecot never escapes here
        (b"back\\slash", b"{10}\r\nback\\slash"),
        (b"caf\xc3\xa9", b"{5}\r\ncaf\xc3\xa9"),
        (b"nul\0byte", b"{8}\r\nnul\x80byte"),
        (b" \t ", b'""'),
    ],
)
def test_string_for_humans_cleans_display_text_like_dovecot(value: bytes, encoded: bytes) -> None:
    assert response.string_for_humans(value) == encoded


def test_astring_is_an_atom_only_when_every_byte_allows_it() -> None:
    assert response.astring(b"INBOX") == b"INBOX"
    assert response.astring(b"Sent]Items") == b"Sent]Items"  # ] is an ASTRING-CHAR
    assert response.astring(b"two words") == b'"two words"'
    assert response.astring(b"nil") == b'"nil"'  # never confused with NIL
    assert response.astring(b"") == b'""'
    assert response.astring(b"a(b") == b'"a(b"'
    assert response.astring("Entwürfe".encode()) == "{9}\r\nEntwürfe".encode()


def test_atom_refuses_what_would_corrupt_a_response() -> None:
    assert response.atom("RFC822.SIZE") == b"RFC822.SIZE"
    for bad in ("", "two words", "paren(", 'quote"', "brace{", "star*", "é", "bracket]"):
        with pytest.raises(ValueError, match="not an IMAP atom"):
            response.atom(bad)


# -- lists, flags, status lines ------------------------------------------------------------------


def test_paren_list_joins_encoded_items() -> None:
    assert response.paren_list([]) == b"()"
    assert response.paren_list([b"NIL", b'"a"', b"(1 2)"]) == b'(NIL "a" (1 2))'


def test_flag_list_keeps_system_flag_backslashes_and_keywords() -> None:
    assert (
        response.flag_list(["\\Seen", "\\Answered", "$Junk", "NonJunk"])
        == b"(\\Seen \\Answered $Junk NonJunk)"
    )
    assert response.flag_list([]) == b"()"
    with pytest.raises(ValueError, match="not an IMAP atom"):
        response.flag_list(["bad flag"])


def test_untagged_and_tagged_lines() -> None:
    assert response.untagged("3 EXISTS") == b"* 3 EXISTS\r\n"
    assert response.untagged(b"1 FETCH (BODY[] {1}\r\nx)") == b"* 1 FETCH (BODY[] {1}\r\nx)\r\n"
    assert response.tagged("a1", "OK", "Fetch completed.") == b"a1 OK Fetch completed.\r\n"
    assert (
        response.tagged(b"a2", "NO", "No such message.", code="NONEXISTENT")
        == b"a2 NO [NONEXISTENT] No such message.\r\n"
    )
    with pytest.raises(ValueError, match="not a tagged status"):
        response.tagged("a3", "MAYBE", "?")


# -- dates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 3, 5, 9, 7, 1, tzinfo=UTC), b"05-Mar-2024 09:07:01 +0000"),
        (
            datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=2))),
            b"31-Dec-1999 23:59:59 +0200",
        ),
        (
            datetime(2007, 2, 15, 1, 2, 3, tzinfo=timezone(-timedelta(hours=3, minutes=30))),
            b"15-Feb-2007 01:02:03 -0330",
        ),
        (datetime(2020, 1, 1, 0, 0, 0), b"01-Jan-2020 00:00:00 +0000"),  # naive: UTC
    ],
)
def test_date_time_is_rfc3501_form_with_two_digit_day(moment: datetime, text: bytes) -> None:
    assert response.date_time_text(moment) == text
    assert response.date_time(moment) == b'"' + text + b'"'


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)))
def test_date_time_round_trips_through_strptime(moment: datetime) -> None:
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    parsed = datetime.strptime(response.date_time_text(moment).decode(), "%d-%b-%Y %H:%M:%S %z")
    assert parsed == moment
