"""The reflector's parts on their own: its addresses, when it stays silent, the hourly limit (across
processes), the answer as a message, its settings, and what ``selftest`` reads back."""

from __future__ import annotations

import email
import email.policy
import multiprocessing
import os
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailtoaster.config import ConfigError, ReflectorSettings, load_config
from mailtoaster.message import Message
from mailtoaster.reflector import (
    RateLimitError,
    ReflectorAddress,
    ReflectorAddressError,
    ReflectorRecipients,
    ReportRateLimit,
    build_reply,
    parse_reflector_address,
    report_body,
    suppression_reason,
)
from mailtoaster.reflector.selftest import ReportWatch, failures, is_loopback, reflector_address, summary
from mailtoaster.store import Directory

LOCAL = "check-auth"


# -- addresses ------------------------------------------------------------------------------------


def test_the_plain_address_answers_the_sender() -> None:
    assert parse_reflector_address("check-auth@example.org", LOCAL) == ReflectorAddress(
        "check-auth@example.org", "check-auth@example.org", None
    )
    found = parse_reflector_address("Check-Auth@example.org", LOCAL)
    assert found is not None and found.reflector == "check-auth@example.org" and found.redirect is None


def test_the_redirect_form_names_the_target() -> None:
    found = parse_reflector_address("check-auth-jsmith=example.net@example.org", LOCAL)
    assert found == ReflectorAddress(
        "check-auth-jsmith=example.net@example.org", "check-auth@example.org", "jsmith@example.net"
    )
    # the domain comes after the last '=', so a local part may hold one
    found = parse_reflector_address("check-auth-a=b=Example.NET@example.org", LOCAL)
    assert found is not None and found.redirect == "a=b@example.net"


@pytest.mark.parametrize(
    "address", ["check-authx@example.org", "check-auth-team@example.org", "alice@example.org"]
)
def test_other_local_parts_are_not_the_reflectors(address: str) -> None:
    assert parse_reflector_address(address, LOCAL) is None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("check-auth-=example.net@example.org", "expected check-auth-LOCAL=DOMAIN@example.org"),
        ("check-auth-jsmith=@example.org", "expected check-auth-LOCAL=DOMAIN@example.org"),
        ("check-auth-jsmith=exa_mple..net@example.org", "not an address"),
        ("check-auth-jsmith=[192.0.2.1]@example.org", "not an address literal"),
    ],
)
def test_a_malformed_redirect_says_why(address: str, why: str) -> None:
    with pytest.raises(ReflectorAddressError, match=why.replace("[", r"\[")):
        parse_reflector_address(address, LOCAL)


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Directory]:
    with Directory.open(tmp_path / "directory.sqlite", mail_root=tmp_path / "mail") as opened:
        opened.add_domain("example.org")
        opened.add_user("alice@example.org", "a long enough password")
        opened.add_alias("team@example.org", ["alice@example.org", "someone@example.net"])
        yield opened


def test_recipients_in_local_domains_only(directory: Directory) -> None:
    recipients = ReflectorRecipients(ReflectorSettings(), directory)
    assert recipients.match("check-auth@example.org") is not None
    assert recipients.match("check-auth@remote.example") is None
    assert recipients.refusal("check-auth-x=@remote.example") is None  # relayed: not ours to judge
    resolution = recipients.resolve("check-auth@example.org")
    assert resolution is not None and (resolution.mailboxes, resolution.forwards) == ((), ())
    found = recipients.resolve("alice@example.org")
    assert found is not None and [user.email for user in found.mailboxes] == ["alice@example.org"]
    assert recipients.resolve("nobody@example.org") is None


