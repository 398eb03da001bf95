"""Real IMAP clients against the IMAP server over loopback (issue 6): isync's mbsync synchronising a
whole mailbox down to a local Maildir and back with changes on both sides, and mutt, driven in tmux,
reading a message and moving it to Junk.

Those two run against ``mailtoaster serve`` and against Dovecot (``dovecot -F`` over the same kind of
Maildir, see tests/imapclients.py). The Dovecot run is the reference: it shows the harness and the
clients do what the test expects, so a failure only on mailtoaster is the server's. They log in with
plain-text LOGIN, which the server allows on loopback when configured to; a third test has mbsync log
in over STARTTLS and over implicit TLS with plain text not allowed, trusting the server's own
self-signed certificate.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailtoaster.store import Maildir
from tests.imapclients import (
    START_TIMEOUT,
    DovecotServer,
    ImapAccount,
    Mbsync,
    NearMessage,
    ServerMessage,
    TmuxMutt,
    add_near_message,
    checked,
    corpus_messages,
    corpus_problem,
    dovecot_server_problem,
    folder_state,
    lf,
    message_id_of,
    near_maildir,
    quoted,
    set_maildir_flags,
    simple_message,
    tool_problem,
    uid_of,
    wait_for_greeting,
    without_tuid,
)
from tests.peers import require
from tests.serverharness import ALICE, ALICE_PASSWORD, free_port
from tests.serverprocess import LOG_RECORD, ServerProcess, TomlValue, prepare_installation

Populate = Callable[[Maildir], None]

SERVER_FOLDERS = {"INBOX": 20, "Junk": 10, "Archive": 8, "Archive.2024": 12}
"""Where the 50 messages of the mbsync test start: INBOX, Junk, a folder and its subfolder."""
SEEN, FLAGGED, ANSWERED = "\\Seen", "\\Flagged", "\\Answered"


# -- the servers -----------------------------------------------------------------------------------


@dataclass
class ServerUnderTest:
    """A server that serves ALICE's Maildir: fill it with ``populate``, then :meth:`start` it.
    ``errors()`` is what it logged as an error so far: a client that copes with a server's failure
    must not hide it."""

    name: str
    start: Callable[[Populate], ImapAccount]
    errors: Callable[[], list[str]]


@pytest.fixture(params=["mailtoaster", "dovecot"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerUnderTest]:
    if request.param == "dovecot":
        require(dovecot_server_problem())
        with DovecotServer(ALICE, ALICE_PASSWORD) as dovecot:
            yield ServerUnderTest(
                "dovecot", lambda populate: _start_dovecot(dovecot, populate), dovecot.errors
            )
    else:
        with mailtoaster_server(tmp_path / "server") as started:
            yield started


def _start_dovecot(dovecot: DovecotServer, populate: Populate) -> ImapAccount:
    populate(Maildir(dovecot.maildir))
    return dovecot.start()


@contextlib.contextmanager
def mailtoaster_server(root: Path, *, tls_port: str = "") -> Iterator[ServerUnderTest]:
    """``mailtoaster serve`` as a child process (tests/serverprocess.py's installation: ALICE and her
    password), IMAP on a free loopback port with plain-text LOGIN allowed there, IMAPS off.

    ``tls_port`` ``"imap"`` or ``"imaps"``: plain-text LOGIN is not allowed, IMAPS is on, and the
    account returned is on that port (STARTTLS, or TLS from the first byte)."""
    ports = {"imap": free_port(), "imaps": free_port() if tls_port else 0}
    settings: dict[str, TomlValue] = {
        "imap_port": ports["imap"],
        "imaps_port": ports["imaps"],
        "allow_plaintext_on_loopback": not tls_port,
    }
    setup = prepare_installation(root, sink_port=free_port(), overrides={"imap": settings})
    with ServerProcess(setup.config_file, cwd=root) as process:

        def start(populate: Populate) -> ImapAccount:
            populate(Maildir(setup.maildir(ALICE)))
            process.start()
            wait_for_greeting(ports["imap"], timeout=START_TIMEOUT)
            return ImapAccount(ports[tls_port or "imap"], ALICE, ALICE_PASSWORD)

        def errors() -> list[str]:
            return [line for line in process.log_lines if is_error_line(line)]

        yield ServerUnderTest("mailtoaster", start, errors)


def is_error_line(line: str) -> bool:
    """A line of ``mailtoaster serve``'s standard error that reports a failure: a log record at
    ERROR or above, or a traceback."""
    record = LOG_RECORD.match(line)
    return line.startswith("Traceback") or (record is not None and record.group(1) in ("ERROR", "CRITICAL"))


# -- mbsync ----------------------------------------------------------------------------------------


def layout(messages: list[bytes]) -> dict[str, list[bytes]]:
    """The messages dealt out over :data:`SERVER_FOLDERS`, in order."""
    dealt: dict[str, list[bytes]] = {}
    position = 0
    for folder, count in SERVER_FOLDERS.items():
        dealt[folder] = messages[position : position + count]
        position += count
    return dealt


def deliver_all(dealt: dict[str, list[bytes]]) -> Populate:
    """A populate step delivering ``dealt`` the way SMTP delivery does (``Maildir.deliver``: ``new/``,
    no flags); ``Archive`` is created first so that it is a real folder, not only a parent."""

    def populate(box: Maildir) -> None:
        box.ensure()
        box.create_folder("Archive")
        for folder, messages in dealt.items():
            for data in messages:
                box.deliver(io.BytesIO(data), folder=None if folder == "INBOX" else folder)

    return populate


Contents = dict[str, Counter[tuple[str, str]]]
"""Folder → the multiset of (message, flags) as short text: a failed comparison shows which message
differs, while the digest in :func:`label` still holds every byte to account."""


def label(data: bytes) -> str:
    """A message as its Message-ID and a digest of its bytes with LF line ends and no ``X-TUID``."""
    normalised = without_tuid(lf(data))
    message_id = (message_id_of(normalised) or b"(no Message-ID)").decode("ascii", "replace")
    return f"{message_id} sha256:{hashlib.sha256(normalised).hexdigest()[:16]}"


def flag_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


def server_contents(account: ImapAccount, folders: list[str]) -> Contents:
    with account.session() as client:
        return {folder: _summary(folder_state(client, folder).values()) for folder in folders}


def near_contents(mbsync: Mbsync) -> Contents:
    return {
        folder.replace("/", "."): _summary(messages) for folder, messages in near_maildir(mbsync.near).items()
    }


def _summary(messages: Iterable[ServerMessage | NearMessage]) -> Counter[tuple[str, str]]:
    return Counter((label(message.data), flag_text(message.flags)) for message in messages)


def expected_contents(dealt: dict[str, list[bytes]], flags: dict[bytes, frozenset[str]]) -> Contents:
    return {
        folder: Counter((label(data), flag_text(flags.get(data, frozenset()))) for data in messages)
        for folder, messages in dealt.items()
    }


def test_mbsync_synchronises_a_whole_mailbox_down_and_back(server: ServerUnderTest, tmp_path: Path) -> None:
    """mbsync copies every folder down byte for byte (a subfolder included), then carries changes made
    on both sides between two runs each way (flags, deletions, new messages) until the server and the
    local Maildir hold the same messages with the same flags; a third run has nothing left to do.

    mbsync adds an ``X-TUID`` header field to every message it copies (its crash-recovery tag), so
    messages are compared with that one line taken out, and with LF line ends."""
    require(tool_problem("mbsync"))
    require(corpus_problem())
    messages = corpus_messages(53)
    dealt = layout(messages[:50])
    local_new, server_new, server_new_folder = messages[50], messages[51], "Archive.2024"
    account = server.start(deliver_all(dealt))
    mbsync = Mbsync(tmp_path / "client", account)
    folders = list(SERVER_FOLDERS)

    first = mbsync.sync()
    assert first.returncode == 0, first.output
    assert near_contents(mbsync) == expected_contents(dealt, {}), "the first sync copies every message"

    # Changes on the near side: flag one message, delete one, file a new one (already read).
    near_inbox = {message_id_of(m.data): m for m in near_maildir(mbsync.near)["INBOX"]}
    flagged_locally, deleted_locally = dealt["INBOX"][0], dealt["INBOX"][1]
    set_maildir_flags(near_inbox[message_id_of(flagged_locally)].path, [FLAGGED])
    near_inbox[message_id_of(deleted_locally)].path.unlink()
    added = add_near_message(mbsync.folder_path("INBOX"), local_new, "1796000000.M1P1.laptop")
    set_maildir_flags(added, [SEEN])

    # Changes on the server: answer one message, expunge one from Junk, append one to a subfolder.
    answered_on_server, expunged_on_server = dealt["INBOX"][2], dealt["Junk"][0]
    with account.session() as client:
        inbox = folder_state(client, "INBOX")
        checked(client.select("INBOX"), "SELECT INBOX")
        uid = uid_of(inbox, answered_on_server)
        checked(client.uid("STORE", str(uid), "+FLAGS.SILENT", f"({SEEN} {ANSWERED})"), "STORE")
        junk = folder_state(client, "Junk")
        checked(client.select("Junk"), "SELECT Junk")
        checked(
            client.uid("STORE", str(uid_of(junk, expunged_on_server)), "+FLAGS.SILENT", "(\\Deleted)"),
            "STORE",
        )
        checked(client.expunge(), "EXPUNGE")
        checked(
            client.append(quoted(server_new_folder), f"({FLAGGED})", None, server_new),
            f"APPEND {server_new_folder}",
        )

    second = mbsync.sync()
    assert second.returncode == 0, second.output

    expected_folders = {folder: list(data) for folder, data in dealt.items()}
    expected_folders["INBOX"].remove(deleted_locally)
    expected_folders["INBOX"].append(local_new)
    expected_folders["Junk"].remove(expunged_on_server)
    expected_folders[server_new_folder].append(server_new)
    expected_flags = {
        flagged_locally: frozenset({FLAGGED}),
        local_new: frozenset({SEEN}),
        answered_on_server: frozenset({SEEN, ANSWERED}),
        server_new: frozenset({FLAGGED}),
    }
    expected = expected_contents(expected_folders, expected_flags)
    assert near_contents(mbsync) == expected, "the local Maildir has the server's changes"
    assert server_contents(account, folders) == expected, "the server has the local changes"

    before = (_near_files(mbsync), _server_uids(account, folders))
    third = mbsync.sync()
    assert third.returncode == 0, third.output
    assert (_near_files(mbsync), _server_uids(account, folders)) == before, "a third sync changes nothing"
    assert server.errors() == []


def _near_files(mbsync: Mbsync) -> set[str]:
    """Every file of the local tree but mbsync's own state (it rewrites that on every run)."""
    return {
        str(path.relative_to(mbsync.near))
        for path in mbsync.near.rglob("*")
        if path.is_file() and not path.name.startswith(".mbsyncstate") and path.name != ".uidvalidity"
    }


