"""The mail server end to end over loopback: smtplib clients, local delivery, relaying and refusing
to relay, signing, the outbound queue, SMTP smuggling, limits."""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailtoaster.auth.dkim import DkimResult, verify_dkim
from mailtoaster.dns import load_zone_file
from mailtoaster.message import Message
from tests.serverharness import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    RELAY_CLIENT,
    REMOTE,
    SENDER_DOMAIN,
    SENDER_SELECTOR,
    STRANGER,
    STRICT_CLIENT,
    TEMPFAIL_CLIENT,
    Installation,
    installation,
)


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[Installation]:
    with installation(tmp_path) as found:
        yield found


def message(sender: str, recipient: str, subject: str = "hello", body: str = "Hi there.\n") -> bytes:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = recipient
    email["Subject"] = subject
    email["Message-ID"] = f"<{time.time_ns()}@sender.example>"
    email["Date"] = "Mon, 30 Nov 2026 10:00:00 +0000"
    email.set_content(body)
    return email.as_bytes().replace(b"\n", b"\r\n")


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_local_delivery_with_trace_and_results(mail: Installation) -> None:
    with mail.smtp() as client:
        client.sendmail("someone@sender.example", [ALICE], message("someone@sender.example", ALICE))
    [stored] = mail.maildir_messages(ALICE)
    headers = stored.split(b"\n\n", 1)[0].decode()
    assert headers.startswith("Received: from client.sender.example ([127.0.0.2])\n\tby mx.example.org")
    assert "Received-SPF: pass" in headers
    assert "Authentication-Results: mx.example.org;" in headers and "spf=pass" in headers
    assert b"\r\n" not in stored  # Maildir lines end in LF


def test_alias_delivers_to_each_member_once(mail: Installation) -> None:
    with mail.smtp() as client:
        client.sendmail(
            "someone@sender.example", ["team@example.org", ALICE], message("a@sender.example", ALICE)
        )
    assert len(mail.maildir_messages(ALICE)) == 1 and len(mail.maildir_messages(BOB)) == 1


def test_unknown_recipient_is_refused_at_rcpt(mail: Installation) -> None:
    with mail.smtp() as client:
        client.mail("someone@sender.example")
        code, text = client.rcpt("nobody@example.org")
    assert (code, text[:5]) == (550, b"5.1.1")


OPEN_RELAY_BATTERY = [
    "carol@remote.example",
    "carol%remote.example@example.org",
    "remote.example!carol@example.org",
    '"carol@remote.example"@example.org',
    "@example.org:carol@remote.example",
    "carol@remote.example@example.org",
    "postmaster@remote.example",
    "carol@[127.0.0.1]",
    "carol@remote.example.",
    '"carol%remote.example"@example.org',
    "carol@REMOTE.example",
]


@pytest.mark.parametrize("recipient", OPEN_RELAY_BATTERY)
def test_strangers_cannot_relay(mail: Installation, recipient: str) -> None:
    with mail.smtp(STRANGER) as client:
        client.mail("spammer@sender.example")
        code, text = client.rcpt(f"<{recipient}>")
    assert code >= 500, (recipient, code, text)
    assert text.startswith(b"5."), text


def test_relay_client_mail_leaves_signed(mail: Installation) -> None:
    with mail.smtp(RELAY_CLIENT) as client:
        client.sendmail(ALICE, [REMOTE], message(ALICE, REMOTE, "outbound"))
    wait_for(lambda: mail.sink.messages)
    sender, recipients, content = mail.sink.messages[0]
    assert (sender, recipients) == (ALICE, [REMOTE])
    resolver = load_zone_file(mail.config.dns.zone_file)
    verdicts = asyncio.run(verify_dkim(Message.parse(content), resolver))
    assert sorted((verdict.selector, verdict.result) for verdict in verdicts) == [
        ("default", DkimResult.PASS),
        ("ed2026", DkimResult.PASS),
    ]


def test_authenticated_submission_may_relay(mail: Installation) -> None:
    with mail.submission(STRANGER) as client:
        client.login(ALICE, ALICE_PASSWORD)
        client.sendmail(ALICE, [REMOTE], message(ALICE, REMOTE, "submitted"))
    wait_for(lambda: mail.sink.messages)
    assert b"with ESMTPSA" in mail.sink.messages[0][2]


def test_submission_requires_auth_and_a_good_password(mail: Installation) -> None:
    with mail.submission(STRANGER) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(ALICE, "wrong")
        code, text = client.mail(ALICE)
        assert code == 530 and text.startswith(b"5.7.0")


