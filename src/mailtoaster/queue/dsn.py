"""Non-delivery reports: RFC 3464 delivery status notifications in an RFC 6522 multipart/report.

The report has three parts, as Postfix sends them: a human-readable explanation, the
``message/delivery-status`` fields (per message, then per failed recipient), and the original
message's header section as ``text/rfc822-headers`` (the body is not returned: it may be large, and
the headers are what a sender needs to recognise the message). It comes from
``MAILER-DAEMON@<reporting MTA>`` and carries ``Auto-Submitted: auto-replied`` (RFC 3834) so that
auto-responders stay quiet. It must be sent with the null reverse-path ``<>``, and a message that
itself had the null sender never gets one: a bounce is never bounced (RFC 5321 §4.5.5).
"""

from __future__ import annotations

import re
import secrets
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import BinaryIO, NamedTuple

from mailtoaster.queue.spool import QueueEntry

HEADER_SECTION_LIMIT = 64 * 1024
"""At most this much of the original header section is returned (cut at a line end)."""
_FOLD_WIDTH = 78
_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")
_LONE_LF = re.compile(rb"(?<!\r)\n")
_HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")


class DsnError(ValueError):
    """A report that must not or cannot be built (null sender, nothing failed, bad MTA name)."""


class FailedRecipient(NamedTuple):
    recipient: str
    status: str
    """RFC 3463 status, e.g. ``5.1.1`` (or the last ``4.x.x`` of a message that expired)."""
    diagnostic: str
    """RFC 3464 Diagnostic-Code, e.g. ``smtp; 550 5.1.1 no such user``; empty if none."""
    remote_mta: str = ""
    """Host name of the server that gave the diagnostic; empty if none did."""
    note: str = ""
    """Extra words for the human-readable part, e.g. why a temporary failure became final."""


def _date(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(timestamp, tz=UTC))


def _printable(text: str) -> str:
    """One line of printable ASCII: the delivery-status part is 7-bit text."""
    return _NOT_PRINTABLE_ASCII.sub("?", " ".join(text.split()))


def _field(name: str, value: str) -> str:
    """``Name: value``, folded at spaces so lines stay near 78 characters."""
    words = value.split(" ")
    lines = [f"{name}: {words[0]}"]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) > _FOLD_WIDTH:
            lines.append(f" {word}")
        else:
            lines[-1] += f" {word}"
    return "\r\n".join(lines)


def _recipient_fields(failure: FailedRecipient, now: float) -> list[str]:
    fields = [
        _field("Final-Recipient", f"rfc822; {failure.recipient}"),
        "Action: failed",
        _field("Status", _printable(failure.status)),
    ]
    if failure.remote_mta:
        fields.append(_field("Remote-MTA", f"dns; {_printable(failure.remote_mta)}"))
    if failure.diagnostic:
        fields.append(_field("Diagnostic-Code", _printable(failure.diagnostic)))
    fields.append(_field("Last-Attempt-Date", _date(now)))
    return fields


def _message_fields(entry: QueueEntry, reporting_mta: str) -> list[str]:
    return [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Mailtoaster-Queue-ID: {entry.id}",
        _field("X-Mailtoaster-Sender", f"rfc822; {entry.sender}"),
        _field("Arrival-Date", _date(entry.created)),
    ]


def _delivery_status(
    entry: QueueEntry, failed: Sequence[FailedRecipient], reporting_mta: str, now: float
) -> str:
    blocks = ["\r\n".join(_message_fields(entry, reporting_mta))]
    blocks.extend("\r\n".join(_recipient_fields(failure, now)) for failure in failed)
    return "\r\n\r\n".join(blocks) + "\r\n"


def _explanation_line(failure: FailedRecipient) -> str:
    kind, _, reply = failure.diagnostic.partition(";")
    reply = _printable(reply)
    if kind.strip().lower() == "smtp" and failure.remote_mta:
        reason = f"host {_printable(failure.remote_mta)} said: {reply}"
    else:
        reason = reply or f"delivery failed (status {failure.status})"
    if failure.note:
        reason = f"{_printable(failure.note)}; {reason}"
    line = f"<{failure.recipient}>: {reason}"
    wrapped = textwrap.wrap(
        line, _FOLD_WIDTH, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False
    )
    return "\r\n".join(wrapped)


