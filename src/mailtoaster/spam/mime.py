"""A small, bounded MIME reader for the tokenizer.

The tokenizer needs the header fields, the leaf parts and their text; it never needs to re-create the
message, so this reads far less than :mod:`email` does and about ten times faster, which is most of what
scoring a message costs. Every step has a limit (octets looked at, parts, nesting depth, decoded
octets, text characters), so a 50 MB message, a bomb of nested multiparts or binary garbage cost
bounded time and memory, and nothing here raises on any input.
"""

from __future__ import annotations

import binascii
import codecs
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache

MAX_HEADER_BYTES = 64 * 1024
"""Header section octets read (of the message and of each part); fields past it are ignored."""
MAX_BODY_BYTES = 512 * 1024
"""Body octets looked at: spam that matters is small, and SpamAssassin's ``spamc`` stops at 500 KB too."""
MAX_PART_BYTES = 256 * 1024
"""Encoded octets of one part that are decoded."""
MAX_TEXT_CHARS = 200_000
"""Characters of text kept over all parts of a message."""
MAX_PARTS = 64
MAX_DEPTH = 8

_BLANK_LINE = re.compile(rb"\n\r?\n")
"""An empty line, found by its first LF (a CR before it is added by hand): ``\\r?\\n\\r?\\n`` finds the same,
but with no literal to skip to, the regex engine tries it at every octet, ten times slower."""
_FIELD = re.compile(r"\n([!-9;-~]+)[ \t]*:[ \t]*(.*(?:\n[ \t].*)*)")
"""A field starting a line, continuation lines included. Anchored on a literal newline (the text gets one
put in front) rather than ``^`` with MULTILINE: the regex engine then skips to the next newline instead of
trying every position, the same matches in less time."""
_PARAM = re.compile(r';\s*([A-Za-z0-9_.-]+)\*?(?:\d\*?)?\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')
_NOT_BASE64 = bytes(
    set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
)
_CHARSET_NAME = re.compile(r"[a-z0-9_.:-]{1,40}")


@dataclass(frozen=True)
class Part:
    """One leaf of the MIME tree, its content still transfer-encoded (decoding is :func:`part_text`'s)."""

    content_type: str
    """Lower case ``type/subtype``; ``text/plain`` when the part does not say."""
    charset: str
    """Lower case, ``""`` when not given."""
    encoding: str
    """The Content-Transfer-Encoding, lower case, ``""`` when not given."""
    filename: str
    payload: bytes

    @cached_property
    def text(self) -> str:
        """:func:`part_text`: decoded when first read, then kept."""
        return _decoded_text(self)


@dataclass(frozen=True)
class ParsedMessage:
    headers: list[tuple[str, str]]
    """The top-level fields in order: (name as written, unfolded value)."""
    parts: list[Part]
    truncated: bool
    """The body was longer than :data:`MAX_BODY_BYTES` and only its start was read."""


def split_header(data: bytes) -> tuple[bytes, bytes]:
    """(header section, body) of a message or part; an mbox ``From `` line on top is dropped."""
    start = 0
    if data.startswith(b"From "):
        newline = data.find(b"\n")
        if newline < 0:
            return b"", b""
        start = newline + 1  # an offset, not a slice: no copy of the whole message
    if data.startswith(b"\n", start):
        return b"", data[start + 1 :]
    if data.startswith(b"\r\n", start):
        return b"", data[start + 2 :]
    end = start + MAX_HEADER_BYTES
    blank = _BLANK_LINE.search(data, start, end)
    if blank is None:
        return data[start:end], data[end:]
    blank_start = blank.start()
    if blank_start > start and data[blank_start - 1] == 13:  # the CR of "\r\n\r?\n" is part of it too
        blank_start -= 1
    return data[start:blank_start], data[blank.end() :]


def parse_fields(section: bytes) -> list[tuple[str, str]]:
    """The fields of a header section: (name, value unfolded and stripped). Lines that are not fields
    are skipped; non-UTF-8 octets become U+FFFD."""
    text = "\n" + section[:MAX_HEADER_BYTES].decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r", "")
    return [
        (name, _unfold(value) if "\n" in value else value.strip()) for name, value in _FIELD.findall(text)
    ]


def _unfold(value: str) -> str:
    """A folded value on one line, stripped: what ``re.sub(r"\\s*\\n[ \\t]+", " ", value).strip()`` gives,
    in a third of the time. :data:`_FIELD` starts every line after the first with a space or tab, so a
    fold is the line's trailing white space (any Unicode space: ``\\s`` and ``str.rstrip`` agree), the
    newline, the next line's leading spaces and tabs, and any all-white lines in between."""
    first, *rest = value.split("\n")
    kept = [line.lstrip(" \t").rstrip() for line in rest if not line.isspace()]
    return " ".join([first.rstrip(), *kept]).strip()


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``text/plain; charset="x"`` -> (``text/plain``, {"charset": "x"}); names lower case."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    if rest:
        for match in _PARAM.finditer(";" + rest):
            raw = match.group(2)
            if raw.startswith('"'):
                raw = raw[1:-1].replace('\\"', '"')
            params.setdefault(match.group(1).lower(), raw)
    return main.strip().lower(), params