def test_redirect_targets_must_be_delivered_here(directory: Directory) -> None:
    recipients = ReflectorRecipients(ReflectorSettings(), directory)
    assert recipients.refusal("check-auth-alice=example.org@example.org") is None
    assert recipients.refusal("check-auth-team=example.org@example.org") is None  # an alias of ours
    stranger = "check-auth-jsmith=example.net@example.org"
    assert recipients.refusal(stranger) == (
        f"550 5.7.1 <{stranger}>: reports go only to addresses of this server "
        "([reflector] allow_any_target is off)"
    )
    assert recipients.resolve(stranger) is None
    assert recipients.refusal("check-auth-nobody=example.org@example.org") is not None
    loop = "check-auth-check-auth=example.org@example.org"
    assert recipients.refusal(loop) == f"550 5.7.1 <{loop}>: a report cannot be sent to a reflector address"
    malformed = recipients.refusal("check-auth-x=@example.org")
    assert malformed is not None and malformed.startswith("553 5.1.3 <check-auth-x=@example.org>:")
    anyone = ReflectorRecipients(ReflectorSettings(allow_any_target=True), directory)
    assert anyone.refusal(stranger) is None and anyone.resolve(stranger) is not None


def test_switched_off_nothing_is_the_reflectors(directory: Directory) -> None:
    recipients = ReflectorRecipients(ReflectorSettings(enabled=False), directory)
    assert recipients.match("check-auth@example.org") is None
    assert recipients.refusal("check-auth-x=@example.org") is None
    assert recipients.resolve("check-auth@example.org") is None


# -- when it stays silent ---------------------------------------------------------------------------


def plain(*fields: str) -> Message:
    return Message.parse(
        ("\r\n".join([*fields, "From: a@example.net", "Subject: s"]) + "\r\n\r\nbody\r\n").encode()
    )


@pytest.mark.parametrize(
    ("fields", "mail_from", "reason"),
    [
        ((), "", "null sender"),
        ((), "MAILER-DAEMON@example.net", "the sender <MAILER-DAEMON@example.net> is a mail system"),
        (("Auto-Submitted: auto-replied",), "a@example.net", "Auto-Submitted: auto-replied"),
        (
            ("Auto-Submitted: Auto-Generated; owner-email=x@y",),
            "a@example.net",
            "Auto-Submitted: Auto-Generated",
        ),
        (("Precedence: Bulk",), "a@example.net", "Precedence: Bulk"),
        (("Precedence: junk",), "a@example.net", "Precedence: junk"),
        (
            ("List-Unsubscribe: <mailto:x@example.net>",),
            "a@example.net",
            "mailing-list mail (List-Unsubscribe)",
        ),
        (("list-id: <news.example.net>",), "a@example.net", "mailing-list mail (list-id)"),
    ],
)
def test_automatic_and_list_mail_is_not_answered(
    fields: tuple[str, ...], mail_from: str, reason: str
) -> None:
    found = suppression_reason(plain(*fields), mail_from)
    assert found is not None and found.startswith(reason)


@pytest.mark.parametrize(
    "fields", [(), ("Auto-Submitted: no",), ("Auto-Submitted: NO",), ("Precedence: first-class",)]
)
def test_personal_mail_is_answered(fields: tuple[str, ...]) -> None:
    assert suppression_reason(plain(*fields), "a@example.net") is None


# -- the hourly limit -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_counts_per_address_per_hour(tmp_path: Path) -> None:
    clock = Clock()
    limit = ReportRateLimit(tmp_path / "reflector.sqlite", 2, clock=clock)
    assert limit.reserve("alice@example.org") and limit.reserve("ALICE@example.org")
    assert not limit.reserve("alice@example.org")
    assert limit.reserve("bob@example.org")
    clock.now += 3599
    assert not limit.reserve("alice@example.org")
    clock.now += 2  # the first two are over an hour old
    assert limit.reserve("alice@example.org")


def test_a_released_report_is_not_counted(tmp_path: Path) -> None:
    limit = ReportRateLimit(tmp_path / "reflector.sqlite", 1)
    assert limit.reserve("alice@example.org")
    limit.release("alice@example.org")
    assert limit.reserve("alice@example.org")
    assert not limit.reserve("alice@example.org")


