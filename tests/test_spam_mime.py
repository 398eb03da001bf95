"""The MIME reader's hand-made shortcuts give what the plain regular expressions they replace give."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest

from mailtoaster.spam import mime
from mailtoaster.spam.mime import Part, parse_fields, parse_message, part_text, split_header

# The definitions the shortcuts replace, kept here as the reference.
BLANK_LINE = re.compile(rb"\r?\n\r?\n")
FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:[ \t]*(.*(?:\n[ \t].*)*)", re.MULTILINE)
FOLD = re.compile(r"\s*\n[ \t]+")


def reference_split(data: bytes) -> tuple[bytes, bytes]:
    if data.startswith(b"From "):
        newline = data.find(b"\n")
        data = b"" if newline < 0 else data[newline + 1 :]
    if data.startswith((b"\n", b"\r\n")):
        return b"", data[1 if data[0] == 10 else 2 :]
    blank = BLANK_LINE.search(data, 0, mime.MAX_HEADER_BYTES)
    if blank is None:
        return data[: mime.MAX_HEADER_BYTES], data[mime.MAX_HEADER_BYTES :]
    return data[: blank.start()], data[blank.end() :]


def reference_fields(section: bytes) -> list[tuple[str, str]]:
    text = section[: mime.MAX_HEADER_BYTES].decode("utf-8", "replace").replace("\r", "")
    return [(match[1], FOLD.sub(" ", match[2]).strip()) for match in FIELD.finditer(text)]


PIECES = [b"\r", b"\n", b" ", b"\t", b"a", b":", b"\x0c", "\u2028".encode(), b"\xff", b"From "]


def all_strings(length: int) -> list[bytes]:
    """Every string of up to `length` pieces: line ends, blanks, Unicode spaces, bad UTF-8, colons."""
    return [b"".join(combo) for n in range(length + 1) for combo in itertools.product(PIECES, repeat=n)]


def test_split_header_finds_the_same_blank_line_as_the_regex() -> None:
    for data in all_strings(5):
        assert split_header(data) == reference_split(data), data


def test_split_header_line_ends_and_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert split_header(b"A: b\r\n\r\nbody") == (b"A: b", b"body")
    assert split_header(b"A: b\n\r\nbody") == (b"A: b", b"body")
    assert split_header(b"A: b\r\n\nbody") == (b"A: b", b"body")
    assert split_header(b"A: b\r\r\n\nbody") == (b"A: b\r", b"body")  # only one CR belongs to the line end
    assert split_header(b"From x@y Mon\r\n\r\nbody") == (b"", b"body")
    assert split_header(b"From x@y Mon") == (b"", b"")
    monkeypatch.setattr(mime, "MAX_HEADER_BYTES", 6)
    # The blank line must end within the limit, which counts from after the From line.
    assert split_header(b"From x\nA: b\n\nbody") == (b"A: b", b"body")
    assert split_header(b"From x\nA: bc\n\nbody") == (b"A: bc\n", b"\nbody")
    for data in all_strings(4):
        assert split_header(data + b"A: b\r\n\r\n") == reference_split(data + b"A: b\r\n\r\n"), data


def test_parse_fields_unfolds_as_the_regex_does() -> None:
    for data in all_strings(4):
        assert parse_fields(b"X: a" + data) == reference_fields(b"X: a" + data), data
        assert parse_fields(data) == reference_fields(data), data


def test_folded_values() -> None:
    section = (
        b"Received: from a\r\n\tby b  \r\n   \r\n  with c\r\n"
        b"Subject: one\x0c\n \x0ctwo\n"
        b"Empty:\n \n\t\n"
        b"not a field\n"
        b" continuing no field\n"
        b"To : x\n"
    )
    assert parse_fields(section) == [
        ("Received", "from a by b with c"),
        ("Subject", "one \x0ctwo"),
        ("Empty", ""),
        ("To", "x"),
    ]


def test_content_fields_are_found_in_any_case_and_the_first_one_wins() -> None:
    message = parse_message(
        b"cc: someone\nCONTENT-TYPE: Text/HTML; Charset=UTF-8\nContent-Type: text/plain\n"
        b"content-transfer-encoding: BASE64\ncontent-disposition: inline; filename=a.html\n\nPGI+aGk8L2I+\n"
    )
    (part,) = message.parts
    assert (part.content_type, part.charset, part.encoding) == ("text/html", "utf-8", "base64")
    assert part.filename == "a.html"
    assert part_text(part) == "<b>hi</b>"


def test_part_text_is_decoded_once_and_kept() -> None:
    part = Part("text/plain", "latin-1", "", "", b"caf\xe9")
    assert "text" not in vars(part)
    assert part_text(part) == part.text == "caf\xe9"
    assert vars(part)["text"] == "caf\xe9"
    assert [field.name for field in dataclasses.fields(Part)] == [
        "content_type",
        "charset",
        "encoding",
        "filename",
        "payload",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        part.text = "other"
    assert part == Part("text/plain", "latin-1", "", "", b"caf\xe9")
    assert part_text(Part("image/png", "", "", "", b"\x89PNG")) == ""
