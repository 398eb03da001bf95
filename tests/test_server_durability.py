"""``mailtoaster serve`` as a real process: SIGKILL under load loses and duplicates nothing that was
acknowledged; SIGTERM finishes the transaction in flight; SIGHUP reloads the rules; startup errors are
one line and exit 2. See docs/durability.md for what is promised and why remote mail is at least once.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
import signal
import smtplib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailtoaster.cli import main as cli_main
from mailtoaster.queue import queue_directory
from tests.serverharness import ALICE, BOB, RELAY_CLIENT, REMOTE, RULES, STRANGER, Sink, free_port
from tests.serverprocess import (
    ServerProcess,
    ServerSetup,
    greeting,
    prepare_installation,
    queue_listing,
    read_reply_line,
    refuses_connections,
    remote_sink,
    wait_until,
)

NUMBER_FIELD = "X-Durability-Number"
CHECKSUM_PREFIX = "checksum "
LOCAL_SENDER = "someone@sender.example"

LOAD_SEED = 20261130
LOAD_SECONDS = 22.0
"""The load runs at most this long; the kills happen inside it."""
MAX_KILLS = 8
MIN_KILLS = 5
"""Fewer kills than this within :data:`LOAD_SECONDS` (a very slow machine) would prove too little."""
KILL_GAP_SECONDS = (0.3, 2.0)
"""How long the server runs (after its welcome) before the next SIGKILL: drawn from this range, so
some kills land while the restarted server is still recovering and its clients are reconnecting."""
LOAD_CLIENTS = 4
DRAIN_SECONDS = 20.0


# -- numbered messages ---------------------------------------------------------------------------


class HalfWrittenError(AssertionError):
    """A stored message that is not exactly the message sent: truncated, mangled or unnumbered."""


def body_lines(number: int) -> list[str]:
    """A body that is a function of the number alone, 2 to 40 KB, so that a stored copy can be
    compared with what was sent; the line count varies so that kills land at different offsets."""
    count = 30 + (number * 37) % 550
    return [f"{number:07d} line {index:04d} " + "abcdefghij" * 5 for index in range(count)]


def checksum_line(lines: Iterable[str]) -> str:
    return CHECKSUM_PREFIX + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def numbered_message(number: int, sender: str, recipient: str) -> bytes:
    lines = body_lines(number)
    headers = [
        f"From: <{sender}>",
        f"To: <{recipient}>",
        f"Subject: durability {number}",
        f"Message-ID: <durability.{number}@sender.example>",
        "Date: Mon, 30 Nov 2026 10:00:00 +0000",
        f"{NUMBER_FIELD}: {number}",
    ]
    return "\r\n".join([*headers, "", *lines, checksum_line(lines), ""]).encode()


def stored_number(raw: bytes) -> int:
    """The number of a stored or received copy (LF or CRLF line ends, trace fields on top), after
    checking that its body is the whole body that was sent, checksum line last."""
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n")
    header, separator, body = text.partition("\n\n")
    numbers = [line.split(":", 1)[1].strip() for line in header.split("\n") if line.startswith(NUMBER_FIELD)]
    if not separator or len(numbers) != 1 or not numbers[0].isdigit():
        raise HalfWrittenError(f"no single {NUMBER_FIELD} field in the header section")
    number = int(numbers[0])
    *lines, last = body.rstrip("\n").split("\n")
    if last != checksum_line(lines):
        raise HalfWrittenError(f"message {number}: checksum line missing or wrong ({len(raw)} bytes)")
    if lines != body_lines(number):
        raise HalfWrittenError(f"message {number}: the body is not the one sent")
    return number


def maildir_numbers(maildir: Path) -> list[int]:
    """The number of every message in new/ and cur/ of the Maildir and all its folders; tmp/ holds
    deliveries that never finished and does not count."""
    files = [path for path in maildir.rglob("*") if path.is_file() and path.parent.name in ("new", "cur")]
    return [stored_number(path.read_bytes()) for path in files]


# -- the load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """Who sends a numbered message from where to whom."""

    source: str
    sender: str
    recipient: str


ROUTES = (
    Route(STRANGER, LOCAL_SENDER, ALICE),
    Route(STRANGER, LOCAL_SENDER, BOB),
    Route(RELAY_CLIENT, ALICE, REMOTE),
)


class Ledger:
    """Which numbers the clients sent where, and which got 250 after DATA. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self.routes: dict[int, Route] = {}
        self.acknowledged: set[int] = set()
        self.failures: Counter[str] = Counter()

    def next_number(self, route: Route) -> int:
        with self._lock:
            number = next(self._numbers)
            self.routes[number] = route
            return number

    def record(self, number: int, error: BaseException | None) -> None:
        with self._lock:
            if error is None:
                self.acknowledged.add(number)
            else:
                self.failures[type(error).__name__] += 1

    def acknowledged_to(self, recipient: str) -> set[int]:
        return {number for number in self.acknowledged if self.routes[number].recipient == recipient}

    def sent_to(self, recipient: str) -> set[int]:
        return {number for number, route in self.routes.items() if route.recipient == recipient}