def _server_uids(
    account: ImapAccount, folders: list[str]
) -> dict[str, tuple[str, dict[int, frozenset[str]]]]:
    """Per folder: UIDVALIDITY and UIDNEXT (an APPEND would move it) and every UID with its flags."""
    found = {}
    with account.session() as client:
        for folder in folders:
            status = checked(client.status(quoted(folder), "(UIDNEXT UIDVALIDITY)"), f"STATUS {folder}")
            state = folder_state(client, folder)
            found[folder] = (repr(status[0]), {uid: message.flags for uid, message in state.items()})
    return found


@pytest.mark.parametrize(("tls_port", "ssl_type"), [("imap", "STARTTLS"), ("imaps", "IMAPS")])
def test_mbsync_copies_a_mailbox_over_tls(tmp_path: Path, tls_port: str, ssl_type: str) -> None:
    """With plain-text login not allowed, mbsync logs in over STARTTLS on the IMAP port and over
    implicit TLS on the IMAPS port, trusting the server's self-signed certificate
    (``<data_dir>/tls/cert.pem``, made at the first start), and copies every folder byte for byte."""
    require(tool_problem("mbsync"))
    require(corpus_problem())
    messages = corpus_messages(6)
    dealt = {"INBOX": messages[:4], "Junk": messages[4:]}
    with mailtoaster_server(tmp_path / "server", tls_port=tls_port) as server:
        account = server.start(deliver_all_flat(dealt))
        certificate = tmp_path / "server" / "var" / "tls" / "cert.pem"
        mbsync = Mbsync(tmp_path / "client", account, tls=ssl_type, certificate=certificate)
        run = mbsync.sync()
        assert run.returncode == 0, run.output
        assert "sent in the clear" not in run.output, run.output
        assert near_contents(mbsync) == expected_contents(dealt, {})
        assert server.errors() == []


