"""The reflector's answer as a message: pure functions from the report text and the original message
to the octets that are signed and sent.

The body is one ``text/plain`` part, as the classic reflectors send it, so that any mail reader shows
it and ``mailtoaster selftest`` can read it back: an introduction saying how the message was checked,
the summary and the details (the text ``mailtoaster verify`` prints, from
:func:`mailtoaster.verify.render_text`), then the original message's header section. Everything that
came from the original message or from DNS is made printable first: a sender must not be able to
put control characters, or fields of its own, into our answer.

The answer carries ``Auto-Submitted: auto-replied`` (RFC 3834 §5) and ``In-Reply-To``/``References``
so that it threads under the original, and goes out with the null reverse-path (RFC 3834 §3.3), so
that nothing ever answers it back.
"""

from __future__ import annotations

import quopri
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from email.header import Header as EncodedHeader
from email.utils import format_datetime

from mailtoaster.message import Message
from mailtoaster.pipeline.headers import fold

SUMMARY_TITLE = "Summary of Results"
RULE = "=" * 58
"""The line under the summary's title, as wide as in the classic reports."""
HEADERS_TITLE = "Original message headers"
SUBJECT_PREFIX = "Auth report: "
HEADER_SECTION_LIMIT = 64 * 1024
"""At most this much of the original header section is shown (cut at a line end)."""
SUBJECT_LIMIT = 200
"""Characters of the original subject kept in ours."""
REFERENCES_KEPT = 10
"""Message-IDs of the original's References kept in ours (RFC 5322 §3.6.4 allows trimming)."""
MAX_BODY_LINE = 998
_MESSAGE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")
"""A msg-id as ``<left@right>`` in printable ASCII without ``<``/``>``."""
_UNPRINTABLE = re.compile(r"[^\t\x20-\x7e\u00a0-\U0010ffff]|[\u2028\u2029\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with every control character (tab aside) and lone surrogate as ``?``."""
    return _UNPRINTABLE.sub("?", text)


def report_body(intro: Sequence[str], report_text: str, original_headers: bytes) -> str:
    """The body's text (``\\n`` line ends): introduction, summary title, report, original headers."""
    lines = [*intro, "", SUMMARY_TITLE, RULE, *report_text.rstrip("\n").split("\n")]
    lines += ["", "", HEADERS_TITLE, "=" * len(HEADERS_TITLE), *header_lines(original_headers)]
    return "\n".join(printable(line) for line in lines) + "\n"


def header_lines(header_section: bytes, limit: int = HEADER_SECTION_LIMIT) -> list[str]:
    """The header section as text lines, at most ``limit`` octets of it, cut after a whole line."""
    if len(header_section) > limit:
        cut = header_section.rfind(b"\n", 0, limit)
        header_section = header_section[: cut + 1] + b"[... cut at 64 KB]\n"
    text = header_section.decode("utf-8", errors="replace")
    return [line.rstrip("\r") for line in text.rstrip("\r\n").split("\n")] if text.strip() else []


def build_reply(
    original: Message, *, body: str, reflector: str, target: str, hostname: str, now: float
) -> bytes:
    """The complete answer (CRLF line ends): from ``reflector`` to ``target`` about ``original``."""
    fields = [
        fold(f"From: Authentication reflector <{reflector}>"),
        fold(f"To: <{target}>"),
        _subject_field(original),
        fold(f"Date: {format_datetime(datetime.fromtimestamp(now, tz=UTC))}"),
        fold(f"Message-ID: <{int(now)}.{secrets.token_hex(8)}.reflector@{hostname}>"),
        *_thread_fields(original),
        b"Auto-Submitted: auto-replied\r\n",
        b"MIME-Version: 1.0\r\n",
        b"Content-Type: text/plain; charset=utf-8\r\n",
    ]
    encoding, encoded = _encoded_body(body)
    fields.append(f"Content-Transfer-Encoding: {encoding}\r\n".encode("ascii"))
    return b"".join(fields) + b"\r\n" + encoded


def _subject_field(original: Message) -> bytes:
    found = original.get("Subject")
    subject = " ".join(printable(found.value).split()) if found is not None else ""
    if len(subject) > SUBJECT_LIMIT:
        subject = subject[:SUBJECT_LIMIT] + "..."
    text = (SUBJECT_PREFIX + subject) if subject else SUBJECT_PREFIX.rstrip(": ")
    if text.isascii():
        return fold(f"Subject: {text}")
    encoded = EncodedHeader(text, "utf-8", header_name="Subject").encode(linesep="\r\n")
    return f"Subject: {encoded}\r\n".encode("ascii")


def _thread_fields(original: Message) -> list[bytes]:
    """``In-Reply-To`` and ``References`` (RFC 5322 §3.6.4), when the original has a Message-ID."""
    message_id = message_id_of(original)
    if message_id is None:
        return []
    references_field = original.get("References")
    earlier = _MESSAGE_ID.findall(references_field.value) if references_field is not None else []
    references = [*earlier[-REFERENCES_KEPT:], message_id]
    return [fold(f"In-Reply-To: {message_id}"), fold(f"References: {' '.join(references)}")]


def _encoded_body(body: str) -> tuple[str, bytes]:
    """``7bit`` when the text is ASCII in short lines, else quoted-printable; CRLF line ends."""
    lines = body.split("\n")
    if body.isascii() and all(len(line) <= MAX_BODY_LINE for line in lines):
        return "7bit", body.replace("\n", "\r\n").encode("ascii")
    encoded = quopri.encodestring(body.encode("utf-8"), quotetabs=False)
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


def message_id_of(original: Message) -> str | None:
    """The original's Message-ID (``<left@right>``), for logs and for matching the answer to it."""
    found = original.get("Message-ID")
    match = _MESSAGE_ID.search(found.value) if found is not None else None
    return match.group(0) if match else None
