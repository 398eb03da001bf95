"""The trace and result fields the server adds, and the forged ones it removes (pure functions)."""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass

from mailtoaster.message import Header, Message

_AUTHSERV_ID = re.compile(rb"\A[ \t\r\n]*(?:\([^)]*\)[ \t\r\n]*)*([^ \t\r\n;()]+)")


@dataclass(frozen=True)
class TraceInfo:
    """What a Received field says about one hop (RFC 5321 §4.4)."""

    helo: str
    ip: str
    reverse_name: str | None
    hostname: str
    protocol: str
    """``ESMTP``, ``ESMTPS``, ``ESMTPA``, ``ESMTPSA`` (RFC 3848), or ``SMTP``."""
    queue_id: str
    recipient: str | None
    """Named only for a single recipient: listing several would disclose the Bcc ones to each other."""
    timestamp: float


def received_field(trace: TraceInfo) -> bytes:
    """``Received: from HELO (RDNS [IP]) by HOST (mailtoaster) with PROTO id QID [for <R>]; DATE``."""
    remote = f"{trace.reverse_name} [{trace.ip}]" if trace.reverse_name else f"[{trace.ip}]"
    recipient = f"\r\n\tfor <{trace.recipient}>" if trace.recipient else ""
    date = email.utils.formatdate(trace.timestamp, localtime=False, usegmt=False)
    text = (
        f"Received: from {_clean(trace.helo) or 'unknown'} ({remote})\r\n"
        f"\tby {trace.hostname} (mailtoaster) with {trace.protocol} id {trace.queue_id}{recipient};\r\n"
        f"\t{date}\r\n"
    )
    return text.encode("utf-8", errors="replace")


def protocol_name(*, extended: bool, tls: bool, authenticated: bool) -> str:
    """RFC 3848's with-protocol keyword for the session."""
    if not extended:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def kept_header_section(message: Message, authserv_id: str, *, removes: tuple[str, ...] = ()) -> bytes:
    """The message's header fields without the Authentication-Results fields that claim our authserv-id,
    and without those whose lower-case names start with one of ``removes`` (``x-spam-``).

    RFC 8601 §5: such a field arriving from outside is a forgery (or a stale copy) and would be read
    as our own verdict by the user's client, so it goes before ours is added. The same holds for the
    fields a content filter of ours writes (SpamAssassin removes the X-Spam-* fields it finds).
    """
    return b"".join(
        field.raw
        for field in message.headers
        if not _is_ours(field, authserv_id) and not field.lower_name.startswith(removes)
    )


def _is_ours(field: Header, authserv_id: str) -> bool:
    return (
        field.lower_name == "authentication-results" and _authserv_id(field.raw_value) == authserv_id.lower()
    )


def _authserv_id(value: bytes) -> str:
    match = _AUTHSERV_ID.match(value)
    return match.group(1).decode("utf-8", errors="replace").lower() if match else ""


def _clean(text: str) -> str:
    """A HELO argument as it may appear in a field: printable, no parentheses or line breaks."""
    return "".join(character for character in text if character.isprintable() and character not in "()")[:255]


def fold(text: str, width: int = 78) -> bytes:
    """``Name: value`` as a field ending in CRLF, folded at spaces to stay near ``width`` columns.

    Folding puts CRLF before an existing space (RFC 5322 §2.2.3), so unfolding gives back ``text``
    exactly; a run of text with no space in it stays on one line however long.
    """
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = " " + word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", errors="replace")