def deliver_all_flat(dealt: dict[str, list[bytes]]) -> Populate:
    """A populate step delivering ``dealt`` (INBOX and top-level folders) as SMTP delivery does."""

    def populate(box: Maildir) -> None:
        for folder, messages in dealt.items():
            for data in messages:
                box.deliver(io.BytesIO(data), folder=None if folder == "INBOX" else folder)

    return populate


# -- mutt ------------------------------------------------------------------------------------------

TARGET_SUBJECT = "Invoice 4711 overdue"
TARGET_BODY = "Please wire 4,711 euros to the account below by Friday."
MUTT_INBOX = [
    simple_message(
        "Minutes of the Tuesday meeting", "Present: everyone but Bob.", message_id="m1@remote.example"
    ),
    simple_message(TARGET_SUBJECT, TARGET_BODY, message_id="m2@remote.example"),
    simple_message("Lunch on Friday?", "The usual place at noon?", message_id="m3@remote.example"),
]
MUTT_JUNK = [simple_message("You have won", "Claim your prize now.", message_id="m4@remote.example")]


def fill_for_mutt(box: Maildir) -> None:
    box.ensure()
    for data in MUTT_INBOX:
        box.deliver(io.BytesIO(data))
    for data in MUTT_JUNK:
        box.deliver(io.BytesIO(data), folder="Junk")


