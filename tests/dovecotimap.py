"""Dovecot's IMAP server as a reference for tests: one ``imap`` process over a Maildir, driven like a client.

Debian's ``dovecot-imapd`` ships the protocol binary ``/usr/lib/dovecot/imap``. Run without the master
process, with ``USER`` and ``HOME`` in its environment, it starts already logged in (PREAUTH) and
speaks IMAP on its standard input and output: no listener, no authentication, no port. One process
serves a whole test (or module): commands are sent one at a time and each answer is read up to its
tagged status line, literals included, so a multi-megabyte ``BODY[]`` arrives intact.

:class:`DovecotImap` runs it; :func:`write_maildir` lays out a Maildir the way delivery does
(``cur/<n>.test,S=<size>:2,``); :func:`parse_fetch` turns ``* n FETCH (...)`` lines into items whose
values are kept as the exact bytes Dovecot sent, so a test can compare them byte for byte with what
mailtoaster renders (and :func:`string_value` decodes a quoted string or literal when it needs text).

Dovecot runs as an unprivileged user: under root the Maildir is handed to ``nobody`` first (the
directory holding it must be reachable, ``0o755``). A missing Dovecot skips through
``tests.peers.require`` (fails under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

DOVECOT_IMAP = Path("/usr/lib/dovecot/imap")
DEBIAN_PACKAGE = "dovecot-imapd"
ANSWER_TIMEOUT = 120
"""Seconds one command may take before the process is killed: a hang must end the test, not the suite."""

_LITERAL_AT_END = re.compile(rb"\{(\d+)\}\r\n$")
_FETCH_START = re.compile(rb"\* (\d+) FETCH \(")


class DovecotError(RuntimeError):
    """Dovecot stopped, timed out, or refused a command the test expected to work."""


def dovecot_problem() -> str | None:
    """None when Dovecot's imap binary can run, else why not (for ``tests.peers.require``)."""
    if not DOVECOT_IMAP.exists():
        return f"Dovecot is not installed ({DOVECOT_IMAP} missing; apt-get install {DEBIAN_PACKAGE})"
    return None


