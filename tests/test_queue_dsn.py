"""RFC 3464 bounces (``mailtoaster.queue.dsn``), checked by parsing them with Python's ``email``."""

from __future__ import annotations

import email
import email.policy
import io
from email.message import Message
from email.utils import parsedate_to_datetime

import pytest

from mailtoaster.queue import DsnError, FailedRecipient, QueueEntry, Recipient, build_dsn, read_header_section

ARRIVAL = 1_700_000_000.0
NOW = ARRIVAL + 3600
ORIGINAL_HEADERS = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.net, carol@example.com\r\n"
    b"Subject: quarterly report\r\nMessage-ID: <original-1@example.org>\r\n"
)


def entry(sender: str = "alice@example.org") -> QueueEntry:
    return QueueEntry(
        id="0614a3b2c1d00-7f3a9c21e4",
        sender=sender,
        recipients=(Recipient("bob@example.net"), Recipient("carol@example.com")),
        created=ARRIVAL,
        next_attempt=ARRIVAL,
        size=1234,
    )


FAILED: list[FailedRecipient | tuple[str, str, str, str]] = [
    FailedRecipient(
        "bob@example.net", "5.1.1", "smtp; 550 5.1.1 <bob@example.net>: no such user", "mx.example.net"
    ),
    ("carol@example.com", "5.1.10", "x-mailtoaster; domain example.com does not accept mail (null MX)", ""),
]


def unfold(value: str) -> str:
    return " ".join(value.split())


def parse(dsn: bytes) -> Message:
    return email.message_from_bytes(dsn, policy=email.policy.compat32)


def parts(message: Message) -> list[Message]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    assert all(isinstance(part, Message) for part in payload)
    return payload  # type: ignore[return-value]


def part_bytes(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def text_part(dsn: bytes) -> str:
    return unfold(part_bytes(parts(parse(dsn))[0]).decode("ascii"))


def status_blocks(dsn: bytes) -> list[Message]:
    """The per-message block, then one block per recipient, of the message/delivery-status part."""
    return parts(parts(parse(dsn))[1])


def build(**overrides: object) -> bytes:
    arguments: dict[str, object] = {
        "reporting_mta": "mail.example.org",
        "original_headers": ORIGINAL_HEADERS,
        "now": NOW,
    }
    arguments.update(overrides)
    return build_dsn(entry(), FAILED, **arguments)  # type: ignore[arg-type]


def test_top_level_headers() -> None:
    dsn = build()
    message = parse(dsn)
    assert message["From"] == "MAILER-DAEMON@mail.example.org (Mail Delivery System)"
    assert message["To"] == "<alice@example.org>"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert parsedate_to_datetime(message["Date"]).timestamp() == NOW
    message_id = message["Message-ID"]
    assert message_id.startswith("<") and message_id.endswith("@mail.example.org>")
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert not message.defects
    assert b"\n" not in dsn.replace(b"\r\n", b"")  # CRLF line ends only
    assert max(len(line) for line in dsn.split(b"\r\n")) <= 998
    assert parse(build())["Message-ID"] != message_id


def test_three_parts_in_order() -> None:
    assert [part.get_content_type() for part in parts(parse(build()))] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]


def test_human_readable_part_names_each_failure() -> None:
    text = text_part(build())
    assert "This is the mail system at host mail.example.org." in text
    assert "<bob@example.net>: host mx.example.net said: 550 5.1.1 <bob@example.net>: no such user" in text
    assert "<carol@example.com>: domain example.com does not accept mail (null MX)" in text


def test_delivery_status_fields() -> None:
    per_message, bob, carol = status_blocks(build())
    assert per_message["Reporting-MTA"] == "dns; mail.example.org"
    assert parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() == ARRIVAL
    assert per_message["X-Mailtoaster-Queue-ID"] == "0614a3b2c1d00-7f3a9c21e4"

    assert bob["Final-Recipient"] == "rfc822; bob@example.net"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mx.example.net"
    assert unfold(bob["Diagnostic-Code"]) == "smtp; 550 5.1.1 <bob@example.net>: no such user"
    assert parsedate_to_datetime(bob["Last-Attempt-Date"]).timestamp() == NOW

    assert carol["Final-Recipient"] == "rfc822; carol@example.com"
    assert carol["Action"] == "failed"
    assert carol["Status"] == "5.1.10"
    assert carol["Remote-MTA"] is None  # decided here: no remote server answered
    assert (
        unfold(carol["Diagnostic-Code"]) == "x-mailtoaster; domain example.com does not accept mail (null MX)"
    )


