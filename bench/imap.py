"""IMAP: mailtoaster next to Dovecot on the same large Maildir, in one run.

A folder of 50,000 messages (``--messages``) is written out of the SpamAssassin public corpus
(bench/spamcorpus.py, 6,046 messages cycled, 5.4 KB on average, LF line ends and no mbox ``From``
line, as delivery stores them) into ``cur/`` as a reader leaves them: ``S=<size>`` in every name, about
four in five seen, every tenth answered, every 50th flagged, file times spread over a year. Each server
gets a copy of its own, written just before it starts, with no ``dovecot-uidlist`` and no index, so
each builds its own:

* ``mailtoaster serve`` with a data directory made with the CLI (``domain add``, ``user add``), the
  Maildir as ``mail/example.org/alice/Maildir``, ``[imap] allow_plaintext_on_loopback``; otherwise the
  default configuration (its worker processes included);
* Dovecot 2.3 (``dovecot -F``, Debian's build) with a passwd-file holding the same kind of argon2id
  hash and one static user over that Maildir, indexes in the Maildir (its default), see
  tests/imapclients.py.

The servers run one after the other, never together. For each, over loopback as user alice:

* **SELECT cold**: the first SELECT INBOX after the server started (it reads the directory, assigns
  UIDs, writes ``dovecot-uidlist``, Dovecot also its index);
* then ``--rounds`` rounds, each in a new connection: **LOGIN** (both check an argon2id hash with
  argon2-cffi's default parameters, 64 MiB, as mailtoaster's directory stores it; mailtoaster then
  remembers a verified login for 60 s, as Dovecot's auth_cache can, so its rounds after the cold
  connection's login time the remembered check), **SELECT warm**,
  ``UID FETCH 1:* (FLAGS RFC822.SIZE)``, ``FETCH`` of 1,000 whole messages (``BODY.PEEK[]`` of the
  newest 1,000) and ``UID SEARCH HEADER Subject "mortgage"`` (in about 1% of the messages). Each is
  shown twice: its first time (``round 1``: the warm SELECT is then the second SELECT since the
  start; the first FETCH of RFC822.SIZE and the first SEARCH are where a server reads every file and
  may keep what it learnt, Dovecot in its index and cache files) and its best time over the rounds
  (the machine is shared and noisy);
* **RSS when started**: VmRSS of the server's processes added up, before the first connection;
* **peak RSS**: VmHWM of every process of the server (its main process and its children: for
  mailtoaster the worker processes, for Dovecot master, log, config, auth, anvil, stats, imap-login and
  the imap process of each connection), read every 50 ms and just before each LOGOUT, and added up over
  the processes alive at that moment (an overstatement: shared pages count once per process); also
  the largest single process.

imaplib connects and logs in; the timed commands are then written to its socket and their answers
read straight from its buffered file, counting lines and literal bytes. imaplib's own reading runs
several regular expressions per response line, which for 50,000 FETCH lines costs the client more than
either server spends, and would hide the difference between them.

The figures are checked against each other (the same EXISTS, FETCH answers, bytes and search hits from
both servers), then the targets of issue 6, PASS or MISS: warm SELECT of the folder at most 1 s, every
figure within 3× of Dovecot's, peak RSS at most 200 MB. Run by hand from the repository root:

    .venv/bin/python bench/imap.py [--messages N] [--rounds N]

A figure to keep an eye on, not a test: nothing here fails a build.
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from argon2 import PasswordHasher

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.imapclients import DovecotServer, wait_for_greeting  # noqa: E402

from procfs import process_tree  # noqa: E402
from spamcorpus import load_corpus, without_from_line  # noqa: E402

USER, PASSWORD, DOMAIN = "alice@example.org", "bench pw 4711", "example.org"
MB = 1_000_000
"""Sizes are shown in MB of 10^6 bytes, as the targets are written."""
DEFAULT_MESSAGES = 50_000
FETCH_COUNT = 1_000
ROUNDS = 3
SEARCH_TERM = "mortgage"
SAMPLE_INTERVAL = 0.05
BASE_TIME = 1_733_000_000
"""File times (internal dates) of the messages: one a ten minutes from here on, over about a year."""

TARGET_WARM_SELECT = 1.0
TARGET_RATIO = 3.0
TARGET_PEAK_RSS = 200 * MB

COLD = "SELECT cold"
WARM_SELECT = "SELECT warm"
LOGIN = "LOGIN (argon2id)"
FETCH_FLAGS = "UID FETCH 1:* (FLAGS RFC822.SIZE)"
FETCH_BODIES = "FETCH 1,000 BODY[]"
SEARCH = "UID SEARCH HEADER"
WARM_OPERATIONS = (LOGIN, WARM_SELECT, FETCH_FLAGS, FETCH_BODIES, SEARCH)
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
_ACCEPTING = re.compile(r"worker process \d+ accepting")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS\r\n$", re.MULTILINE)


class BenchError(RuntimeError):
    """The benchmark cannot go on (a server that does not start, a refused command)."""


# --- the mailbox --------------------------------------------------------------------------------------


def corpus_bodies() -> list[bytes]:
    """Every corpus message as delivery stores it (LF, no mbox ``From`` line)."""
    return [without_from_line(message.data).replace(b"\r\n", b"\n") for message in load_corpus()]


def maildir_flags(number: int) -> str:
    """Info letters of message ``number``: mostly read, some answered, a few flagged."""
    letters = {"S": number % 5 != 0, "R": number % 10 == 3, "F": number % 50 == 7}
    return "".join(letter for letter, on in sorted(letters.items()) if on)


def write_mailbox(maildir: Path, corpus: list[bytes], count: int) -> int:
    """``count`` messages cycled from ``corpus`` into ``maildir/cur``; their total size in bytes."""
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    total = 0
    for number in range(1, count + 1):
        data = corpus[(number - 1) % len(corpus)]
        when = BASE_TIME + number * 600
        name = f"{when}.M{number}P4242.bench,S={len(data)}:2,{maildir_flags(number)}"
        path = maildir / "cur" / name
        path.write_bytes(data)
        os.utime(path, (when, when))
        total += len(data)
    return total


# --- processes and /proc ------------------------------------------------------------------------------


def peak_resident(pid: int, name: str = "VmHWM") -> int | None:
    """VmHWM (or another ``Vm*`` line) of one process in bytes (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def process_name(pid: int, main: int) -> str:
    """ "main process", or a child's program (Dovecot names its processes ``dovecot/imap`` and so on)."""
    if pid == main:
        return "main process"
    try:
        program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"
    return Path(program).name if program.startswith("/") else program


@dataclass
class MemoryWatch:
    """The server's peak memory: the largest sum of VmHWM over its live processes seen at one sample,
    and the largest single VmHWM (with the process's name)."""

    pid: int
    peak_sum: int = 0
    peak_single: int = 0
    single_name: str = ""
    processes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        peaks = {member: peak_resident(member) for member in process_tree(self.pid)}
        alive = {member: peak for member, peak in peaks.items() if peak is not None}
        with self._lock:
            total = sum(alive.values())
            if total > self.peak_sum:
                self.peak_sum, self.processes = total, len(alive)
            for member, peak in alive.items():
                if peak > self.peak_single:
                    self.peak_single, self.single_name = peak, process_name(member, self.pid)

    @contextlib.contextmanager
    def running(self) -> Iterator[MemoryWatch]:
        """Sample every :data:`SAMPLE_INTERVAL` in a thread while the block runs."""
        self.sample()
        thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.sample()


# --- the servers --------------------------------------------------------------------------------------


@dataclass
class Server:
    """One server under test: its main process, IMAP port, and how to stop it."""

    label: str
    pid: int
    port: int
    stop: Callable[[], None]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mailtoaster_cli(*arguments: str, stdin: bytes | None = None) -> None:
    """Run the mailtoaster CLI as a postmaster would."""
    done = subprocess.run(
        [sys.executable, "-m", "mailtoaster", *arguments], input=stdin, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"mailtoaster {' '.join(arguments)}: {done.stderr.decode(errors='replace').strip()}")


def mailtoaster_config(data_dir: Path, imap_port: int) -> str:
    """The default configuration but for where things are: SMTP ports chosen by the system, IMAPS
    off, plain-text LOGIN allowed from loopback."""
    return f"""\
[server]
hostname = "mx.{DOMAIN}"
data_dir = "{data_dir}"
smtp_port = 0
submission_port = 0
smtps_port = 0

[imap]
imap_port = {imap_port}
imaps_port = 0
allow_plaintext_on_loopback = true
"""


def start_mailtoaster(workdir: Path, corpus: list[bytes], count: int) -> Server:
    data_dir = workdir / "var"
    mailtoaster_cli("domain", "add", DOMAIN, "--data-dir", str(data_dir))
    mailtoaster_cli(
        "user", "add", USER, "--password-stdin", "--data-dir", str(data_dir), stdin=PASSWORD.encode()
    )
    write_mailbox(data_dir / "mail" / DOMAIN / "alice" / "Maildir", corpus, count)
    port = free_port()
    config = workdir / "mailtoaster.toml"
    config.write_text(mailtoaster_config(data_dir, port))
    log = workdir / "mailtoaster.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailtoaster", "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    wait_for_greeting(port, process, timeout=60, log=lambda: log.read_text(errors="replace")[-2000:])
    wait_for_workers(log, (os.cpu_count() or 1) - 1)
    return Server("mailtoaster", process.pid, port, lambda: _terminate(process))


def wait_for_workers(log: Path, count: int, seconds: float = 60) -> None:
    """Wait until ``count`` worker processes said they accept (``[server] workers`` defaults to one
    process per core: the main one and ``count`` workers), so none is still starting while timed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(_ACCEPTING.findall(log.read_text(errors="replace"))) >= count:
            return
        time.sleep(0.05)
    raise BenchError(f"{count} worker processes did not start in {seconds:g} s")


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_dovecot(corpus: list[bytes], count: int) -> Server:
    """Dovecot over its own copy, checking the password against the same argon2id hash (parameters
    included) as mailtoaster's directory stores."""
    stored = "{ARGON2ID}" + PasswordHasher().hash(PASSWORD)
    dovecot = DovecotServer(USER, PASSWORD, stored_password=stored)
    try:
        write_mailbox(dovecot.maildir, corpus, count)
        dovecot.start()
    except BaseException:
        dovecot.close()
        raise
    return Server("Dovecot", dovecot.pid, dovecot.port, dovecot.close)


def dovecot_version() -> str:
    done = subprocess.run(["/usr/sbin/dovecot", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown version"


# --- the client ---------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What one command got: its untagged responses (without literals), literal bytes, the status."""

    seconds: float
    untagged: list[bytes]
    literal_bytes: int
    status: bytes


class Connection:
    """imaplib logs in; :meth:`timed` then sends commands on its socket and reads the answers from its
    buffered file itself (see the module's docstring for why)."""

    def __init__(self, port: int) -> None:
        self._client = imaplib.IMAP4("127.0.0.1", port, timeout=600)
        started = time.perf_counter()
        status, data = self._client.login(USER, PASSWORD)
        self.login_seconds = time.perf_counter() - started
        if status != "OK":
            raise BenchError(f"LOGIN: {status} {data!r}")
        self._tag = 0

    def timed(self, command: str) -> Reply:
        self._tag += 1
        tag = f"b{self._tag}".encode()
        started = time.perf_counter()
        self._client.send(tag + b" " + command.encode() + b"\r\n")
        untagged, literal_bytes, status = read_answer(cast(IO[bytes], self._client.file), tag)
        seconds = time.perf_counter() - started
        if not status.startswith(tag + b" OK"):
            raise BenchError(f"{command}: {status!r}")
        return Reply(seconds, untagged, literal_bytes, status)

    def close(self) -> None:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self._client.logout()


def read_answer(stream: IO[bytes], tag: bytes) -> tuple[list[bytes], int, bytes]:
    """Lines up to the tagged status; literals are read and counted, not kept."""
    untagged: list[bytes] = []
    literal_bytes = 0
    while True:
        line = stream.readline()
        if not line:
            raise BenchError("the server closed the connection")
        if line.startswith(tag + b" "):
            return untagged, literal_bytes, line
        head = line
        while (literal := _LITERAL.search(line)) is not None:
            size = int(literal.group(1))
            literal_bytes += size
            _skip(stream, size)
            line = stream.readline()
        untagged.append(head)


def _skip(stream: IO[bytes], size: int) -> None:
    while size:
        chunk = stream.read(min(size, 1 << 20))
        if not chunk:
            raise BenchError("the connection ended inside a literal")
        size -= len(chunk)


@contextlib.contextmanager
def connection(port: int, watch: MemoryWatch) -> Iterator[Connection]:
    """A logged-in connection; memory is sampled before its LOGOUT, while the session still lives
    (Dovecot's imap process ends with it)."""
    opened = Connection(port)
    try:
        yield opened
    finally:
        watch.sample()
        opened.close()


# --- measuring ----------------------------------------------------------------------------------------


@dataclass
class Measured:
    label: str
    seconds: dict[str, float] = field(default_factory=dict)
    checks: dict[str, int] = field(default_factory=dict)
    """What the commands returned (EXISTS, FETCH answers, bytes, hits): both servers must agree."""
    idle_rss: int = 0
    """VmRSS added up over the server's processes once it is up, before the first connection."""
    peak_rss: int = 0
    peak_single: int = 0
    single_name: str = ""
    processes: int = 0


def exists(reply: Reply) -> int:
    found = [int(match.group(1)) for line in reply.untagged if (match := _EXISTS.match(line))]
    if not found:
        raise BenchError("SELECT reported no EXISTS")
    return found[-1]


def search_hits(reply: Reply) -> int:
    return sum(len(line.split()) - 2 for line in reply.untagged if line.startswith(b"* SEARCH"))


def record(measured: Measured, operation: str, seconds: float) -> None:
    """Keep the first time of ``operation`` (``, round 1``) and its best (``, best``)."""
    measured.seconds.setdefault(f"{operation}, round 1", seconds)
    best = f"{operation}, best"
    measured.seconds[best] = min(seconds, measured.seconds.get(best, seconds))


def rows(rounds: int) -> list[str]:
    """The timed rows of the table, in order."""
    found = [COLD]
    for operation in WARM_OPERATIONS:
        found += [f"{operation}, round 1", f"{operation}, best"] if rounds > 1 else [f"{operation}, round 1"]
    return found


def measure(server: Server, rounds: int, count: int) -> Measured:
    measured = Measured(server.label)
    measured.idle_rss = sum(peak_resident(pid, "VmRSS") or 0 for pid in process_tree(server.pid))
    watch = MemoryWatch(server.pid)
    with watch.running():
        with connection(server.port, watch) as cold:
            reply = cold.timed("SELECT INBOX")
            measured.seconds[COLD] = reply.seconds
            measured.checks["EXISTS"] = exists(reply)
        for _ in range(rounds):
            with connection(server.port, watch) as warm:
                one_round(warm, measured, count)
    measured.peak_rss, measured.processes = watch.peak_sum, watch.processes
    measured.peak_single, measured.single_name = watch.peak_single, watch.single_name
    return measured


def one_round(client: Connection, measured: Measured, count: int) -> None:
    record(measured, LOGIN, client.login_seconds)
    reply = client.timed("SELECT INBOX")
    record(measured, WARM_SELECT, reply.seconds)
    reply = client.timed(FETCH_FLAGS)
    record(measured, FETCH_FLAGS, reply.seconds)
    measured.checks["FLAGS answers"] = len(reply.untagged)
    first = max(1, count - FETCH_COUNT + 1)
    reply = client.timed(f"FETCH {first}:{count} (BODY.PEEK[])")
    record(measured, FETCH_BODIES, reply.seconds)
    measured.checks["BODY[] answers"] = len(reply.untagged)
    measured.checks["BODY[] bytes"] = reply.literal_bytes
    reply = client.timed(f'UID SEARCH HEADER Subject "{SEARCH_TERM}"')
    record(measured, SEARCH, reply.seconds)
    measured.checks["SEARCH hits"] = search_hits(reply)


def run_server(start: Callable[[], Server], rounds: int, count: int) -> Measured:
    server = start()
    try:
        return measure(server, rounds, count)
    finally:
        server.stop()


# --- the report ---------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, {load}, {platform.system()} {platform.release()}"


def revision() -> str:
    def git(*arguments: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *arguments], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src/mailtoaster/imap", "src/mailtoaster/store")
    return (git("log", "-1", "--format=%h") or "unknown revision") + (
        " + uncommitted changes" if dirty else ""
    )


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:5.1f}x" if theirs > 0 else "    -"


def report(ours: Measured, dovecot: Measured, rounds: int) -> None:
    print(f"\n{'':<44}{'mailtoaster':>14}{'Dovecot':>14}{'ratio':>9}")
    for operation in rows(rounds):
        mine, theirs = ours.seconds[operation], dovecot.seconds[operation]
        print(f"{operation:<44}{mine:>12.4f} s{theirs:>12.4f} s{ratio(mine, theirs):>9}")
    for label, mine_bytes, theirs_bytes in (
        ("RSS when started, all processes", ours.idle_rss, dovecot.idle_rss),
        ("peak RSS, all processes", ours.peak_rss, dovecot.peak_rss),
        ("peak RSS, largest process", ours.peak_single, dovecot.peak_single),
    ):
        sizes = f"{mine_bytes / MB:>11.1f} MB{theirs_bytes / MB:>11.1f} MB"
        print(f"{label:<44}{sizes}{ratio(mine_bytes, theirs_bytes):>9}")
    print(
        f"  (largest: {ours.single_name} / {dovecot.single_name}; processes at the peak: "
        f"{ours.processes} / {dovecot.processes})"
    )
    print(f"\nwhat the commands returned (warm: the last of {rounds} rounds)")
    for name, mine_count in ours.checks.items():
        theirs_count = dovecot.checks.get(name, -1)
        agree = "same" if mine_count == theirs_count else "DIFFERENT"
        print(f"  {name:<18}{mine_count:>14,}{theirs_count:>14,}   {agree}")


def targets(ours: Measured, dovecot: Measured, rounds: int) -> list[tuple[bool, str]]:
    """Issue 6's targets; the warm SELECT is judged on its first time (the second SELECT after the
    start, in a new connection), every row of the table against Dovecot's."""
    warm = ours.seconds[f"{WARM_SELECT}, round 1"]
    found = [
        (
            warm <= TARGET_WARM_SELECT,
            f"warm SELECT of {ours.checks['EXISTS']:,} messages <= 1 s: {warm:.4f} s",
        )
    ]
    for operation in rows(rounds):
        mine, theirs = ours.seconds[operation], dovecot.seconds[operation]
        found.append(
            (
                mine <= TARGET_RATIO * theirs,
                f"{operation} within 3x of Dovecot: {mine:.4f} s vs {theirs:.4f} s",
            )
        )
    found.append(
        (
            ours.peak_rss <= TARGET_PEAK_RSS,
            f"peak RSS <= 200 MB: {ours.peak_rss / MB:.1f} MB ({ours.processes} processes' VmHWM added up; "
            f"largest {ours.peak_single / MB:.1f} MB)",
        )
    )
    return found


# --- running ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    messages: int
    rounds: int
    keep: bool


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages",
        type=int,
        default=DEFAULT_MESSAGES,
        help=f"messages in the folder ({DEFAULT_MESSAGES:,})",
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"warm rounds, the best shown ({ROUNDS})")
    parser.add_argument(
        "--keep", action="store_true", help="keep the working directory (its path is printed)"
    )
    args = parser.parse_args()
    if args.messages < 1 or args.rounds < 1:
        parser.error("--messages and --rounds must be at least 1")
    return Options(args.messages, args.rounds, args.keep)


def main() -> int:
    options = parse_options()
    workdir = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    try:
        run(options, workdir)
    except (BenchError, OSError, subprocess.SubprocessError, imaplib.IMAP4.error) as error:
        print(f"imap bench: {error}", file=sys.stderr)
        return 1
    finally:
        if options.keep:
            print(f"\nworking directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run(options: Options, workdir: Path) -> None:
    print(machine())
    print(f"mailtoaster at {revision()}; Dovecot {dovecot_version()}; Python {platform.python_version()}")
    corpus = corpus_bodies()
    count = options.messages
    size = sum(len(corpus[index % len(corpus)]) for index in range(count))
    print(
        f"folder: {count:,} corpus messages, {size / MB:,.1f} MB, each server its own copy; "
        f"{options.rounds} warm rounds: the first and the best shown"
    )
    dovecot = run_server(lambda: start_dovecot(corpus, count), options.rounds, count)
    ours = run_server(
        lambda: start_mailtoaster(workdir / "mailtoaster", corpus, count), options.rounds, count
    )
    report(ours, dovecot, options.rounds)
    print("\ntargets (issue 6)")
    for passed, text in targets(ours, dovecot, options.rounds):
        print(f"  {'PASS' if passed else 'MISS':<5} {text}")


if __name__ == "__main__":
    sys.exit(main())
