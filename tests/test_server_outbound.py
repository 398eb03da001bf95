"""Outbound delivery through the whole server: a relay client hands mail to the SMTP listener, the
queue runner delivers it to a second SMTP server on loopback (the harness's sink, the MX of
remote.example), retries a temporary failure on the configured schedule, and returns a permanent one
to the sender as an RFC 3464 delivery status notification in her own Maildir.

Retries are made fast with the queue settings (``first_retry`` 0.5 s); the sink answers DATA with the
replies queued in ``sink.replies`` before it falls back to ``250``.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import logging
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailtoaster.queue import Queue
from tests.serverharness import ALICE, RELAY_CLIENT, REMOTE, Installation, installation
from tests.test_server import message, wait_for

FAST_RETRIES = {"first_retry": 0.5, "max_retry": 1.0}
QUEUE_LOGGER = "mailtoaster.queue"
HOSTNAME = "mx.example.org"


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[Installation]:
    with installation(tmp_path, queue=FAST_RETRIES) as found:
        yield found


@pytest.fixture
def queue_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The queue runner's log lines (the server runs in a thread of this process, so caplog sees them)."""
    caplog.set_level(logging.INFO, logger=QUEUE_LOGGER)
    return caplog


def relay(mail: Installation, subject: str) -> None:
    with mail.smtp(RELAY_CLIENT) as client:
        client.sendmail(ALICE, [REMOTE], message(ALICE, REMOTE, subject))


def queued_ids(mail: Installation) -> list[str]:
    return [entry.id for entry in Queue(mail.data_dir / "queue", create=False).entries()]


def attempts(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The runner's one-line-per-attempt records (``queue id=... result=...``)."""
    return [r for r in caplog.records if r.name == QUEUE_LOGGER and getattr(r, "result", None) is not None]


def parse_dsn(raw: bytes) -> tuple[EmailMessage, list[email.message.Message]]:
    """The report, and the field blocks of its message/delivery-status part (per message, then one
    per recipient)."""
    dsn = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(dsn, EmailMessage)
    status = next(part for part in dsn.walk() if part.get_content_type() == "message/delivery-status")
    blocks = [block for block in status.get_payload() if isinstance(block, email.message.Message)]
    return dsn, blocks


def test_relayed_mail_is_delivered_and_leaves_the_queue(
    mail: Installation, queue_log: pytest.LogCaptureFixture
) -> None:
    relay(mail, "straight through")
    wait_for(lambda: mail.sink.messages)
    [(sender, recipients, content)] = mail.sink.messages
    assert (sender, recipients) == (ALICE, [REMOTE])
    assert b"Subject: straight through" in content
    wait_for(lambda: queued_ids(mail) == [])
    [record] = attempts(queue_log)
    line = record.getMessage()
    assert f"from=<{ALICE}> to=<{REMOTE}> relay=mx.remote.example[127.0.0.1]:{mail.sink_port}" in line
    assert " result=delivered status=2.0.0 " in line and line.endswith(
        ' attempt=1 reply="smtp; 250 2.0.0 stored"'
    )


def test_a_4xx_is_retried_then_delivered(mail: Installation, queue_log: pytest.LogCaptureFixture) -> None:
    mail.sink.replies.append("451 4.7.1 greylisted, try again later")
    relay(mail, "greylisted")
    wait_for(lambda: mail.sink.messages)
    assert mail.sink.replies == []  # the first attempt got the 451
    [(_, recipients, content)] = mail.sink.messages
    assert recipients == [REMOTE] and b"Subject: greylisted" in content
    wait_for(lambda: queued_ids(mail) == [])
    deferred, delivered = attempts(queue_log)
    assert " result=deferred status=4.7.1 " in deferred.getMessage()
    assert 'attempt=1 reply="smtp; 451 4.7.1 greylisted, try again later"' in deferred.getMessage()
    assert " result=delivered status=2.0.0 " in delivered.getMessage()
    assert " attempt=2 " in delivered.getMessage()
    gap = delivered.created - deferred.created
    assert FAST_RETRIES["first_retry"] <= gap < 5, gap  # on schedule, not at the next 60 s queue scan
    assert mail.maildir_messages(ALICE) == []  # no bounce, no warning


def test_a_5xx_bounces_to_the_local_sender(mail: Installation, queue_log: pytest.LogCaptureFixture) -> None:
    mail.sink.replies.append("550 5.1.1 <carol@remote.example>: no such user here")
    relay(mail, "doomed")
    wait_for(lambda: mail.maildir_messages(ALICE))
    [raw] = mail.maildir_messages(ALICE)
    dsn, (per_message, per_recipient) = parse_dsn(raw)
    assert dsn["From"] == f"MAILER-DAEMON@{HOSTNAME}"
    assert dsn["To"] == ALICE
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert [part.get_content_type() for part in dsn.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert per_message["Reporting-MTA"] == f"dns; {HOSTNAME}"
    assert per_recipient["Final-Recipient"] == f"rfc822; {REMOTE}"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.remote.example"
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 <carol@remote.example>: no such user here"
    [headers] = (part for part in dsn.iter_parts() if part.get_content_type() == "text/rfc822-headers")
    assert "Subject: doomed" in headers.get_content()
    assert mail.sink.messages == []
    wait_for(lambda: queued_ids(mail) == [])
    [bounced] = attempts(queue_log)
    assert " result=bounced status=5.1.1 " in bounced.getMessage() and bounced.levelno == logging.WARNING


def test_a_5xx_after_a_4xx_bounces_once(mail: Installation) -> None:
    """The retry's permanent failure is what the DSN reports, and only one DSN is sent."""
    mail.sink.replies.extend(["452 4.2.2 mailbox full", "552 5.2.2 mailbox full for good"])
    relay(mail, "full mailbox")
    wait_for(lambda: mail.maildir_messages(ALICE))
    wait_for(lambda: queued_ids(mail) == [])
    time.sleep(FAST_RETRIES["max_retry"])  # time enough for a wrongly scheduled extra attempt or DSN
    [raw] = mail.maildir_messages(ALICE)
    _, [_, per_recipient] = parse_dsn(raw)
    assert (per_recipient["Status"], per_recipient["Diagnostic-Code"]) == (
        "5.2.2",
        "smtp; 552 5.2.2 mailbox full for good",
    )
    assert mail.sink.replies == [] and mail.sink.messages == []
