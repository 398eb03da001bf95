"""Real IMAP clients and a real Dovecot server, for the IMAP server's acceptance tests and bench/imap.py.

Issue 6 asks for real clients over loopback, so these helpers drive the programs themselves, as a user
would, and read the results the way those programs leave them:

* :class:`DovecotServer` runs Dovecot's master process (``dovecot -F``) on a loopback port, with a
  passwd-file passdb and a static userdb whose one Maildir is the mailbox. Every client test runs
  against it too: a failure on ours that Dovecot does not share is the server's, not the harness's.
* :class:`Mbsync` writes an ``.mbsyncrc`` (the server as the far side, a local Maildir as the near
  side) and runs isync's ``mbsync``; :func:`near_maildir` reads that local Maildir back.
* :class:`TmuxMutt` runs mutt in a detached tmux session on a private socket, types into it with
  ``send-keys`` and reads the screen with ``capture-pane``, polling rather than sleeping.
* :func:`folder_state` reads a folder over imaplib (UIDs, flags, message bytes), so a test can compare
  what the server holds with what a client holds.

Under root Dovecot's mail processes run as ``nobody``: the Maildir is handed to it and everything it
must reach sits in a ``/tmp`` directory of mode 0755 (pytest's own temporary root is 0700).
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.dovecotimap import parse_fetch, string_value

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
DOVECOT = Path("/usr/sbin/dovecot")
CLIENT_TIMEOUT = 120.0
"""Seconds one client run (an mbsync, a wait for mutt's screen) may take: a hang must end the test,
not the suite. Nothing here is asserted against it."""
START_TIMEOUT = 30.0
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "spam" / "spamassassin-public"

MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
"""The Maildir info letters every Maildir program agrees on, and the IMAP system flags they stand for."""
SYSTEM_FLAGS = frozenset(MAILDIR_FLAGS.values())

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_TUID = re.compile(rb"^X-TUID: \S+\n", re.MULTILINE)
_DOVECOT_ERROR = re.compile(r": (Error|Fatal|Panic): ")
_FETCH_HEAD = re.compile(rb"^(\d+) \(")


class ClientError(RuntimeError):
    """A client or Dovecot did not do what the test drove it to do (with what it printed)."""


# -- availability -----------------------------------------------------------------------------------


def tool_problem(*names: str) -> str | None:
    """None when every program in ``names`` is on PATH, else which are missing (for ``require``)."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install isync mutt tmux dovecot-imapd)"
    return None


def dovecot_server_problem() -> str | None:
    """None when Dovecot's master process can run here, else why not."""
    if not DOVECOT.exists():
        return f"Dovecot is not installed ({DOVECOT} missing; apt-get install dovecot-imapd)"
    return None


def corpus_problem() -> str | None:
    """None when the SpamAssassin corpus (../shared/testdata) is there, else where it was looked for."""
    if not (CORPUS / "MANIFEST.tsv").exists():
        return f"the SpamAssassin corpus is not at {CORPUS}"
    return None


# -- messages --------------------------------------------------------------------------------------


def corpus_messages(count: int, *, max_size: int = 40_000) -> list[bytes]:
    """``count`` corpus messages, half ham and half spam, each as delivery stores it (LF, no mbox
    ``From `` line) and ``clean`` (see :func:`is_clean`), with distinct Message-IDs.

    The archives are streamed from their start, so this reads only as far as it needs."""
    archives = [CORPUS / "20030228_easy_ham.repack.tar.bz2", CORPUS / "20030228_spam.repack.tar.bz2"]
    wanted = [count - count // 2, count // 2]
    found: list[bytes] = []
    seen_ids: set[bytes] = set()
    for archive, number in zip(archives, wanted, strict=True):
        taken = 0
        for data in _archive_messages(archive):
            if taken == number:
                break
            message_id = message_id_of(data)
            if is_clean(data, max_size) and message_id is not None and message_id not in seen_ids:
                seen_ids.add(message_id)
                found.append(data)
                taken += 1
    if len(found) != count:
        raise ClientError(f"only {len(found)} usable corpus messages, {count} wanted")
    return found


def _archive_messages(archive: Path) -> Iterator[bytes]:
    with tarfile.open(archive, "r|bz2") as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                data = extracted.read()
                yield data.split(b"\n", 1)[1] if data.startswith(b"From ") else data


def is_clean(data: bytes, max_size: int) -> bool:
    """A message every program stores unchanged: LF line ends only (no CR to be turned into a line
    end), no NUL, ending in a line end, a header and a body, and not large."""
    return (
        len(data) <= max_size
        and b"\r" not in data
        and b"\0" not in data
        and data.endswith(b"\n")
        and b"\n\n" in data
    )


def message_id_of(data: bytes) -> bytes | None:
    """The Message-ID field's value (LF line ends), or None: how the tests tell messages apart."""
    found = _MESSAGE_ID.search(data.split(b"\n\n", 1)[0])
    return found.group(1) if found else None


def lf(data: bytes) -> bytes:
    """``data`` with CRLF line ends made LF: Maildirs hold LF, IMAP speaks CRLF."""
    return data.replace(b"\r\n", b"\n")


def without_tuid(data: bytes) -> bytes:
    """``data`` (LF) without the ``X-TUID`` field mbsync adds to every message it copies: its tag for
    finding a message again after an interrupted run, always the header's last field."""
    header, separator, body = data.partition(b"\n\n")
    return _TUID.sub(b"", header + b"\n")[:-1] + separator + body


def simple_message(
    subject: str, body: str, *, message_id: str, sender: str = "carol@remote.example"
) -> bytes:
    """A short plain-text message (LF line ends, as stored)."""
    return (
        f"From: Carol <{sender}>\nTo: Alice <alice@example.org>\nSubject: {subject}\n"
        f"Date: Mon, 30 Nov 2026 10:00:00 +0000\nMessage-ID: <{message_id}>\n"
        f"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n{body}\n"
    ).encode()


# -- an account and its folders over imaplib ---------------------------------------------------------


@dataclass(frozen=True)
class ImapAccount:
    """Where a client logs in: loopback, a port, and a user's address and password."""

    port: int
    user: str
    password: str
    host: str = LOOPBACK

    @contextlib.contextmanager
    def session(self) -> Iterator[imaplib.IMAP4]:
        """An imaplib client logged in with LOGIN (plain text: loopback only), logged out after."""
        client = imaplib.IMAP4(self.host, self.port, timeout=CLIENT_TIMEOUT)
        try:
            checked(client.login(self.user, self.password), "LOGIN")
            yield client
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                client.logout()


@dataclass(frozen=True)
class ServerMessage:
    """One message as the server holds it: system flags (``\\Recent`` left out) and its bytes (CRLF)."""

    flags: frozenset[str]
    data: bytes


def checked(answer: tuple[str, list[T]], what: str) -> list[T]:
    """The data of an imaplib answer, or :class:`ClientError` unless it was OK."""
    status, data = answer
    if status != "OK":
        raise ClientError(f"{what}: {status} {data!r}")
    return data


def quoted(name: str) -> str:
    """A mailbox name as an IMAP quoted string (imaplib sends arguments as they are given)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def folder_state(client: imaplib.IMAP4, folder: str) -> dict[int, ServerMessage]:
    """Every message of ``folder`` by UID, read with EXAMINE (so nothing changes, not even \\Recent)."""
    checked(client.select(quoted(folder), readonly=True), f"EXAMINE {folder}")
    data = checked(client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])"), f"UID FETCH in {folder}")
    state: dict[int, ServerMessage] = {}
    for response in fetch_responses(data):
        _number, items = parse_fetch(response)
        body = string_value(items["BODY[]"]) or b""
        state[int(items["UID"])] = ServerMessage(parse_flags(items["FLAGS"]) & SYSTEM_FLAGS, body)
    return state


def fetch_responses(data: Sequence[object]) -> list[bytes]:
    """imaplib's FETCH data put back together as whole ``* n FETCH (...)`` responses.

    imaplib hands out a response with literals as ``(head, literal)`` tuples followed by the rest of
    the line as bytes; a response without literals is one bytes item. Items are not in a fixed order
    (RFC 3501 §7.4.2), so the response is rebuilt and parsed as a whole rather than picked apart."""
    responses: list[bytes] = []
    after_literal = False
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):
            head, literal = item
            part = bytes(head) + b"\r\n" + bytes(literal)
        else:
            assert isinstance(item, bytes)
            part = item
        if after_literal:
            responses[-1] += part
        else:
            responses.append(_FETCH_HEAD.sub(rb"* \1 FETCH (", part, count=1))
        after_literal = isinstance(item, tuple)
    return responses


def parse_flags(value: bytes) -> frozenset[str]:
    """``(\\Seen \\Flagged)`` → {"\\Seen", "\\Flagged"}."""
    return frozenset(value.decode("ascii").strip("()").split())


def uid_of(state: dict[int, ServerMessage], data: bytes) -> int:
    """The UID of the message whose bytes are ``data`` (either line ending)."""
    uids = [uid for uid, message in state.items() if lf(message.data) == lf(data)]
    if len(uids) != 1:
        raise ClientError(f"{len(uids)} messages match, one expected")
    return uids[0]


def flag_letters(flags: Iterable[str]) -> str:
    """IMAP system flags as Maildir info letters, sorted as Maildir wants them."""
    letters = {flag: letter for letter, flag in MAILDIR_FLAGS.items()}
    return "".join(sorted(letters[flag] for flag in flags if flag in letters))


# -- Dovecot ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _dovecot_config(root: Path, port: int, maildir: Path, owner: str, group: str) -> str:
    """Plain-text LOGIN on loopback, the passwd-file ``root/passwd``, one static user whose mail is
    ``maildir``; base and state directories under ``root``, so nothing touches /etc or /run."""
    internal = "dovecot" if os.getuid() == 0 else owner
    login = "dovenull" if os.getuid() == 0 else owner
    return f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = {LOOPBACK}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login}
default_internal_user = {internal}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{maildir}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={owner} gid={group} home={root}/home
}}
service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def mail_owner() -> tuple[str, str]:
    """The user and group Dovecot's mail processes run as: ``nobody`` under root (Dovecot refuses
    uid 0), else whoever runs the tests."""
    if os.getuid() == 0:
        return "nobody", "nogroup"
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def hand_over(path: Path, owner: str, group: str) -> None:
    """Give ``path`` and everything under it to ``owner`` (only root can, and only root must)."""
    if os.getuid() != 0:
        return
    shutil.chown(path, owner, group)
    for directory, subdirectories, files in os.walk(path):
        for name in subdirectories + files:
            shutil.chown(os.path.join(directory, name), owner, group)


class DovecotServer:
    """``dovecot -F`` serving the Maildir ``root/home/Maildir`` to one user on a free loopback port.

    Make it, fill :attr:`maildir` (it does not exist yet), then :meth:`start`. The whole installation
    lives in a new directory under /tmp (Dovecot's socket paths must stay short, and its unprivileged
    processes must reach the Maildir); :meth:`close` stops Dovecot and removes it.
    """

    def __init__(self, user: str, password: str, *, stored_password: str | None = None) -> None:
        """``stored_password`` is the passwd-file's password field (``{SCHEME}...``); the default,
        ``{PLAIN}password``, costs nothing to check. bench/imap.py gives an ``{ARGON2ID}`` hash made
        with mailtoaster's own parameters, so both servers do the same work at LOGIN."""
        self.user = user
        self.password = password
        self.stored_password = stored_password or f"{{PLAIN}}{password}"
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-"))
        os.chmod(self.root, 0o755)
        for name in ("run", "state", "home"):
            (self.root / name).mkdir(mode=0o755)
        self.maildir = self.root / "home" / "Maildir"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def account(self) -> ImapAccount:
        return ImapAccount(self.port, self.user, self.password)

    @property
    def pid(self) -> int:
        if self._process is None:
            raise ClientError("Dovecot was not started")
        return self._process.pid

    def start(self) -> ImapAccount:
        """Start Dovecot over whatever :attr:`maildir` holds now; the account once it greets."""
        owner, group = mail_owner()
        self.maildir.mkdir(parents=True, exist_ok=True)
        hand_over(self.root / "home", owner, group)
        (self.root / "passwd").write_text(f"{self.user}:{self.stored_password}::::::\n")
        self.port = _free_port()
        config = self.root / "dovecot.conf"
        config.write_text(_dovecot_config(self.root, self.port, self.maildir, owner, group))
        with (self.root / "master.log").open("wb") as master_log:
            self._process = subprocess.Popen(
                [str(DOVECOT), "-F", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=master_log,
            )
        wait_for_greeting(self.port, self._process, log=self.log)
        return self.account

    def log(self) -> str:
        """Everything Dovecot wrote: the master's standard error, then its log file."""
        parts = []
        for name in ("master.log", "dovecot.log"):
            with contextlib.suppress(OSError):
                parts.append((self.root / name).read_text(errors="replace"))
        return "\n".join(parts)

    def errors(self) -> list[str]:
        """The lines Dovecot logged as errors so far (``Error:``, ``Fatal:``, ``Panic:``)."""
        return [line for line in self.log().splitlines() if _DOVECOT_ERROR.search(line)]

    def close(self) -> None:
        """Stop Dovecot (SIGTERM to the master, which stops its children) and remove its files."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_for_greeting(
    port: int,
    process: subprocess.Popen[bytes] | None = None,
    *,
    timeout: float = START_TIMEOUT,
    log: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``port`` until an IMAP greeting (``* OK``) arrives; :class:`ClientError` if ``process``
    ends or the time runs out (with ``log()``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ClientError(f"the server exited with {process.returncode}: {log()}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=5) as sock:
            if sock.recv(200).startswith(b"* OK"):
                return
        time.sleep(0.05)
    raise ClientError(f"no IMAP greeting on port {port} within {timeout:.0f} s: {log()}")


# -- mbsync ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NearMessage:
    """One message of mbsync's local Maildir: its file, its system flags, its bytes (LF)."""

    path: Path
    flags: frozenset[str]
    data: bytes


@dataclass(frozen=True)
class SyncRun:
    """One mbsync run: its exit status and everything it printed (it prints progress on stdout)."""

    returncode: int
    output: str


class Mbsync:
    """isync's ``mbsync`` between an IMAP account (far) and a local Maildir tree (near).

    The near store keeps the server's hierarchy as directories (``SubFolders Verbatim``: folder
    ``Archive/2024`` is ``near/Archive/2024``) with INBOX at ``near/INBOX``. ``SyncState *`` keeps
    mbsync's state inside each local folder, so the near tree is the whole of mbsync's memory.
    """

    def __init__(
        self, workdir: Path, account: ImapAccount, *, tls: str = "None", certificate: Path | None = None
    ) -> None:
        """``tls`` is mbsync's SSLType (``None``, ``STARTTLS``, ``IMAPS``); ``certificate`` the server's
        own certificate, which mbsync then trusts as it is (a direct match, whatever its issuer)."""
        self.workdir = workdir
        self.near = workdir / "near"
        self.near.mkdir(parents=True)
        self.config = workdir / "mbsyncrc"
        self.config.write_text(mbsync_config(account, self.near, tls=tls, certificate=certificate))

    def sync(self) -> SyncRun:
        """``mbsync -a`` once; the run, whatever its outcome (mbsync exits 1 on any error)."""
        done = subprocess.run(
            ["mbsync", "-V", "-c", str(self.config), "-a"],
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
            check=False,
            cwd=self.workdir,
            env={**os.environ, "HOME": str(self.workdir)},
        )
        output = (done.stdout + done.stderr).decode("utf-8", errors="replace")
        return SyncRun(done.returncode, output)

    def folder_path(self, folder: str) -> Path:
        """The local Maildir of server folder ``folder`` (hierarchy written with ``/``)."""
        return self.near / folder


def mbsync_config(
    account: ImapAccount, near: Path, *, tls: str = "None", certificate: Path | None = None
) -> str:
    """The ``.mbsyncrc``: IMAP LOGIN (in plain text with ``SSLType None``: loopback only), every folder
    (``Patterns *``), created, expunged and flagged both ways."""
    trust = f"CertificateFile {certificate}\n" if certificate is not None else ""
    return f"""\
IMAPAccount server
Host {account.host}
Port {account.port}
User {account.user}
Pass "{account.password}"
SSLType {tls}
{trust}AuthMechs LOGIN
Timeout 60

IMAPStore far
Account server

MaildirStore near
Path {near}/
Inbox {near}/INBOX
SubFolders Verbatim

Channel everything
Far :far:
Near :near:
Patterns *
Create Both
Expunge Both
Sync All
SyncState *
"""


def near_maildir(near: Path) -> dict[str, list[NearMessage]]:
    """mbsync's local tree: folder name (``INBOX``, ``Archive/2024``) → its messages."""
    folders: dict[str, list[NearMessage]] = {}
    for cur in sorted(near.rglob("cur")):
        folder = cur.parent.relative_to(near).as_posix()
        folders[folder] = [
            NearMessage(path, maildir_flags_of(path.name), path.read_bytes())
            for sub in ("new", "cur")
            for path in sorted((cur.parent / sub).iterdir())
        ]
    return folders


def maildir_flags_of(name: str) -> frozenset[str]:
    """The system flags in a Maildir file name's ``:2,`` info (none for a file in ``new/``)."""
    _base, separator, info = name.partition(":2,")
    if not separator:
        return frozenset()
    return frozenset(MAILDIR_FLAGS[letter] for letter in info if letter in MAILDIR_FLAGS)


def set_maildir_flags(path: Path, flags: Iterable[str]) -> Path:
    """Rename a Maildir file so its info holds ``flags``, as a mail reader does (into ``cur/``)."""
    base = path.name.partition(":2,")[0]
    target = path.parent.parent / "cur" / f"{base}:2,{flag_letters(flags)}"
    path.rename(target)
    return target


def add_near_message(folder: Path, data: bytes, name: str) -> Path:
    """A new message written into a local Maildir the way a local mail reader files one: in
    ``tmp/``, then renamed into ``new/``."""
    temporary = folder / "tmp" / name
    temporary.write_bytes(data)
    final = folder / "new" / name
    temporary.rename(final)
    return final


# -- mutt in tmux ----------------------------------------------------------------------------------


def mutt_config(account: ImapAccount, workdir: Path) -> str:
    """A muttrc for ``account`` that never stops to ask: no TLS (loopback; ``ssl_starttls=no`` even
    when STARTTLS is offered), no caches, saving and purging without confirmation."""
    return f"""\
set imap_user = "{account.user}"
set imap_pass = "{account.password}"
set folder = "imap://{account.host}:{account.port}/"
set spoolfile = "+INBOX"
set ssl_starttls = no
set ssl_force_tls = no
set header_cache = ""
set message_cachedir = ""
set certificate_file = "{workdir}/certificates"
set tmpdir = "{workdir}"
set record = ""
set postponed = "+Drafts"
set mbox = "+INBOX"
set move = no
set confirmappend = no
set confirmcreate = no
set delete = yes
set quit = yes
set mark_old = no
set wait_key = no
set imap_idle = no
set imap_passive = yes
set mail_check = 3600
set timeout = 3600
set sort = date-sent
set pager_index_lines = 0
set pager_stop = yes
set charset = "utf-8"
"""


class TmuxMutt:
    """mutt in a detached tmux session on a socket of its own (no other tmux server is touched).

    :meth:`keys` types (``send-keys``), :meth:`wait_for` polls the screen (``capture-pane``) until a
    pattern shows, :meth:`wait_exit` until mutt has quit (its session then ends by itself).
    """

    SESSION = "mutt"

    def __init__(self, workdir: Path, account: ImapAccount, *, width: int = 160, height: int = 45) -> None:
        self.workdir = workdir
        self.socket = workdir / "tmux.sock"
        muttrc = workdir / "muttrc"
        muttrc.write_text(mutt_config(account, workdir))
        command = f"mutt -n -F {shlex.quote(str(muttrc))}"
        self._tmux(
            "-f", "/dev/null", "new-session", "-d", "-s", self.SESSION,
            "-x", str(width), "-y", str(height), command,
        )  # fmt: skip

    def _tmux(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "HOME": str(self.workdir), "TERM": "xterm-256color"}
        environment.pop("TMUX", None)
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), *arguments],
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
            env=environment,
            check=False,
        )
        if check and done.returncode != 0:
            raise ClientError(f"tmux {' '.join(arguments)}: {done.stderr.strip()}")
        return done

    def running(self) -> bool:
        return self._tmux("has-session", "-t", self.SESSION, check=False).returncode == 0

    def screen(self) -> str:
        """What the terminal shows now ("" once mutt has quit)."""
        done = self._tmux("capture-pane", "-p", "-t", self.SESSION, check=False)
        return done.stdout if done.returncode == 0 else ""

    def keys(self, *keys: str, literal: bool = False) -> None:
        """Press ``keys``: tmux key names (``Enter``, ``C-u``), or text typed as is with ``literal``."""
        self._tmux("send-keys", "-t", self.SESSION, *(["-l"] if literal else []), *keys)

    def type(self, text: str) -> None:
        self.keys(text, literal=True)

    def wait_for(self, pattern: str, timeout: float = CLIENT_TIMEOUT) -> str:
        """The screen once ``pattern`` (a regular expression) shows on it; :class:`ClientError` with the
        last screen if it does not within ``timeout`` or mutt quits."""
        expression = re.compile(pattern, re.MULTILINE)
        return self._wait(
            lambda screen: expression.search(screen) is not None, f"{pattern!r} to show", timeout
        )

    def wait_gone(self, pattern: str, timeout: float = CLIENT_TIMEOUT) -> str:
        """The screen once ``pattern`` no longer shows on it (a line mutt removed after a sync)."""
        expression = re.compile(pattern, re.MULTILINE)
        return self._wait(lambda screen: expression.search(screen) is None, f"{pattern!r} to go", timeout)

    def _wait(self, condition: Callable[[str], bool], what: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if self.running() and condition(screen):
                return screen
            if not self.running():
                raise ClientError(f"mutt quit while waiting for {what}; last screen:\n{screen}")
            time.sleep(0.1)
        raise ClientError(f"waited {timeout:.0f} s for {what}; the screen:\n{screen}")

    def wait_exit(self, timeout: float = CLIENT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return
            time.sleep(0.1)
        raise ClientError(f"mutt did not quit within {timeout:.0f} s; the screen:\n{self.screen()}")

    def close(self) -> None:
        """End the tmux server of this socket (only ours), if mutt has not ended it already."""
        if self.socket.exists():
            self._tmux("kill-server", check=False)

    def __enter__(self) -> TmuxMutt:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
