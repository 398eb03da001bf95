"""The reflector through the whole server (issue 7, part 1): a message to ``check-auth@`` is answered
with its authentication report, signed like any outbound mail.

Submitted mail is signed as it leaves and checked as a receiving server would see it (from the address
of mx.example.org, 127.0.0.1, which example.org's SPF record allows); inbound mail from the harness's
stranger (127.0.0.2, allowed by sender.example's SPF record) is reported as it was judged. Reports to
local users land in their Maildir; reports to remote addresses leave through the queue with the null
sender and reach the harness's sink.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailtoaster.auth.dkim import DkimResult, verify_dkim
from mailtoaster.auth.domainkeys import DkStatus, verify_domainkeys
from mailtoaster.dns import load_zone_file
from mailtoaster.message import Message
from mailtoaster.store import Directory
from tests.serverharness import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    REMOTE,
    SENDER_DOMAIN,
    STRANGER,
    Installation,
    installation,
)
from tests.test_server import message, sender_signed, wait_for

REFLECTOR = "check-auth@example.org"
TO_ALICE = "check-auth-alice=example.org@example.org"
"""The redirect form: the report goes to alice@example.org, whoever sent the message."""
SENDER_DMARC = f'_dmarc.{SENDER_DOMAIN}. IN TXT "v=DMARC1; p=none"\n'
"""With it, inbound mail from sender.example gets a DMARC pass as well."""
REFLECTOR_LOGGER = "mailtoaster.reflector"
SUMMARY = re.compile(r"^([A-Za-z-]+(?: [A-Za-z-]+)? check):\s+(\S+)$", re.MULTILINE)


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[Installation]:
    """DomainKeys signing on, so that submitted mail gets every signature the report looks for."""
    with installation(tmp_path, SENDER_DMARC, signing={"domainkeys": True}) as found:
        yield found


@pytest.fixture
def reflector_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=REFLECTOR_LOGGER)
    return caplog


def submit(mail: Installation, recipient: str, raw: bytes, sender: str = ALICE) -> None:
    with mail.submission() as client:
        client.login(ALICE, ALICE_PASSWORD)
        client.sendmail(sender, [recipient], raw)


def send_inbound(mail: Installation, recipients: list[str], raw: bytes, sender: str) -> tuple[int, bytes]:
    with mail.smtp(STRANGER) as client:
        client.mail(sender)
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            assert code == 250, (recipient, code, text)
        return client.data(raw)


def parsed(raw: bytes) -> EmailMessage:
    found = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(found, EmailMessage)
    return found


def body_of(report: EmailMessage) -> str:
    content = report.get_content()
    assert isinstance(content, str)
    return content


def summary_of(text: str) -> dict[str, str]:
    return dict(SUMMARY.findall(text.split("\n\n", 3)[2]))  # the block under "Summary of Results"


def the_report(mail: Installation, address: str = ALICE) -> EmailMessage:
    wait_for(lambda: mail.maildir_messages(address))
    [raw] = mail.maildir_messages(address)
    return parsed(raw)


def reflector_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == REFLECTOR_LOGGER]


EVERY_CHECK_PASSES = {
    "SPF check": "pass",
    "Sender-ID check": "pass",
    "DomainKeys check": "pass",
    "DKIM check": "pass",
    "ADSP check": "pass",
    "DMARC check": "pass",
    "ARC check": "none",  # a message straight from its author has no ARC chain
    "SpamAssassin check": "ham",
}


def test_submitted_mail_gets_a_report_with_every_check_passing(
    mail: Installation, reflector_log: pytest.LogCaptureFixture
) -> None:
    raw = message(ALICE, REFLECTOR, "my first test")
    submit(mail, REFLECTOR, raw)
    report = the_report(mail)  # to the envelope sender, a local user
    text = body_of(report)
    assert "\nSummary of Results\n" + "=" * 58 + "\nSPF check:          pass\n" in text
    assert summary_of(text) == EVERY_CHECK_PASSES
    assert report["From"] == f"Authentication reflector <{REFLECTOR}>"
    assert report["To"] == ALICE
    assert report["Subject"] == "Auth report: my first test"
    assert report["Auto-Submitted"] == "auto-replied"
    original_id = Message.parse(raw).get("Message-ID")
    assert original_id is not None and report["In-Reply-To"] == original_id.value
    # the details, the fields, and the message as it left (with the signatures it was checked by)
    assert "  record:      v=spf1 ip4:127.0.0.1 -all" in text
    assert "signature 1: pass: d=example.org s=default a=rsa-sha256" in text
    assert "\nAuthentication-Results: mx.example.org; spf=pass" in text
    assert "\nX-Spam-Status: No, score=" in text
    headers = text.split("\nOriginal message headers\n", 1)[1]
    assert "\nDKIM-Signature: v=1; a=rsa-sha256;" in headers and "\nSubject: my first test\n" in headers
    assert "arriving from 127.0.0.1 (the address of mx.example.org)" in " ".join(text.split())
    [line] = reflector_lines(reflector_log)
    assert f"reflector report from=<{ALICE}> rcpt=<{REFLECTOR}> to=<{ALICE}> spf=pass" in line
    assert "dkim=pass" in line and "spam=ham" in line and "delivered to alice@example.org" in line


def test_the_report_is_signed_like_outbound_mail(mail: Installation) -> None:
    submit(mail, REFLECTOR, message(ALICE, REFLECTOR, "signed answer"))
    wait_for(lambda: mail.maildir_messages(ALICE))
    [raw] = mail.maildir_messages(ALICE)
    resolver = load_zone_file(mail.config.dns.zone_file)
    answer = Message.parse(raw.replace(b"\n", b"\r\n"))
    verdicts = asyncio.run(verify_dkim(answer, resolver))
    assert sorted((verdict.selector, verdict.result) for verdict in verdicts) == [
        ("default", DkimResult.PASS),
        ("ed2026", DkimResult.PASS),
    ]
    assert asyncio.run(verify_domainkeys(answer, resolver)).status is DkStatus.OK


def test_inbound_mail_is_reported_as_it_was_judged(mail: Installation) -> None:
    code, _ = send_inbound(mail, [TO_ALICE], sender_signed(mail, tamper=False), f"news@{SENDER_DOMAIN}")
    assert code == 250
    text = body_of(the_report(mail))
    assert summary_of(text) == EVERY_CHECK_PASSES
    assert "It arrived from 127.0.0.2 (HELO client.sender.example)" in text


def test_a_broken_signature_is_a_dkim_fail(mail: Installation) -> None:
    code, _ = send_inbound(mail, [TO_ALICE], sender_signed(mail, tamper=True), f"news@{SENDER_DOMAIN}")
    assert code == 250
    text = body_of(the_report(mail))
    results = summary_of(text)
    assert results["DKIM check"] == "fail" and results["DomainKeys check"] == "fail"
    assert results["SPF check"] == "pass"
    assert "signature 1: fail: d=sender.example s=dk" in text


def test_the_reflector_address_gets_no_copy_and_other_recipients_do(mail: Installation) -> None:
    raw = message(f"news@{SENDER_DOMAIN}", BOB, "to both")
    code, _ = send_inbound(mail, [TO_ALICE, BOB], raw, f"news@{SENDER_DOMAIN}")
    assert code == 250
    report = the_report(mail)
    assert report["Subject"] == "Auth report: to both"
    [copy] = mail.maildir_messages(BOB)
    assert b"Subject: to both" in copy


@pytest.mark.parametrize(
    ("sender", "extra_field", "reason"),
    [
        ("", "", "null sender"),
        (f"news@{SENDER_DOMAIN}", "Auto-Submitted: auto-generated", "Auto-Submitted: auto-generated"),
        (f"news@{SENDER_DOMAIN}", "Precedence: bulk", "Precedence: bulk"),
        (f"news@{SENDER_DOMAIN}", "List-Id: <news.sender.example>", "mailing-list mail (List-Id)"),
        (f"MAILER-DAEMON@{SENDER_DOMAIN}", "", "is a mail system"),
    ],
)
def test_automatic_mail_gets_no_answer(
    mail: Installation, reflector_log: pytest.LogCaptureFixture, sender: str, extra_field: str, reason: str
) -> None:
    raw = message(f"news@{SENDER_DOMAIN}", TO_ALICE, "automatic")
    if extra_field:
        raw = extra_field.encode() + b"\r\n" + raw
    code, _ = send_inbound(mail, [TO_ALICE], raw, sender)
    assert code == 250  # accepted, only not answered
    wait_for(lambda: reflector_lines(reflector_log))
    [line] = reflector_lines(reflector_log)
    assert f"reflector no report from=<{sender}> rcpt=<{TO_ALICE}>: " in line and reason in line
    assert mail.maildir_messages(ALICE) == []


def test_auto_submitted_no_is_answered(mail: Installation) -> None:
    raw = b"Auto-Submitted: no\r\n" + message(ALICE, REFLECTOR, "a person wrote this")
    submit(mail, REFLECTOR, raw)
    assert the_report(mail)["Subject"] == "Auth report: a person wrote this"


def test_the_hourly_limit_holds(tmp_path: Path, reflector_log: pytest.LogCaptureFixture) -> None:
    with installation(tmp_path, reflector={"max_per_sender_per_hour": 2}) as mail:
        for number in range(4):
            submit(mail, REFLECTOR, message(ALICE, REFLECTOR, f"test {number}"))
        wait_for(lambda: len(reflector_lines(reflector_log)) == 4)
        subjects = sorted(str(parsed(raw)["Subject"]) for raw in mail.maildir_messages(ALICE))
        assert subjects == ["Auth report: test 0", "Auth report: test 1"]
        withheld = [line for line in reflector_lines(reflector_log) if "no report" in line]
        assert len(withheld) == 2
        assert all(
            f"over [reflector] max_per_sender_per_hour reports to <{ALICE}>" in line for line in withheld
        )
        # another sender has a quota of its own
        send_inbound(mail, [REFLECTOR], message(BOB, REFLECTOR, "from bob"), BOB)
        wait_for(lambda: len(mail.maildir_messages(BOB)) == 1)


def test_the_redirect_form_reaches_only_local_addresses(mail: Installation) -> None:
    stranger = "check-auth-carol=remote.example@example.org"
    with mail.submission() as client:
        client.login(ALICE, ALICE_PASSWORD)
        client.mail(ALICE)
        code, text = client.rcpt(stranger)
        assert (code, text) == (
            550,
            f"5.7.1 <{stranger}>: reports go only to addresses of this server "
            "([reflector] allow_any_target is off)".encode(),
        )
        code, text = client.rcpt("check-auth-nobody=example.org@example.org")
        assert code == 550 and b"reports go only to addresses of this server" in text
        code, text = client.rcpt("check-auth-carol=@example.org")
        assert code == 553 and b"expected check-auth-LOCAL=DOMAIN@example.org" in text
        code, text = client.rcpt("check-auth-check-auth=example.org@example.org")
        assert code == 550 and b"cannot be sent to a reflector address" in text
        assert client.rcpt("check-auth-bob=example.org@example.org")[0] == 250


def test_any_target_when_allowed_leaves_through_the_queue(tmp_path: Path) -> None:
    with installation(tmp_path, reflector={"allow_any_target": True}) as mail:
        recipient = "check-auth-carol=remote.example@example.org"
        submit(mail, recipient, message(ALICE, recipient, "for carol"))
        wait_for(lambda: mail.sink.messages)
        [(sender, recipients, content)] = mail.sink.messages
        assert (sender, recipients) == ("<>", [REMOTE])  # the null sender: nothing answers an answer
        report = parsed(content)
        assert report["To"] == REMOTE and report["Subject"] == "Auth report: for carol"
        assert "DKIM-Signature" in report
        assert mail.maildir_messages(ALICE) == []


def test_a_mailbox_named_like_the_redirect_form_without_a_target_still_works(tmp_path: Path) -> None:
    def prepare(data_dir: Path) -> None:
        with Directory.open(data_dir / "directory.sqlite", mail_root=data_dir / "mail") as directory:
            directory.add_user("check-auth-team@example.org", "a long enough password")

    with installation(tmp_path, prepare=prepare) as mail:
        send_inbound(mail, ["check-auth-team@example.org"], message(BOB, BOB, "plain mail"), BOB)
        assert len(mail.maildir_messages("check-auth-team@example.org")) == 1


def test_a_catch_all_does_not_swallow_the_reflector(tmp_path: Path) -> None:
    def prepare(data_dir: Path) -> None:
        with Directory.open(data_dir / "directory.sqlite", mail_root=data_dir / "mail") as directory:
            directory.add_alias("@example.org", [BOB])

    with installation(tmp_path, prepare=prepare) as mail:
        submit(mail, REFLECTOR, message(ALICE, REFLECTOR, "catch me"))
        assert the_report(mail)["Subject"] == "Auth report: catch me"
        assert mail.maildir_messages(BOB) == []


def test_switched_off_the_address_is_unknown(tmp_path: Path) -> None:
    with installation(tmp_path, reflector={"enabled": False}) as mail, mail.smtp() as client:
        client.mail(BOB)
        code, text = client.rcpt(REFLECTOR)
        assert code == 550 and b"no such user" in text


def test_another_local_part(tmp_path: Path) -> None:
    with installation(tmp_path, reflector={"local_part": "auth-results"}) as mail:
        submit(mail, "auth-results@example.org", message(ALICE, "auth-results@example.org", "renamed"))
        report = the_report(mail)
        assert report["From"] == "Authentication reflector <auth-results@example.org>"
        with mail.smtp() as client:
            client.mail(BOB)
            assert client.rcpt(REFLECTOR)[0] == 550


def test_a_hostile_subject_cannot_add_fields(mail: Installation) -> None:
    raw = message(ALICE, REFLECTOR, "x").replace(
        b"Subject: x", b"Subject: x\x1b[31m\r\n Bcc: victim@example.net"
    )
    submit(mail, REFLECTOR, raw)
    report = the_report(mail)
    assert report["Bcc"] is None
    assert report["Subject"] == "Auth report: x?[31m Bcc: victim@example.net"
    assert "\x1b" not in body_of(report)


def test_a_failure_to_store_the_report_is_a_temporary_error(
    mail: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = mail.running.server
    assert server is not None and server.reflector is not None

    def broken(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(server.reflector, "_store", broken)
    with mail.submission() as client:
        client.login(ALICE, ALICE_PASSWORD)
        with pytest.raises(smtplib.SMTPDataError) as raised:
            client.sendmail(ALICE, [REFLECTOR], message(ALICE, REFLECTOR, "lost?"))
    assert raised.value.smtp_code == 451
    monkeypatch.undo()
    submit(mail, REFLECTOR, message(ALICE, REFLECTOR, "retried"))  # the failed try used no quota
    assert the_report(mail)["Subject"] == "Auth report: retried"