def send_numbered(server: ServerProcess, ledger: Ledger, route: Route) -> None:
    """One connection, one message; the number counts as acknowledged only if DATA got 250. A number
    is never sent twice: a failed message is not retried, so a copy of it in a mailbox is not a
    duplicate but an acceptance whose 250 the kill cut off."""
    ports = server.ports
    if ports is None:
        time.sleep(0.02)  # restarting
        return
    try:
        client = smtplib.SMTP("127.0.0.1", ports.smtp, source_address=(route.source, 0), timeout=10)
    except (smtplib.SMTPException, OSError):
        time.sleep(0.02)  # killed, or not listening yet
        return
    number = ledger.next_number(route)
    message = numbered_message(number, route.sender, route.recipient)
    try:
        with contextlib.closing(client):
            client.ehlo("client.sender.example")
            client.sendmail(route.sender, [route.recipient], message)
    except (smtplib.SMTPException, OSError) as error:
        ledger.record(number, error)
    else:
        ledger.record(number, None)


@contextlib.contextmanager
def load(server: ServerProcess, ledger: Ledger, clients: int) -> Iterator[None]:
    """``clients`` threads sending numbered messages, each cycling through the routes, until the
    block ends."""
    stop = threading.Event()

    def client_loop(offset: int) -> None:
        routes = itertools.islice(itertools.cycle(ROUTES), offset, None)
        while not stop.is_set():
            send_numbered(server, ledger, next(routes))

    threads = [
        threading.Thread(target=client_loop, args=(index,), name=f"load-{index}") for index in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def kill_repeatedly(server: ServerProcess, ledger: Ledger, rng: random.Random) -> int:
    """Under load, SIGKILL the server after a random time and start it again on the same data, up to
    :data:`MAX_KILLS` times within :data:`LOAD_SECONDS`; the number of kills."""
    deadline = time.monotonic() + LOAD_SECONDS
    kills = 0
    with load(server, ledger, LOAD_CLIENTS):
        while kills < MAX_KILLS:
            gap = rng.uniform(*KILL_GAP_SECONDS)
            if time.monotonic() + gap > deadline:
                break
            time.sleep(gap)
            server.restart()
            kills += 1
        time.sleep(1.0)  # mail also flows through the last incarnation
    return kills


# -- counting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Census:
    """Where each number ended up: per local mailbox, at the remote sink, still in the queue."""

    mailboxes: dict[str, Counter[int]]
    sink: Counter[int]
    queued: Counter[int]
    tmp_files: int
    """Files left in Maildir tmp/ directories: deliveries a kill interrupted (they never count)."""


def take_census(setup: ServerSetup, sink: Sink) -> Census:
    mailboxes = {address: Counter(maildir_numbers(setup.maildir(address))) for address in (ALICE, BOB)}
    received = Counter(stored_number(content) for _, _, content in list(sink.messages))
    messages = queue_directory(setup.data_dir) / "messages"
    queued = Counter(
        stored_number((messages / entry["id"]).read_bytes()) for entry in queue_listing(setup.data_dir)
    )
    tmp_files = sum(
        1 for address in (ALICE, BOB) for path in setup.maildir(address).rglob("tmp/*") if path.is_file()
    )
    return Census(mailboxes, received, queued, tmp_files)


def duplicates(counts: Counter[int]) -> list[int]:
    return sorted(number for number, count in counts.items() if count > 1)


# -- the tests -----------------------------------------------------------------------------------


def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    ledger = Ledger()
    with remote_sink() as (sink, sink_port):
        setup = prepare_installation(tmp_path, sink_port=sink_port)
        with ServerProcess(setup.config_file, cwd=tmp_path) as server:
            server.start()
            kills = kill_repeatedly(server, ledger, random.Random(LOAD_SEED))
            drained = wait_until(lambda: not queue_listing(setup.data_dir), DRAIN_SECONDS, interval=0.3)
            server.send_signal(signal.SIGTERM)
            assert server.wait().returncode == 0
        census = take_census(setup, sink)
    remote_acknowledged = ledger.acknowledged_to(REMOTE)
    remote_duplicates = duplicates(census.sink)
    print(
        f"kills={kills} sent={len(ledger.routes)} acknowledged={len(ledger.acknowledged)} "
        f"failures={dict(ledger.failures)} maildir_tmp_leftovers={census.tmp_files} "
        f"remote_received={sum(census.sink.values())} remote_duplicates={remote_duplicates} "
        f"still_queued={sorted(census.queued)}"
    )
    assert kills >= MIN_KILLS
    assert sum(ledger.failures.values()) > 0, "no kill interrupted a transaction: the load was too light"
    assert len(ledger.acknowledged) > 100, "too little mail got through to prove anything"
    for address in (ALICE, BOB):
        stored = census.mailboxes[address]
        assert duplicates(stored) == [], f"delivered twice to {address}"
        assert set(stored) <= ledger.sent_to(address), f"{address} got a message sent to someone else"
        lost = ledger.acknowledged_to(address) - set(stored)
        assert lost == set(), f"acknowledged but not in {address}'s Maildir"
    assert set(census.sink) | set(census.queued) <= ledger.sent_to(REMOTE)
    assert remote_acknowledged - set(census.sink) - set(census.queued) == set(), (
        "acknowledged remote mail lost"
    )
    assert drained and not census.queued, "the queue did not drain although the remote MX accepts everything"


def test_sigterm_finishes_the_transaction_in_flight(tmp_path: Path) -> None:
    setup = prepare_installation(tmp_path, sink_port=free_port())
    message = numbered_message(1, LOCAL_SENDER, ALICE)
    pieces = [message[start : start + 4096] for start in range(0, len(message), 4096)]
    with ServerProcess(setup.config_file, cwd=tmp_path) as server:
        ports = server.start()
        sender = server.smtp(STRANGER)
        with contextlib.closing(sender), idle_connection(ports.smtp) as idle:
            assert sender.mail(LOCAL_SENDER)[0] == 250 and sender.rcpt(ALICE)[0] == 250
            sender.putcmd("data")
            assert sender.getreply()[0] == 354
            sender.send(pieces[0])
            server.send_signal(signal.SIGTERM)
            assert wait_until(lambda: refuses_connections(ports.smtp), 5.0), "still accepting after SIGTERM"
            for piece in pieces[1:]:
                time.sleep(0.05)
                sender.send(piece)
            assert server.running, "exited with a transaction in flight"
            sender.send(b".\r\n")
            code, reply = sender.getreply()
            assert (code, reply[:5]) == (250, b"2.0.0"), reply
            assert read_reply_line(idle).startswith("421 4.3.2 "), "the idle client was not told"
        exited = server.wait()
    assert exited.returncode == 0 and "Traceback" not in exited.stderr, exited.stderr
    assert all(refuses_connections(port) for port in (ports.smtp, ports.submission, ports.smtps))
    assert maildir_numbers(setup.maildir(ALICE)) == [1]


@contextlib.contextmanager
def idle_connection(port: int) -> Iterator[socket.socket]:
    """A client that connected, was greeted, and then says nothing."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(STRANGER, 0)) as sock:
        assert read_reply_line(sock).startswith("220 ")
        yield sock


NEWLY_DENIED = "127.0.0.5"


def reload_rules(server: ServerProcess, expected_log: str) -> None:
    """SIGHUP, then wait for every process of the server to say what it did with the file (signals are
    asynchronous)."""
    processes = 1 + len(server.worker_pids())
    mark = server.log_mark()
    server.send_signal(signal.SIGHUP)
    server.wait_for_log(expected_log, after=mark, times=processes)


def test_sighup_reloads_rules_and_keeps_them_when_the_file_is_broken(tmp_path: Path) -> None:
    setup = prepare_installation(tmp_path, sink_port=free_port())
    with ServerProcess(setup.config_file, cwd=tmp_path) as server:
        ports = server.start()
        assert greeting(ports.smtp, NEWLY_DENIED).startswith("220 ")
        setup.rules_file.write_text(f"{NEWLY_DENIED}:deny\n{RULES}")
        reload_rules(server, "rules reloaded")
        assert greeting(ports.smtp, NEWLY_DENIED).startswith("554 5.7.1 ")
        assert greeting(ports.smtp, STRANGER).startswith("220 ")
        setup.rules_file.write_text("127.0.0.1:maybe\n")
        reload_rules(server, "rules not reloaded, keeping the old ones")
        assert server.running
        assert greeting(ports.smtp, NEWLY_DENIED).startswith("554 5.7.1 ")
        assert greeting(ports.smtp, STRANGER).startswith("220 ")


# -- startup errors ------------------------------------------------------------------------------


def assert_startup_error(setup: ServerSetup, *fragments: str) -> None:
    """The server exits 2 with one error line naming the problem: no traceback, nothing on stdout,
    and no log record above INFO (the log may have said what it did before the error)."""
    exited = ServerProcess(setup.config_file, cwd=setup.root).run_to_exit()
    assert exited.returncode == 2, exited.stderr
    assert exited.stdout == ""
    assert "Traceback" not in exited.stderr
    [error] = exited.message_lines
    assert error.startswith("mailtoaster serve: error: "), error
    for fragment in fragments:
        assert fragment in error
    assert all(" INFO " in line for line in exited.stderr_lines if line != error), exited.stderr


def test_a_port_in_use_is_a_startup_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        setup = prepare_installation(
            tmp_path, sink_port=free_port(), overrides={"server": {"smtp_port": port}}
        )
        assert_startup_error(setup, str(port), "in use")


def test_a_broken_config_is_a_startup_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = {"server": {"smtp_port": "twenty-five"}}
    setup = prepare_installation(tmp_path, sink_port=free_port(), overrides=overrides)
    assert_startup_error(setup, str(setup.config_file), "smtp_port")
    assert cli_main(["serve", "--config", str(setup.config_file)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_broken_rules_file_is_a_startup_error(tmp_path: Path) -> None:
    setup = prepare_installation(tmp_path, sink_port=free_port())
    setup.rules_file.write_text(RULES + "127.0.0.1:maybe\n")
    assert_startup_error(setup, str(setup.rules_file), "line 6")


# -- the census itself ---------------------------------------------------------------------------


def test_the_census_counts_whole_copies_only(tmp_path: Path) -> None:
    sent = numbered_message(7, LOCAL_SENDER, ALICE)
    as_stored = (b"Received: from client\r\n\tby mx.example.org\r\n" + sent).replace(b"\r\n", b"\n")
    assert stored_number(as_stored) == 7
    other_body = numbered_message(8, LOCAL_SENDER, ALICE).replace(b"-Number: 8", b"-Number: 7")
    damaged = [b"", sent[: len(sent) // 2], sent.replace(b"line 0003", b"line 0004"), other_body]
    for copy in damaged:
        with pytest.raises(HalfWrittenError):
            stored_number(copy)
    for place, number in (("new", 1), ("cur", 2), (".Junk/new", 3), ("tmp", 4)):
        (tmp_path / place).mkdir(parents=True)
        (tmp_path / place / f"message-{number}").write_bytes(numbered_message(number, LOCAL_SENDER, BOB))
    assert sorted(maildir_numbers(tmp_path)) == [1, 2, 3]
