"""``mailtoaster selftest``: one message through the running server to its own reflector, and the report
read back from the sender's Maildir.

It runs on the server's machine: the message goes in over the submission port with AUTH (as a mail
client sends it), is signed and checked as it would leave (``respond.py``), and the report comes back
to the sender's own mailbox, which is read from the data directory. The report is found by its
``In-Reply-To``, which names the test message's unique Message-ID.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import aiosmtplib

from mailtoaster.reflector.addresses import REDIRECT_SEPARATOR
from mailtoaster.verify.render import SPAM_LABEL, SUMMARY_LABELS

HEADER_READ_LIMIT = 64 * 1024
"""Octets of each new Maildir file read to find the report's In-Reply-To."""
POLL_INTERVAL = 0.2
"""Seconds between looks into the Maildir."""
GOOD_RESULTS = {"pass", "ham"}
ALSO_GOOD = {"ARC check": {"none"}}
"""A message straight from its author has no ARC chain to validate: ``none`` is the right answer."""
_SUMMARY_LINE = re.compile(
    r"^(" + "|".join(re.escape(label) for label in (*SUMMARY_LABELS.values(), SPAM_LABEL)) + r"):\s+(\S+)\s*$"
)
_IN_REPLY_TO = re.compile(rb"^In-Reply-To:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


class SelftestError(Exception):
    """The test could not be run (server unreachable, AUTH refused, no report in time): one line."""


@dataclass(frozen=True)
class SelftestPlan:
    host: str
    port: int
    user: str
    password: str
    reflector: str
    """Where the message goes: ``check-auth-<local>=<domain>@<domain>``."""
    maildir: Path
    """The user's Maildir, where the report arrives."""
    timeout: float
    verify_tls: bool
    """Check the server's certificate; off for loopback, where the certificate names another host."""


def reflector_address(local_part: str, user: str) -> str:
    """``check-auth-alice=example.org@example.org`` for alice@example.org: the report goes to her."""
    user_local, _, domain = user.rpartition("@")
    return f"{local_part}-{user_local}{REDIRECT_SEPARATOR}{domain}@{domain}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def selftest_message(user: str, recipient: str, now: float) -> tuple[str, bytes]:
    """(Message-ID, the message): a short plain-text message with every field a real one has."""
    domain = user.rpartition("@")[2]
    message_id = f"<selftest.{int(now)}.{secrets.token_hex(8)}@{domain}>"
    message = EmailMessage()
    message["From"] = user
    message["To"] = recipient
    message["Subject"] = f"mailtoaster selftest {formatdate(now, usegmt=True)}"
    message["Date"] = formatdate(now, localtime=True)
    message["Message-ID"] = message_id
    message.set_content(
        'This message was sent by "mailtoaster selftest" to this server\'s authentication reflector,\n'
        "which answers it with a report of every check: SPF, Sender ID, DomainKeys, DKIM, ADSP,\n"
        f"DMARC, ARC and the spam filter. Sent {formatdate(now, localtime=True)}.\n"
    )
    return message_id, message.as_bytes(policy=email.policy.SMTP)


async def submit(plan: SelftestPlan, message: bytes) -> None:
    """Send over submission with STARTTLS and AUTH; :class:`SelftestError` with the reason if not."""
    client = aiosmtplib.SMTP(
        hostname=plan.host,
        port=plan.port,
        timeout=min(plan.timeout, 30.0),
        start_tls=True,
        validate_certs=plan.verify_tls,
    )
    where = f"{plan.host}:{plan.port}"
    try:
        await client.connect()
        await client.login(plan.user, plan.password)
        await client.sendmail(plan.user, [plan.reflector], message)
    except aiosmtplib.SMTPAuthenticationError as error:
        raise SelftestError(
            f"{where} refused the login of {plan.user}: {error.code} {error.message}"
        ) from None
    except aiosmtplib.SMTPResponseException as error:
        raise SelftestError(f"{where} refused the message: {error.code} {error.message}") from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
        raise SelftestError(f"cannot submit to {where}: {_reason(error)}") from None
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())


class ReportWatch:
    """Looks for the report in a Maildir; each file is read once, however often it looks."""

    def __init__(self, maildir: Path, message_id: str) -> None:
        self._maildir = maildir
        self._wanted = message_id.encode("ascii")
        self._seen: set[str] = set()

    def find(self) -> bytes | None:
        for subdirectory in ("new", "cur"):
            folder = self._maildir / subdirectory
            try:
                names = sorted(entry.name for entry in folder.iterdir())
            except FileNotFoundError:
                continue
            for name in names:
                found = self._check(folder, name)
                if found is not None:
                    return found
        return None

    def _check(self, folder: Path, name: str) -> bytes | None:
        key = name.split(":", 1)[0]  # a file moved from new/ to cur/ gets ":2,..." appended
        if key in self._seen:
            return None
        self._seen.add(key)
        try:
            with (folder / name).open("rb") as handle:
                head = handle.read(HEADER_READ_LIMIT)
                match = _IN_REPLY_TO.search(head.split(b"\n\n", 1)[0])
                if match is None or match.group(1) != self._wanted:
                    return None
                return head + handle.read()
        except FileNotFoundError:  # moved to cur/ meanwhile: found there next time
            self._seen.discard(key)
            return None


async def wait_for_report(maildir: Path, message_id: str, timeout: float) -> bytes:
    watch = ReportWatch(maildir, message_id)
    deadline = time.monotonic() + timeout
    while True:
        found = watch.find()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise SelftestError(
                f"no report arrived in {maildir} within {timeout:g} s (is the reflector on? the server's "
                "log says why with 'reflector' lines)"
            )
        await asyncio.sleep(POLL_INTERVAL)


def report_text(raw: bytes) -> str:
    """The report's body as text (quoted-printable and charset decoded)."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    if not isinstance(parsed, EmailMessage):
        raise SelftestError("the report is not a readable message")
    part = parsed.get_body(preferencelist=("plain",))
    if part is None or not isinstance(part, EmailMessage):
        raise SelftestError("the report has no text part")
    content = part.get_content()
    return content if isinstance(content, str) else ""


def summary(text: str) -> list[tuple[str, str]]:
    """The summary lines of a report: (label, result) in order."""
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = _SUMMARY_LINE.match(line)
        if match is not None and match.group(1) not in {label for label, _ in found}:
            found.append((match.group(1), match.group(2)))
    return found


def failures(lines: Sequence[tuple[str, str]]) -> list[str]:
    """The summary lines that are neither pass nor ham (nor ARC's none), as ``Label: result``."""
    return [
        f"{label}: {result}"
        for label, result in lines
        if result not in GOOD_RESULTS and result not in ALSO_GOOD.get(label, set())
    ]


async def run_selftest(plan: SelftestPlan, now: float | None = None) -> str:
    """Send the test message and wait for its report; the report's text."""
    message_id, message = selftest_message(plan.user, plan.reflector, time.time() if now is None else now)
    started = time.monotonic()
    await submit(plan, message)
    remaining = max(plan.timeout - (time.monotonic() - started), 0.0)
    return report_text(await wait_for_report(plan.maildir, message_id, remaining))