def test_an_unusable_table_is_an_error_not_a_silent_pass(tmp_path: Path) -> None:
    limit = ReportRateLimit(tmp_path / "missing" / "reflector.sqlite", 1)
    with pytest.raises(RateLimitError, match=r"reflector\.sqlite"):
        limit.reserve("alice@example.org")
    not_a_database = tmp_path / "garbage.sqlite"
    not_a_database.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(RateLimitError):
        ReportRateLimit(not_a_database, 1).reserve("alice@example.org")


def _reserve_many(path: str, count: int, start: Any, granted: Any) -> None:
    start.wait()
    limit = ReportRateLimit(Path(path), 10)
    granted.put(sum(limit.reserve("alice@example.org") for _ in range(count)))


def test_the_limit_holds_across_processes(tmp_path: Path) -> None:
    """As ``serve``'s worker processes would: eight processes race for one address's quota of ten."""
    path = str(tmp_path / "reflector.sqlite")
    context = multiprocessing.get_context("fork")
    start, granted = context.Event(), context.Queue()
    workers = [context.Process(target=_reserve_many, args=(path, 5, start, granted)) for _ in range(8)]
    for worker in workers:
        worker.start()
    start.set()
    counts = [granted.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(10)
    assert sum(counts) == 10, counts
    assert os.path.exists(path)


# -- the answer as a message ---------------------------------------------------------------------------


ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: check-auth@example.org\r\n"
    b"Subject: hello\r\n"
    b"References: <a@x> <b@x>\r\n"
    b"Message-ID: <original.1@example.org>\r\n"
    b"\r\n"
    b"Hi.\r\n"
)


def answer(original: bytes = ORIGINAL, text: str = "SPF check:          pass\n") -> bytes:
    message = Message.parse(original)
    body = report_body(["Intro line."], text, b"".join(header.raw for header in message.headers))
    return build_reply(
        message,
        body=body,
        reflector="check-auth@example.org",
        target="alice@example.org",
        hostname="mx.example.org",
        now=1_700_000_000,
    )


def parse(raw: bytes) -> EmailMessage:
    found = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(found, EmailMessage)
    return found