def write_maildir(root: Path, messages: Iterable[bytes]) -> list[Path]:
    """A Maildir at ``root`` holding ``messages`` in order, named as delivery names them in ``cur/``:
    ``<n>.test,S=<size>:2,`` (n from 1, so Dovecot's sequence numbers follow the order given)."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    paths = []
    for number, message in enumerate(messages, start=1):
        path = root / "cur" / f"{number}.test,S={len(message)}:2,"
        path.write_bytes(message)
        paths.append(path)
    return paths


def _hand_to_nobody(root: Path) -> tuple[str, str]:
    """The uid and gid Dovecot should run as; under root, ``root`` is chowned to them first."""
    if os.getuid() != 0:
        return str(os.getuid()), str(os.getgid())
    shutil.chown(root, "nobody", "nogroup")
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            shutil.chown(os.path.join(directory, name), "nobody", "nogroup")
    return "nobody", "nogroup"


@dataclass
class Answer:
    """Everything Dovecot said for one command: untagged responses (literals inlined) and the status."""

    untagged: list[bytes] = field(default_factory=list)
    status: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status.split(b" ", 2)[1:2] == [b"OK"]


class DovecotImap:
    """A running Dovecot imap process in PREAUTH mode over the Maildir at ``maildir``.

    ``workdir`` receives the configuration, Dovecot's home and its log (it must not be inside the
    Maildir). Indexes are kept in memory, so every run parses the messages afresh, as a new
    mailbox would, and nothing but Dovecot's ``dovecot-uidlist`` is written next to the mail.
    """

    def __init__(self, maildir: Path, workdir: Path) -> None:
        self.maildir = maildir
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(workdir, 0o755)
        owner, group = _hand_to_nobody(maildir)
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        _hand_to_nobody(home)
        config = workdir / "dovecot.conf"
        config.write_text(
            f"mail_location = maildir:{maildir}:INDEX=MEMORY\n"
            "log_path = /dev/stderr\nssl = no\n"
            f"mail_uid = {owner}\nmail_gid = {group}\nfirst_valid_uid = 1\nfirst_valid_gid = 1\n"
        )
        self._log = workdir / "dovecot.log"
        log = os.open(self._log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        environment = {"USER": "tester", "HOME": str(home), "PATH": os.environ.get("PATH", "")}
        try:
            self._process = subprocess.Popen(
                [str(DOVECOT_IMAP), "-c", str(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=environment,
            )
        finally:
            os.close(log)
        self._tag = 0
        greeting = self._read_response()
        if not greeting.startswith(b"* PREAUTH"):
            raise DovecotError(f"unexpected greeting {greeting!r}: {self.log()}")

    # -- the conversation --

    def command(self, text: str | bytes) -> Answer:
        """Send one command (without tag and CRLF) and read everything up to its tagged status."""
        self._tag += 1
        tag = f"t{self._tag}".encode()
        line = text.encode() if isinstance(text, str) else text
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(tag + b" " + line + b"\r\n")
        stdin.flush()
        answer = Answer()
        while True:
            response = self._read_response()
            if response.startswith(tag + b" "):
                answer.status = response
                return answer
            answer.untagged.append(response)

    def checked(self, text: str | bytes) -> Answer:
        """:meth:`command`, raising :class:`DovecotError` unless Dovecot answered OK."""
        answer = self.command(text)
        if not answer.ok:
            raise DovecotError(f"{text!r} failed: {answer.status!r}")
        return answer

    def select(self, mailbox: str = "INBOX") -> int:
        """SELECT ``mailbox``; how many messages it holds."""
        for response in self.checked(f"SELECT {mailbox}").untagged:
            found = re.fullmatch(rb"\* (\d+) EXISTS\r\n", response)
            if found:
                return int(found.group(1))
        raise DovecotError(f"SELECT {mailbox} reported no EXISTS")

    def fetch(self, sequence_set: str, items: str) -> dict[int, dict[str, bytes]]:
        """``FETCH sequence_set items``: for each message, item name → value bytes as sent."""
        answer = self.checked(f"FETCH {sequence_set} {items}")
        fetched: dict[int, dict[str, bytes]] = {}
        for response in answer.untagged:
            if _FETCH_START.match(response):
                number, found = parse_fetch(response)
                fetched.setdefault(number, {}).update(found)
        return fetched

    def search(self, criteria: str) -> list[int]:
        """``SEARCH criteria``: the message numbers Dovecot found, in its order."""
        numbers: list[int] = []
        for response in self.checked(f"SEARCH {criteria}").untagged:
            if response.startswith(b"* SEARCH"):
                numbers += [int(word) for word in response[len(b"* SEARCH") :].split()]
        return numbers

    def log(self) -> str:
        """What Dovecot logged so far (errors explain most refusals)."""
        return self._log.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        """LOGOUT and wait for the process; kill it if it does not go."""
        if self._process.poll() is None:
            with contextlib.suppress(DovecotError, OSError):
                self.command("LOGOUT")
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                stream.close()
        try:
            self._process.wait(ANSWER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> DovecotImap:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read_response(self) -> bytes:
        """One response: a line, and when it ends in ``{n}``, the literal and the rest, to the final CRLF."""
        stdout = self._process.stdout
        assert stdout is not None
        watchdog = threading.Timer(ANSWER_TIMEOUT, self._process.kill)
        watchdog.start()
        try:
            parts: list[bytes] = []
            while True:
                line = stdout.readline()
                if not line.endswith(b"\r\n"):
                    raise DovecotError(f"Dovecot stopped after {b''.join(parts)[-200:]!r}: {self.log()}")
                parts.append(line)
                literal = _LITERAL_AT_END.search(line)
                if literal is None:
                    return b"".join(parts)
                parts.append(_read_exactly(stdout, int(literal.group(1))))
        finally:
            watchdog.cancel()


def _read_exactly(stream: IO[bytes], count: int) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise DovecotError(f"literal cut short: {len(data)} of {count} bytes")
    return data


# -- reading FETCH responses ----------------------------------------------------------------------


def parse_fetch(response: bytes) -> tuple[int, dict[str, bytes]]:
    """``* n FETCH (NAME value NAME value ...)`` → (n, {NAME: value bytes exactly as sent}).

    A name keeps its section and origin (``BODY[HEADER.FIELDS (FROM)]``, ``BODY[]<0>``); a value is a
    whole atom, quoted string, literal (``{n}\\r\\n`` and its bytes) or parenthesised list.
    """
    start = _FETCH_START.match(response)
    if start is None:
        raise ValueError(f"not a FETCH response: {response[:60]!r}")
    position = start.end()
    items: dict[str, bytes] = {}
    while response[position : position + 1] != b")":
        name_end = _name_end(response, position)
        name = response[position:name_end].decode("ascii")
        value_end = value_span(response, name_end + 1)
        items[name] = response[name_end + 1 : value_end]
        position = value_end
        if response[position : position + 1] == b" ":
            position += 1
    return int(start.group(1)), items


def _name_end(data: bytes, position: int) -> int:
    """Where an item name ends: at the space before its value, brackets and ``<origin>`` included."""
    depth = 0
    while position < len(data):
        byte = data[position : position + 1]
        if byte == b"[":
            depth += 1
        elif byte == b"]":
            depth -= 1
        elif byte == b" " and depth == 0:
            return position
        position += 1
    raise ValueError("FETCH item name runs to the end")


def value_span(data: bytes, position: int) -> int:
    """The end offset of the IMAP value starting at ``position`` (atom, NIL, string, literal or list)."""
    first = data[position : position + 1]
    if first == b"(":
        position += 1
        while data[position : position + 1] != b")":
            if data[position : position + 1] == b" ":
                position += 1
                continue
            position = value_span(data, position)
        return position + 1
    if first == b'"':
        position += 1
        while data[position : position + 1] != b'"':
            position += 2 if data[position : position + 1] == b"\\" else 1
        return position + 1
    if first == b"{":
        close = data.index(b"}\r\n", position)
        return close + 3 + int(data[position + 1 : close])
    while position < len(data) and data[position : position + 1] not in (b" ", b")", b"\r"):
        position += 1
    return position


def string_value(value: bytes) -> bytes | None:
    """The content of a quoted string or literal value; None for NIL."""
    if value == b"NIL":
        return None
    if value.startswith(b"{"):
        return value[value.index(b"}\r\n") + 3 :]
    if value.startswith(b'"') and value.endswith(b'"'):
        return re.sub(rb"\\(.)", rb"\1", value[1:-1], flags=re.S)
    raise ValueError(f"not a string: {value[:40]!r}")


def fetch_all(
    server: DovecotImap, count: int, items: Sequence[str], batch: int = 200
) -> dict[int, dict[str, bytes]]:
    """FETCH ``items`` for messages 1..count in batches (one huge answer would be held twice in memory)."""
    fetched: dict[int, dict[str, bytes]] = {}
    for first in range(1, count + 1, batch):
        last = min(count, first + batch - 1)
        for number, found in server.fetch(f"{first}:{last}", f"({' '.join(items)})").items():
            fetched.setdefault(number, {}).update(found)
    return fetched