@pytest.mark.parametrize(
    "payload",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\r", b"\r.\r\n", b"\r\n.\n"],
    ids=["LF.LF", "CR.CR", "LF.CRLF", "CRLF.CR", "CR.CRLF", "CRLF.LF"],
)
def test_smuggling_never_splits_a_transaction(mail: Installation, payload: bytes) -> None:
    smuggled = (
        b"MAIL FROM:<spoof@sender.example>\r\nRCPT TO:<" + BOB.encode() + b">\r\nDATA\r\n"
        b"From: spoof@sender.example\r\n\r\nsmuggled\r\n"
    )
    data = b"From: a@sender.example\r\nTo: alice@example.org\r\n\r\nfirst" + payload + smuggled
    with mail.smtp() as client:
        client.mail("a@sender.example")
        client.rcpt(ALICE)
        code, text = client.data(data)
        assert code == 550 and text.startswith(b"5.5.2")
        assert client.noop()[0] == 250  # the connection is still usable
    assert mail.maildir_messages(ALICE) == [] and mail.maildir_messages(BOB) == []


def test_oversized_message_gets_552(mail: Installation) -> None:
    with mail.smtp() as client:
        client.mail("a@sender.example")
        client.rcpt(ALICE)
        code, text = client.data(b"Subject: big\r\n\r\n" + (b"x" * 900 + b"\r\n") * 300)
    assert code == 552 and text.startswith(b"5.3.4")
    assert mail.maildir_messages(ALICE) == []


def test_denied_client_is_refused_at_the_greeting(mail: Installation) -> None:
    with pytest.raises(smtplib.SMTPConnectError) as raised:
        smtplib.SMTP("127.0.0.1", mail.running.port("smtp"), source_address=("127.0.0.9", 0), timeout=10)
    assert raised.value.smtp_code == 554


def sender_signed(mail: Installation, *, tamper: bool) -> bytes:
    """A message from sender.example with a DomainKeys and a DKIM signature (its key is in the zone);
    ``tamper`` changes the body after signing."""
    from mailtoaster.auth.dkim import DkimSigner, sign_dkim
    from mailtoaster.auth.domainkeys import sign_domainkeys
    from mailtoaster.keys import load_key

    key = load_key(mail.sender_keys, SENDER_DOMAIN, SENDER_SELECTOR)
    raw = message(f"news@{SENDER_DOMAIN}", ALICE, "signed", "Original text.\n")
    raw = sign_domainkeys(raw, SENDER_DOMAIN, SENDER_SELECTOR, key.private_key) + raw  # type: ignore[arg-type]
    raw = b"".join(sign_dkim(raw, [DkimSigner(SENDER_DOMAIN, SENDER_SELECTOR, key.private_key)])) + raw
    return raw.replace(b"Original text.", b"Altered text!!") if tamper else raw


def send(
    mail: Installation, source: str, raw: bytes, sender: str = f"news@{SENDER_DOMAIN}"
) -> tuple[int, bytes]:
    with mail.smtp(source) as client:
        client.mail(sender)
        client.rcpt(ALICE)
        return client.data(raw)


def test_dkverify_without_b_accepts_a_bad_signature(mail: Installation) -> None:
    code, _ = send(mail, STRANGER, sender_signed(mail, tamper=True))
    assert code == 250
    [stored] = mail.maildir_messages(ALICE)
    assert b"domainkeys=fail" in stored and b"dkim=fail" in stored


def test_dkverify_with_b_refuses_a_bad_signature(mail: Installation) -> None:
    code, text = send(mail, STRICT_CLIENT, sender_signed(mail, tamper=True))
    assert code == 550 and text.startswith(b"5.7."), text
    assert mail.maildir_messages(ALICE) == []
    code, _ = send(mail, STRICT_CLIENT, sender_signed(mail, tamper=False))
    assert code == 250


def test_dkverify_lowercase_letters_are_temporary(mail: Installation) -> None:
    code, text = send(mail, TEMPFAIL_CLIENT, sender_signed(mail, tamper=True))
    assert code == 451 and text.startswith(b"4.7."), text


def test_spfbehavior_3_refuses_spf_fail(mail: Installation) -> None:
    raw = message("liar@forged.example", ALICE)
    code, text = send(mail, STRICT_CLIENT, raw, sender="liar@forged.example")
    assert code == 550 and text.startswith(b"5.7.23"), text
    code, _ = send(mail, STRANGER, raw, sender="liar@forged.example")  # default level 1: headers only
    assert code == 250
    assert b"Received-SPF: fail" in mail.maildir_messages(ALICE)[0]


def test_unknown_recipients_over_the_limit_close_the_connection(mail: Installation) -> None:
    with mail.smtp(STRICT_CLIENT) as client:
        client.mail(f"a@{SENDER_DOMAIN}")
        assert client.rcpt("x1@example.org")[0] == 550
        assert client.rcpt("x2@example.org")[0] == 550
        code, _ = client.rcpt("x3@example.org")
        assert code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_windows_executable_attachment_is_refused(mail: Installation) -> None:
    email = EmailMessage()
    email["From"], email["To"], email["Subject"] = f"a@{SENDER_DOMAIN}", ALICE, "invoice"
    email.set_content("see attached")
    email.add_attachment(b"MZ\x90\x00" + bytes(200), maintype="application", subtype="octet-stream",
                         filename="invoice.pdf")  # fmt: skip
    code, text = send(mail, STRANGER, email.as_bytes().replace(b"\n", b"\r\n"), sender=f"a@{SENDER_DOMAIN}")
    assert code == 552 and text.startswith(b"5.3.4"), text