def text_of(reply: EmailMessage) -> str:
    content = reply.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def test_the_answer_is_an_auto_reply_in_the_thread() -> None:
    raw = answer()
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    reply = parse(raw)
    assert reply["From"] == "Authentication reflector <check-auth@example.org>"
    assert reply["To"] == "alice@example.org"
    assert reply["Subject"] == "Auth report: hello"
    assert reply["Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["In-Reply-To"] == "<original.1@example.org>"
    assert reply["References"] == "<a@x> <b@x> <original.1@example.org>"
    assert str(reply["Message-ID"]).endswith(".reflector@mx.example.org>")
    assert reply["Content-Transfer-Encoding"] == "7bit"
    content = text_of(reply)
    assert content.startswith(
        "Intro line.\n\nSummary of Results\n" + "=" * 58 + "\nSPF check:          pass\n"
    )
    assert content.endswith(
        "Original message headers\n========================\nFrom: Alice <alice@example.org>\n"
        "To: check-auth@example.org\nSubject: hello\nReferences: <a@x> <b@x>\n"
        "Message-ID: <original.1@example.org>\n"
    )


def test_no_message_id_no_thread_fields() -> None:
    reply = parse(answer(b"From: a@example.net\r\n\r\nno subject\r\n"))
    assert reply["In-Reply-To"] is None and reply["References"] is None
    assert reply["Subject"] == "Auth report"


def test_a_non_ascii_subject_and_long_lines_survive_encoding() -> None:
    original = ORIGINAL.replace(b"Subject: hello", "Subject: Grüße aus Köln".encode())
    long_line = "Authentication-Results: mx.example.org; " + "dkim=pass header.d=example.org " * 60
    reply = parse(answer(original, f"SPF check:          pass\n{long_line}\n"))
    assert reply["Subject"] == "Auth report: Grüße aus Köln"
    assert reply["Content-Transfer-Encoding"] == "quoted-printable"
    content = text_of(reply)
    assert long_line.rstrip() in content and "Subject: Grüße aus Köln" in content
    assert all(len(line) <= 78 for line in answer(original, long_line).split(b"\r\n"))


def test_control_characters_from_the_sender_are_neutralised() -> None:
    original = ORIGINAL.replace(b"Subject: hello", b"Subject: a\x1b[2Jb\x00c").replace(b"Hi.", b"body") + b""
    original = original.replace(b"To: check", b"X-Evil: \x07bell\r\nTo: check")
    reply = parse(answer(original))
    assert reply["Subject"] == "Auth report: a?[2Jb?c"
    content = text_of(reply)
    assert "\x1b" not in content and "\x07" not in content and "X-Evil: ?bell" in content


def test_a_huge_header_section_is_cut() -> None:
    original = b"".join(f"X-Filler-{n}: {'y' * 100}\r\n".encode() for n in range(2000)) + ORIGINAL
    content = text_of(parse(answer(original)))
    shown = content.split("Original message headers\n", 1)[1]
    assert 60_000 < len(shown) < 70_000 and shown.rstrip().endswith("[... cut at 64 KB]")


# -- settings ------------------------------------------------------------------------------------


def test_settings_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(
        '[reflector]\nlocal_part = "auth-results"\nallow_any_target = true\nmax_per_sender_per_hour = 3\n'
    )
    settings = load_config(path).reflector
    assert settings == ReflectorSettings(True, "auth-results", True, 3)
    assert load_config(None).reflector == ReflectorSettings(True, "check-auth", False, 10)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('local_part = "Check-Auth"', "is not a lower-case local part"),
        ('local_part = "check=auth"', "is not a lower-case local part"),
        ('local_part = ""', "is not a lower-case local part"),
        ("max_per_sender_per_hour = 0", "must be at least 1"),
        ("enabled = 1", "expected true or false"),
        ("rate = 3", "unknown setting 'rate'"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(f"[reflector]\n{text}\n")
    with pytest.raises(ConfigError, match=r"\[reflector\]") as raised:
        load_config(path)
    assert fragment in str(raised.value)


# -- what selftest reads back -----------------------------------------------------------------------


REPORT_TEXT = """Intro.

Summary of Results
==========================================================
SPF check:          pass
Sender-ID check:    pass
DomainKeys check:   none
DKIM check:         pass
ADSP check:         pass
DMARC check:        pass
ARC check:          none
SpamAssassin check: ham

SPF details
-----------
  result:      pass
"""


def test_summary_and_failures() -> None:
    lines = summary(REPORT_TEXT)
    assert [label for label, _ in lines] == [
        "SPF check",
        "Sender-ID check",
        "DomainKeys check",
        "DKIM check",
        "ADSP check",
        "DMARC check",
        "ARC check",
        "SpamAssassin check",
    ]
    assert failures(lines) == ["DomainKeys check: none"]  # ARC's none is the right answer
    assert failures(summary(REPORT_TEXT.replace("ham", "spam"))) == [
        "DomainKeys check: none",
        "SpamAssassin check: spam",
    ]


def test_selftest_addresses() -> None:
    assert reflector_address("check-auth", "alice@example.org") == "check-auth-alice=example.org@example.org"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("192.0.2.1") and not is_loopback("mail.example.org")


def test_the_watch_finds_the_answer_by_in_reply_to(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    (maildir / "new").mkdir(parents=True)
    (maildir / "cur").mkdir()
    (maildir / "new" / "1.other").write_bytes(b"In-Reply-To: <other@x>\n\nnot this\n")
    watch = ReportWatch(maildir, "<wanted@x>")
    assert watch.find() is None
    (maildir / "cur" / "2.answer:2,S").write_bytes(b"Subject: r\nIn-Reply-To: <wanted@x>\n\nthe report\n")
    assert watch.find() == b"Subject: r\nIn-Reply-To: <wanted@x>\n\nthe report\n"
    body_only = ReportWatch(maildir, "<elsewhere@x>")
    (maildir / "new" / "3.body").write_bytes(b"Subject: r\n\nIn-Reply-To: <elsewhere@x>\n")
    assert body_only.find() is None  # only the header section counts