def _explanation(failed: Sequence[FailedRecipient], reporting_mta: str) -> str:
    lines = [
        f"This is the mail system at host {reporting_mta}.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. Its headers are attached below.",
        "",
        "For further assistance, please send mail to <postmaster>.",
        "",
        "If you do so, please include this problem report.",
        "",
        *(_explanation_line(failure) for failure in failed),
    ]
    return "\r\n".join(lines) + "\r\n"


def _normalise_headers(original_headers: bytes) -> bytes:
    headers = _LONE_LF.sub(b"\r\n", original_headers).rstrip(b"\r\n")
    return headers + b"\r\n" if headers else b""


def _part(headers: Sequence[str], body: bytes) -> bytes:
    lines = list(headers)
    if not body.isascii():
        lines.append("Content-Transfer-Encoding: 8bit")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def _boundary(entry: QueueEntry, reporting_mta: str, parts: Sequence[bytes]) -> str:
    while True:
        boundary = f"{entry.id}.{secrets.token_hex(8)}/{reporting_mta}"
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary


def build_dsn(
    entry: QueueEntry,
    failed: Sequence[FailedRecipient | tuple[str, str, str, str]],
    *,
    reporting_mta: str,
    original_headers: bytes,
    now: float,
) -> bytes:
    """The complete bounce message (CRLF line ends) telling ``entry.sender`` which recipients failed.

    ``failed`` holds :class:`FailedRecipient` items or plain ``(recipient, status, diagnostic,
    remote MTA)`` tuples. Raises :class:`DsnError` for the null sender, for an empty ``failed`` and
    for a ``reporting_mta`` that is not a host name.
    """
    if entry.sender == "":
        raise DsnError(f"message {entry.id} has the null sender: a bounce is never bounced")
    if not failed:
        raise DsnError("a delivery status notification needs at least one failed recipient")
    if not _HOST_NAME.match(reporting_mta):
        raise DsnError(f"reporting MTA {reporting_mta!r} is not a host name")
    failures = [FailedRecipient(*item) for item in failed]
    parts = [
        _part(
            ["Content-Description: Notification", "Content-Type: text/plain; charset=us-ascii"],
            _explanation(failures, reporting_mta).encode("ascii"),
        ),
        _part(
            ["Content-Description: Delivery report", "Content-Type: message/delivery-status"],
            _delivery_status(entry, failures, reporting_mta, now).encode("utf-8"),
        ),
        _part(
            ["Content-Description: Undelivered Message Headers", "Content-Type: text/rfc822-headers"],
            _normalise_headers(original_headers),
        ),
    ]
    boundary = _boundary(entry, reporting_mta, parts)
    header = [
        f"From: MAILER-DAEMON@{reporting_mta} (Mail Delivery System)",
        _field("To", f"<{entry.sender}>"),
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {_date(now)}",
        f"Message-ID: <{int(now)}.{entry.id}.{secrets.token_hex(4)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f' boundary="{boundary}"',
    ]
    if not all(part.isascii() for part in parts):
        header.append("Content-Transfer-Encoding: 8bit")
    delimiter = f"--{boundary}\r\n".encode("ascii")
    body = b"This is a MIME-encapsulated message.\r\n\r\n"
    body += b"".join(delimiter + part + b"\r\n" for part in parts)
    body += f"--{boundary}--\r\n".encode("ascii")
    return "\r\n".join(header).encode("utf-8") + b"\r\n\r\n" + body


def read_header_section(stream: BinaryIO, limit: int = HEADER_SECTION_LIMIT) -> bytes:
    """The header section at the start of ``stream`` (without the empty line ending it), read in
    chunks and at most ``limit`` bytes of it, cut after the last complete line."""
    buffer = b""
    while len(buffer) <= limit:
        if buffer.startswith((b"\r\n", b"\n")):
            return b""  # no header section at all
        end = _END_OF_HEADERS.search(buffer)
        if end:
            return buffer[: end.start()]
        chunk = stream.read(8192)
        if not chunk:
            return buffer
        buffer += chunk
    cut = buffer.rfind(b"\n", 0, limit)
    return buffer[: cut + 1] if cut >= 0 else b""