def test_mutt_reads_a_message_and_moves_it_to_junk(server: ServerUnderTest, tmp_path: Path) -> None:
    """mutt, headless in tmux, lists INBOX, opens a message (its header and body on screen), saves it to
    =Junk and purges it from INBOX; the server then holds it in Junk, unchanged, and not in INBOX."""
    require(tool_problem("mutt", "tmux"))
    account = server.start(fill_for_mutt)
    workdir = tmp_path / "mutt"
    workdir.mkdir()
    with TmuxMutt(workdir, account) as mutt:
        index = mutt.wait_for(r"Lunch on Friday\?")
        assert TARGET_SUBJECT in index and "Minutes of the Tuesday meeting" in index, index
        mutt.type("/")
        mutt.wait_for(r"Search for:")
        mutt.type("~s 4711")
        mutt.keys("Enter")
        mutt.keys("Enter")  # display-message
        pager = mutt.wait_for(r"Please wire 4,711 euros")
        assert f"Subject: {TARGET_SUBJECT}" in pager, pager
        mutt.keys("i")  # back to the index, the cursor still on the message
        mutt.wait_for(r"Minutes of the Tuesday meeting")
        mutt.type("s")
        mutt.wait_for(r"Save to mailbox")
        mutt.keys("C-u")
        mutt.type("=Junk")
        mutt.keys("Enter")
        mutt.wait_for(rf"^.*\bD\b.*{re.escape(TARGET_SUBJECT)}")  # saved, so marked deleted in INBOX
        mutt.type("$")
        mutt.wait_gone(re.escape(TARGET_SUBJECT))
        mutt.type("q")
        mutt.wait_exit()

    with account.session() as client:
        inbox = folder_state(client, "INBOX")
        junk = folder_state(client, "Junk")
    assert sorted(lf(message.data) for message in inbox.values()) == sorted([MUTT_INBOX[0], MUTT_INBOX[2]])
    assert sorted(lf(message.data) for message in junk.values()) == sorted([MUTT_JUNK[0], MUTT_INBOX[1]])
    moved = next(message for message in junk.values() if lf(message.data) == MUTT_INBOX[1])
    assert "\\Seen" in moved.flags, "mutt read the message before saving it"
    assert server.errors() == []