def test_original_headers_part() -> None:
    returned = part_bytes(parts(parse(build()))[2])
    assert returned.rstrip(b"\r\n") == ORIGINAL_HEADERS.rstrip(b"\r\n")
    headers = email.message_from_bytes(returned)
    assert headers["Message-ID"] == "<original-1@example.org>"
    assert headers["Subject"] == "quarterly report"


def test_long_and_multiline_diagnostics_are_one_folded_field() -> None:
    reply = "smtp; 550-5.7.1 " + "policy " * 40 + "\n550 5.7.1 see https://example.net/why"
    failed = [FailedRecipient("bob@example.net", "5.7.1", reply, "mx.example.net")]
    dsn = build_dsn(entry(), failed, reporting_mta="mail.example.org", original_headers=b"", now=NOW)
    (_, bob) = status_blocks(dsn)
    assert unfold(bob["Diagnostic-Code"]) == unfold(reply)
    assert max(len(line) for line in dsn.split(b"\r\n")) <= 100


def test_injection_through_a_reply_is_neutralised() -> None:
    failed = [
        FailedRecipient("bob@example.net", "5.0.0", "smtp; 550 no\r\nAction: delivered\r\n\r\nX: y", "mx")
    ]
    dsn = build_dsn(entry(), failed, reporting_mta="mail.example.org", original_headers=b"", now=NOW)
    (_, bob) = status_blocks(dsn)
    assert bob.get_all("Action") == ["failed"]


def test_expiry_note_reaches_the_text() -> None:
    failed = [
        FailedRecipient(
            "bob@example.net", "4.4.1", "x-mailtoaster; connect to mx: refused", "", "delivery time expired"
        )
    ]
    dsn = build_dsn(entry(), failed, reporting_mta="mail.example.org", original_headers=b"", now=NOW)
    assert "<bob@example.net>: delivery time expired; connect to mx: refused" in text_part(dsn)
    (_, bob) = status_blocks(dsn)
    assert bob["Status"] == "4.4.1" and bob["Action"] == "failed"


def test_lone_lf_headers_become_crlf() -> None:
    dsn = build(original_headers=b"Subject: x\nFrom: a@b\n\n")
    assert b"Subject: x\r\nFrom: a@b\r\n" in dsn


def test_never_bounce_a_bounce() -> None:
    with pytest.raises(DsnError, match="null sender"):
        build_dsn(entry(sender=""), FAILED, reporting_mta="mail.example.org", original_headers=b"", now=NOW)


@pytest.mark.parametrize("mta", ["", "bad host", "mail.example.org\r\nBcc: x@y"])
def test_reporting_mta_must_be_a_host_name(mta: str) -> None:
    with pytest.raises(DsnError, match="not a host name"):
        build(reporting_mta=mta)


def test_nothing_failed_is_an_error() -> None:
    with pytest.raises(DsnError, match="at least one"):
        build_dsn(entry(), [], reporting_mta="mail.example.org", original_headers=b"", now=NOW)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore", b"A: 1\r\nB: 2"),
        (b"A: 1\nB: 2\n\nbody", b"A: 1\nB: 2"),
        (b"\r\nbody only", b""),
        (b"A: 1\r\nB: 2\r\n", b"A: 1\r\nB: 2\r\n"),
    ],
)
def test_read_header_section(message: bytes, expected: bytes) -> None:
    assert read_header_section(io.BytesIO(message)) == expected


def test_read_header_section_is_bounded() -> None:
    huge = b"".join(b"X-Filler-%06d: %s\r\n" % (i, b"y" * 50) for i in range(5000)) + b"\r\nbody"
    section = read_header_section(io.BytesIO(huge), limit=10_000)
    assert len(section) <= 10_000
    assert section.endswith(b"\r\n") and section.startswith(b"X-Filler-000000")