def test_spam_flag_goes_to_junk_for_quarantining_users(mail: Installation) -> None:
    """A relay client's verdict (a filtering gateway in front); a stranger's is removed and ignored,
    see test_server_spam.py for the filter's own."""
    raw = b"X-Spam-Status: Yes, score=9.1 required=5.0\r\n" + message(f"a@{SENDER_DOMAIN}", ALICE)
    assert send(mail, RELAY_CLIENT, raw, sender=f"a@{SENDER_DOMAIN}")[0] == 250
    assert mail.maildir_messages(ALICE) == [] and len(mail.maildir_messages(ALICE, "Junk")) == 1
    maildir = mail.data_dir / "mail" / "example.org" / "alice" / "Maildir"
    assert "INBOX.Junk" in (maildir / "courierimapsubscribed").read_text()
    assert "Junk" in (maildir / "subscriptions").read_text()


def forged_author_message() -> bytes:
    """Claims to be from example.org (p=reject) but comes from a stranger, unsigned: DMARC fails."""
    return message(ALICE, BOB, "urgent wire transfer")


def test_dmarc_reject_is_recorded_by_default(mail: Installation) -> None:
    code, _ = send(mail, STRANGER, forged_author_message(), sender=f"ceo@{SENDER_DOMAIN}")
    assert code == 250
    [stored] = mail.maildir_messages(ALICE)
    assert b"dmarc=fail" in stored


def test_dmarc_reject_is_enforced_when_configured(tmp_path: Path) -> None:
    with installation(tmp_path, policy={"dmarc_reject": True}) as strict:
        code, text = send(strict, STRANGER, forged_author_message(), sender=f"ceo@{SENDER_DOMAIN}")
        assert code == 550 and text.startswith(b"5.7.1") and b"DMARC" in text
        assert strict.maildir_messages(ALICE) == []


def test_ignored_rule_variables_are_logged_once(mail: Installation, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="mailtoaster.smtp")
    for _ in range(3):
        with mail.smtp(STRANGER) as client:
            client.noop()
    lines = [record.getMessage() for record in caplog.records if "does not implement" in record.getMessage()]
    assert len(lines) == 1 and "QMAILQUEUE" in lines[0] and "DKQUEUE" in lines[0]


def test_confirmed_reverse_name_in_received_and_iprev(tmp_path: Path) -> None:
    reverse_zone = (
        "2.0.0.127.in-addr.arpa. IN PTR client.sender.example.\n"
        "client.sender.example. IN A 127.0.0.2\n"
        "3.0.0.127.in-addr.arpa. IN PTR liar.sender.example.\n"
    )
    with installation(tmp_path, zone_extra=reverse_zone) as mail:
        send(mail, STRANGER, message(f"a@{SENDER_DOMAIN}", ALICE), sender=f"a@{SENDER_DOMAIN}")
        send(mail, STRICT_CLIENT, message(f"a@{SENDER_DOMAIN}", ALICE), sender=f"a@{SENDER_DOMAIN}")
        confirmed, unconfirmed = (stored.replace(b"\n ", b" ") for stored in mail.maildir_messages(ALICE))
    assert b"from client.sender.example (client.sender.example [127.0.0.2])" in confirmed
    assert b"iprev=pass (client.sender.example) policy.iprev=127.0.0.2" in confirmed
    assert b"from client.sender.example ([127.0.0.3])" in unconfirmed
    assert b"iprev=fail" in unconfirmed


def test_large_message_is_checked_from_the_spool_file(tmp_path: Path) -> None:
    """Over Message.from_file's in-memory limit the body stays on disk and is hashed as a stream; the
    verdicts are the same, and a relayed copy is signed the same way."""
    from mailtoaster.auth.dkim import DkimSigner, sign_dkim
    from mailtoaster.keys import load_key

    with installation(tmp_path, server={"max_message_size": 5_000_000}) as mail:
        key = load_key(mail.sender_keys, SENDER_DOMAIN, SENDER_SELECTOR)
        body = "".join(f"line {n:07d} of a large message, with  double  spaces \n" for n in range(40_000))
        raw = message(f"news@{SENDER_DOMAIN}", ALICE, "large", body)
        assert len(raw) > 2_000_000
        raw = b"".join(sign_dkim(raw, [DkimSigner(SENDER_DOMAIN, SENDER_SELECTOR, key.private_key)])) + raw
        assert send(mail, STRANGER, raw)[0] == 250
        [stored] = mail.maildir_messages(ALICE)
        assert b"dkim=pass" in stored.replace(b"\n ", b" ")
        with mail.smtp(RELAY_CLIENT) as client:
            client.sendmail(ALICE, [REMOTE], message(ALICE, REMOTE, "large out", body))
        wait_for(lambda: mail.sink.messages)
        resolver = load_zone_file(mail.config.dns.zone_file)
        verdicts = asyncio.run(verify_dkim(Message.parse(mail.sink.messages[0][2]), resolver))
        assert [verdict.result for verdict in verdicts] == [DkimResult.PASS, DkimResult.PASS]