def parse_message(data: bytes) -> ParsedMessage:
    """The header fields and leaf parts of a message, within the limits above."""
    section, body = split_header(data)
    headers = parse_fields(section)
    truncated = len(body) > MAX_BODY_BYTES
    parts: list[Part] = []
    _walk(headers, body[:MAX_BODY_BYTES], 0, parts)
    return ParsedMessage(headers, parts, truncated)


def _content_fields(headers: list[tuple[str, str]]) -> dict[str, str]:
    """The first value of each field whose name starts with C, by lower-case name: one pass finds the
    three Content-* fields :func:`_walk` reads, where a look-up per field lower-cased every name three
    times (a tenth of the parse)."""
    fields: dict[str, str] = {}
    for name, value in headers:
        if name[0] in "cC" and name.lower() not in fields:
            fields[name.lower()] = value
    return fields


def _walk(headers: list[tuple[str, str]], body: bytes, depth: int, parts: list[Part]) -> None:
    fields = _content_fields(headers)
    content_type, params = header_params(fields.get("content-type", ""))
    if "/" not in content_type:
        content_type = "text/plain"
    if depth < MAX_DEPTH:
        if content_type.startswith("multipart/") and params.get("boundary"):
            before = len(parts)
            for chunk in _multipart_chunks(body, params["boundary"]):
                if len(parts) >= MAX_PARTS:
                    return
                section, sub_body = split_header(chunk)
                _walk(parse_fields(section), sub_body, depth + 1, parts)
            if len(parts) > before:
                return
            content_type = "text/plain"  # no part found: broken MIME, read it as text
        elif content_type == "message/rfc822":
            section, sub_body = split_header(body)
            _walk(parse_fields(section), sub_body, depth + 1, parts)
            return
    if len(parts) >= MAX_PARTS:
        return
    disposition = header_params(fields.get("content-disposition", ""))[1]
    filename = disposition.get("filename") or params.get("name") or ""
    encoding = fields.get("content-transfer-encoding", "").lower()
    charset = params.get("charset", "").strip().lower()
    parts.append(Part(content_type, charset, encoding, filename, body[:MAX_PART_BYTES]))


def _multipart_chunks(body: bytes, boundary: str) -> list[bytes]:
    """The bodies between ``--boundary`` lines (preamble and epilogue left out). Lenient: a delimiter
    is found anywhere, not only at a line start, as mail readers do."""
    delimiter = b"--" + boundary.encode("utf-8", "replace")
    pieces = body.split(delimiter)
    chunks = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        newline = piece.find(b"\n")
        if newline < 0:
            continue
        chunk = piece[newline + 1 :]
        if chunk.endswith(b"\n"):
            chunk = chunk[:-2] if chunk.endswith(b"\r\n") else chunk[:-1]
        chunks.append(chunk)
    return chunks


def decode_payload(part: Part) -> bytes:
    """The part's octets with the transfer encoding undone (base64 leniently: stray characters and
    bad padding are ignored, as mail readers do)."""
    payload = part.payload
    if part.encoding == "base64":
        cleaned = payload.translate(None, _NOT_BASE64)  # padding too: it is put back below
        extra = len(cleaned) % 4
        cleaned = cleaned[:-1] if extra == 1 else cleaned + b"=" * ((4 - extra) % 4)
        try:
            return binascii.a2b_base64(cleaned)
        except (binascii.Error, ValueError):
            return b""
    if part.encoding == "quoted-printable":
        return binascii.a2b_qp(payload)
    return payload


@lru_cache(maxsize=256)
def _codec(charset: str) -> str | None:
    """A text codec's canonical name for a charset label; None for unknown or unsafe labels."""
    if not _CHARSET_NAME.fullmatch(charset):
        return None
    try:
        info = codecs.lookup(charset)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in ("idna", "undefined", "punycode"):
        return None
    return info.name


def to_text(data: bytes, charset: str) -> str:
    """Decode with the declared charset, else UTF-8, else Latin-1 (which never fails): the words are
    what matter, a wrong guess costs only some of them."""
    codec = _codec(charset) if charset else None
    if codec is not None:
        try:
            return data.decode(codec, "replace")
        except (UnicodeError, LookupError, ValueError, TypeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def part_text(part: Part) -> str:
    """The decoded text of a ``text/*`` part (empty for any other). Decoded once per part: the
    tokenizer and the body rules both read it."""
    return part.text


def _decoded_text(part: Part) -> str:
    if not part.content_type.startswith("text/"):
        return ""
    return to_text(decode_payload(part), part.charset)
