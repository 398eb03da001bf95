"""SMTP load: mailtoaster next to Postfix's smtp-sink and a bare aiosmtpd server, under the same load.

Postfix's ``smtp-source`` sends the same DKIM-signed 3 KB message (the 3 KB message of bench/dkim.py)
over 1, 4 and 16 concurrent connections, one connection per message as an MX sees mail arrive
(``--persistent`` sends every message of a connection over it instead), to four servers in turn:

* Postfix's ``smtp-sink``: C, throws every message away; the floor of the load generator and loopback;
* a bare aiosmtpd server (bench/aiosmtpd_sink.py): aiosmtpd's own protocol and a handler that answers
  250 and keeps nothing; what asyncio and aiosmtpd cost before any work is done;
* ``mailtoaster serve``: a temporary data directory with one domain and one user (made with the CLI:
  ``domain add``, ``user add --password-stdin``, ``keygen``, ``dns records``, ``sign``), every
  inbound check against a local zone (SPF, Sender ID, iprev, DomainKeys, DKIM, ADSP, DMARC with
  p=reject, ARC), the load's source 127.0.0.1 not a relay client, every message delivered to the
  user's Maildir (file fsynced, renamed, ``new/`` fsynced) before the 250; ``[server] workers`` at its
  default, one process per CPU core (docs/smtp.md, worker processes); the spam filter off: the server
  issue's load, on which its targets are judged;
* ``mailtoaster + spam``: the same with the default configuration's spam filter on (untrained, so its
  header and authentication rules score every message, without Bayes): what the spam issue adds.

For each server and connection count: messages per second as smtp-source achieves them (the best of
``--rounds`` rounds), the server's CPU time per message in that round (``/proc/<pid>/stat``, all its
processes added up), and the
latency of each message as a Python asyncio client measures it (run on its own, after smtp-source,
since smtp-source reports no latency). Then each server's peak RSS (VmHWM in ``/proc/<pid>/status``,
added up over its processes, which overstates it: pages they share count once per process)
after that load, and what one 50 MB message sent with smtplib adds to it. Then the targets, PASS or
MISS. ``--profile`` adds where mailtoaster's time goes under the 16-connection load (py-spy) and where
its memory is at the 50 MB message's peak (memray).

Run by hand, through bench/smtp_load.sh (it installs Postfix's tools, and py-spy and memray for
``--profile``, when they are missing), or as ``.venv/bin/python bench/smtp_load.py`` once they are there:

    bench/smtp_load.sh [--quick] [--persistent] [--profile] [--messages N] [--rounds N]

A figure to keep an eye on, not a test: nothing here fails a build.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import importlib
import importlib.util
import os
import re
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType

from procfs import process_tree

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _bench_dkim() -> ModuleType:
    """bench/dkim.py, for its message and its machine line (loaded by path: ``dkim`` is dkimpy's name)."""
    spec = importlib.util.spec_from_file_location("bench_dkim", HERE / "dkim.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench_dkim = _bench_dkim()

SENDER_DOMAIN = "example.com"
"""bench/dkim.py's message is From: alice@example.com; the zone publishes example.com's records."""
SENDER = "alice@example.com"
LOCAL_DOMAIN = "example.net"
RECIPIENT = "bob@example.net"
CLIENT_NAME = "client.example.com"
CLIENT_IP = "127.0.0.1"
SERVER_NAME = "mx.example.net"
SELECTOR = "bench"
MB = 1_000_000
"""Sizes are shown in MB of 10^6 bytes, as the targets are written."""
MESSAGE_SIZE = 3 * 1024
BIG_MESSAGE_SIZE = 50 * MB
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
CONNECTIONS = (1, 4, 16)
WARM_UP_MESSAGES = 50

TARGET_RATE = 500.0
TARGET_CONNECTIONS = 16
TARGET_PEAK_RSS = 150_000_000
TARGET_BIG_RISE = 20_000_000

SMTP_SINK = "Postfix smtp-sink"
AIOSMTPD = "bare aiosmtpd"
MAILTOASTER = "mailtoaster"
MAILTOASTER_SPAM = "mailtoaster + spam"
TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/lib/postfix/sbin"])
DEFAULT_TOOLS_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mailtoaster-bench"


class BenchError(RuntimeError):
    """The benchmark cannot go on (a tool missing, a server that does not start, a refused message)."""


# --- processes and /proc -----------------------------------------------------------------------------


@dataclass
class Server:
    """One server under test, running as a child process whose output goes to ``log``."""

    label: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def log_tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for_port_in_log(
    process: subprocess.Popen[bytes], log: Path, pattern: re.Pattern[str], seconds: float = 60
) -> int:
    """The port a server printed once it listens (it chose a free one itself)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            raise BenchError(f"{process.args!r} exited with {process.returncode}: {log_tail(log)}")
        time.sleep(0.05)
    raise BenchError(f"{process.args!r} did not start in {seconds:g} s: {log_tail(log)}")


def wait_listening(process: subprocess.Popen[bytes], port: int, log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if process.poll() is not None:
            raise BenchError(f"{process.args!r} exited with {process.returncode}: {log_tail(log)}")
        time.sleep(0.05)
    raise BenchError(f"nothing listens on port {port} after {seconds:g} s: {log_tail(log)}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class CpuTimes:
    user: float
    system: float
    """In the kernel on the process's behalf: socket calls, file creation, renames, fsync."""

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.system - other.system)


def cpu_times(pid: int) -> CpuTimes:
    """CPU time so far of the process and its worker processes, all their threads (fields 14 and 15
    of /proc/<pid>/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
            user += int(fields[11]) / ticks
            system += int(fields[12]) / ticks
    return CpuTimes(user, system)


def memory_bytes(pid: int, name: str) -> int:
    """A ``Vm*`` line of /proc/<pid>/status (VmRSS: resident now, VmHWM: the peak), in bytes, added up
    over the process and its worker processes: what the server as a whole holds (an overstatement,
    as pages the processes share count once per process)."""
    total = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                total += int(line.split()[1]) * 1024
                break
        else:
            raise BenchError(f"/proc/{member}/status has no {name}")
    return total


def proportional_bytes(pid: int) -> int:
    """The Pss of the process and its worker processes (/proc/<pid>/smaps_rollup), added up: each
    shared page counted once across them, so what the server as a whole occupies now."""
    total = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def reset_peak(pid: int) -> bool:
    """Set VmHWM back to the current RSS (``5`` into /proc/<pid>/clear_refs, Linux 4.0+), in the
    process and its worker processes."""
    try:
        for member in process_tree(pid):
            Path(f"/proc/{member}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --- the mailtoaster installation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Installation:
    config: Path
    maildir: Path
    message: Path
    """The DKIM-signed 3 KB message with LF line ends, as smtp-source -F wants it (it adds the CRs)."""


def mailtoaster(*arguments: str, stdin: bytes | None = None) -> bytes:
    """Run the mailtoaster CLI as a postmaster would; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "mailtoaster", *arguments], input=stdin, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"mailtoaster {' '.join(arguments)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def install(workdir: Path, workers: int | None = None, *, spam: bool = False) -> Installation:
    """A data directory, keys, zone, rules and configuration under ``workdir``. ``spam``: the spam
    filter on, as in the default configuration (untrained, so header and authentication rules only);
    off otherwise, the server issue's load (its checks, delivery and nothing else)."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "var"
    sender_keys = workdir / "sender-keys"
    mailtoaster("domain", "add", LOCAL_DOMAIN, "--data-dir", str(data_dir))
    mailtoaster(
        "user", "add", RECIPIENT, "--password-stdin", "--data-dir", str(data_dir), stdin=b"bench pw 4711\n"
    )
    mailtoaster("keygen", SENDER_DOMAIN, "--selector", SELECTOR, "--keys-dir", str(sender_keys))
    records = mailtoaster(
        "dns", "records", SENDER_DOMAIN, "--keys-dir", str(sender_keys), "--ip", CLIENT_IP,
        "--all", "fail", "--sender-id", "--dmarc-policy", "reject",
    )  # fmt: skip
    zone = workdir / "bench.zone"
    zone.write_bytes(records + reverse_dns_records().encode())
    unsigned = workdir / "message.txt"
    unsigned.write_bytes(bench_dkim.make_message(MESSAGE_SIZE, seed=0).replace(b"\r\n", b"\n"))
    signed = workdir / "signed.txt"
    signed.write_bytes(
        mailtoaster("sign", "--domain", SENDER_DOMAIN, "--keys-dir", str(sender_keys), str(unsigned))
    )
    rules = workdir / "tcp.smtp"
    rules.write_text(f'{CLIENT_IP}:allow,SPFBEHAVIOR="3"\n:allow\n')
    config = workdir / "mailtoaster.toml"
    config.write_text(
        config_text(data_dir, rules, zone, workers) + ("" if spam else "\n[spam]\nenabled = false\n")
    )
    return Installation(config, data_dir / "mail" / LOCAL_DOMAIN / "bob" / "Maildir", signed)


def reverse_dns_records() -> str:
    """PTR and A records that confirm the client's name, so that iprev passes too."""
    reverse = ".".join(reversed(CLIENT_IP.split("."))) + ".in-addr.arpa."
    return f"{reverse} 3600 IN PTR {CLIENT_NAME}.\n{CLIENT_NAME}. 3600 IN A {CLIENT_IP}\n"


def config_text(data_dir: Path, rules: Path, zone: Path, workers: int | None = None) -> str:
    """Ports 0: the server picks free ones and prints them. SPFBEHAVIOR 3 and dmarc_reject put the
    checks' verdicts in charge of the reply; the load passes them all."""
    return f"""\
[server]
hostname = "{SERVER_NAME}"
data_dir = "{data_dir}"
smtp_port = 0
submission_port = 0
smtps_port = 0
max_message_size = {MAX_MESSAGE_SIZE}
{"" if workers is None else f"workers = {workers}"}

[rules]
file = "{rules}"

[dns]
zone_file = "{zone}"

[policy]
dmarc_reject = true

[imap]
imap_port = 0
imaps_port = 0
"""


def delivered(maildir: Path) -> tuple[int, int]:
    """(messages in the inbox, messages in Junk)."""

    def count(folder: Path) -> int:
        return sum(1 for sub in ("new", "cur") if (folder / sub).is_dir() for _ in (folder / sub).iterdir())

    return count(maildir), count(maildir / ".Junk")


VERDICT = re.compile(rb"(?<![\w.-])(iprev|spf|sender-id|domainkeys|dkim|dkim-adsp|dmarc|arc)=([a-z]+)")


def verdicts(maildir: Path) -> str:
    """The checks' results in the Authentication-Results of one delivered 3 KB message."""
    for path in sorted((maildir / "new").iterdir()):
        if path.stat().st_size < 100_000:
            head = path.read_bytes().partition(b"\n\n")[0]
            found = dict(VERDICT.findall(head))
            return " ".join(f"{name.decode()}={value.decode()}" for name, value in found.items())
    return "(no message delivered)"


# --- the servers --------------------------------------------------------------------------------------

SMTP_PORT_LINE = re.compile(r"^\s+smtp\s+\S+:(\d+)", re.MULTILINE)
READY_LINE = re.compile(r"^ready (\d+)", re.MULTILINE)


def start_mailtoaster(
    installation: Installation, workdir: Path, prefix: tuple[str, ...] = (), label: str = MAILTOASTER
) -> Server:
    log = installation.config.with_name("mailtoaster.log")
    command = [*prefix] if prefix else [sys.executable]
    command += ["-m", "mailtoaster", "serve", "--config", str(installation.config)]
    process = spawn(command, log)
    return Server(label, process, wait_for_port_in_log(process, log, SMTP_PORT_LINE), log)


def start_aiosmtpd(workdir: Path) -> Server:
    log = workdir / "aiosmtpd.log"
    process = spawn([sys.executable, str(HERE / "aiosmtpd_sink.py")], log)
    return Server(AIOSMTPD, process, wait_for_port_in_log(process, log, READY_LINE), log)


def start_smtp_sink(tools: PostfixTools, workdir: Path) -> Server:
    log = workdir / "smtp-sink.log"
    port = free_port()
    # As root smtp-sink must be told whom to become once it listens.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = spawn([str(tools.smtp_sink), *user, f"127.0.0.1:{port}", "256"], log)
    wait_listening(process, port, log)
    return Server(SMTP_SINK, process, port, log)


# --- the load: smtp-source ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PostfixTools:
    smtp_source: Path
    smtp_sink: Path
    version: str


def find_postfix_tools() -> PostfixTools:
    found = {name: shutil.which(name, path=TOOL_PATH) for name in ("smtp-source", "smtp-sink")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise BenchError(
            f"{' and '.join(missing)} not found: install Debian's postfix package (bench/smtp_load.sh does)"
        )
    postconf = shutil.which("postconf", path=TOOL_PATH)
    version = ""
    if postconf:
        done = subprocess.run([postconf, "-d", "mail_version"], capture_output=True, text=True, check=False)
        version = done.stdout.partition("=")[2].strip()
    return PostfixTools(Path(str(found["smtp-source"])), Path(str(found["smtp-sink"])), version or "?")


@dataclass(frozen=True)
class Load:
    """What every server gets: the same message, envelope and counts."""

    message: Path
    messages: int
    """Messages per smtp-source round."""
    rounds: int
    driver_messages: int
    """Messages per latency measurement."""
    persistent: bool


def smtp_source_command(
    tools: PostfixTools, port: int, connections: int, count: int, load: Load
) -> list[str]:
    """smtp-source sending ``count`` messages over ``connections`` parallel sessions."""
    return [
        str(tools.smtp_source), "-s", str(connections), "-m", str(count), "-F", str(load.message),
        "-f", SENDER, "-t", RECIPIENT, "-M", CLIENT_NAME, *(["-d"] if load.persistent else []),
        f"127.0.0.1:{port}",
    ]  # fmt: skip


def smtp_source_seconds(tools: PostfixTools, port: int, connections: int, count: int, load: Load) -> float:
    """Wall time for smtp-source to send ``count`` messages over ``connections`` parallel sessions."""
    command = smtp_source_command(tools, port, connections, count, load)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, timeout=count + 120, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"smtp-source failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return elapsed


@dataclass(frozen=True)
class Throughput:
    rate: float
    """Messages per second in the best round."""
    cpu_per_message: float
    """Seconds of the server's CPU time (all its threads, user and system) per message, in that round."""
    system_per_message: float
    """The part of it spent in the kernel."""


ROUNDS = 3
"""Rounds per cell; the best is kept: other work on the machine only ever slows a round down."""


def throughput(tools: PostfixTools, server: Server, connections: int, load: Load) -> Throughput:
    best: Throughput | None = None
    for _ in range(load.rounds):
        cpu_before = cpu_times(server.pid)
        seconds = smtp_source_seconds(tools, server.port, connections, load.messages, load)
        cpu = cpu_times(server.pid) - cpu_before
        measured = Throughput(
            load.messages / seconds, (cpu.user + cpu.system) / load.messages, cpu.system / load.messages
        )
        if best is None or measured.rate > best.rate:
            best = measured
    assert best is not None
    return best


# --- the latency driver -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    rate: float
    """Messages per second the driver itself reached (it shares the CPU with the server)."""
    p50: float
    p99: float


def wire_data(message: bytes) -> bytes:
    """The DATA phase's octets for an LF-terminated message: CRLF line ends, dots doubled, the final dot."""
    lines = message.splitlines()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


async def read_reply(reader: asyncio.StreamReader, expected: bytes) -> None:
    """Read one (possibly multi-line) reply and insist on its code."""
    while True:
        line = await reader.readline()
        if not line:
            raise BenchError(f"the server closed the connection while {expected.decode()} was expected")
        if line[3:4] != b"-":
            break
    if not line.startswith(expected):
        raise BenchError(f"expected {expected.decode()}, the server said {line.decode(errors='replace')!r}")


async def command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes, code: bytes
) -> None:
    writer.write(line)
    await read_reply(reader, code)


async def open_session(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await read_reply(reader, b"220")
    await command(reader, writer, f"EHLO {CLIENT_NAME}\r\n".encode(), b"250")
    return reader, writer


async def close_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await command(reader, writer, b"QUIT\r\n", b"221")
    writer.close()
    await writer.wait_closed()


async def transaction(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> None:
    """MAIL, RCPT, DATA and the message, one command at a time as smtp-source sends them."""
    await command(reader, writer, f"MAIL FROM:<{SENDER}>\r\n".encode(), b"250")
    await command(reader, writer, f"RCPT TO:<{RECIPIENT}>\r\n".encode(), b"250")
    await command(reader, writer, b"DATA\r\n", b"354")
    await command(reader, writer, data, b"250")


async def connection_per_message(port: int, jobs: Iterator[int], data: bytes, latencies: list[float]) -> None:
    """Latency: from the TCP connect to the 250 after the final dot (greeting and EHLO included)."""
    for _ in jobs:
        started = time.perf_counter()
        reader, writer = await open_session(port)
        await transaction(reader, writer, data)
        latencies.append(time.perf_counter() - started)
        await close_session(reader, writer)


async def persistent_connection(port: int, jobs: Iterator[int], data: bytes, latencies: list[float]) -> None:
    """Latency: from MAIL FROM to the 250 after the final dot."""
    reader, writer = await open_session(port)
    for _ in jobs:
        started = time.perf_counter()
        await transaction(reader, writer, data)
        latencies.append(time.perf_counter() - started)
    await close_session(reader, writer)


async def drive(port: int, connections: int, count: int, data: bytes, persistent: bool) -> Latency:
    """``count`` messages over ``connections`` concurrent clients sharing one job counter."""
    jobs = iter(range(count))
    latencies: list[float] = []
    client = persistent_connection if persistent else connection_per_message
    started = time.perf_counter()
    await asyncio.gather(*(client(port, jobs, data, latencies) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return Latency(len(latencies) / elapsed, statistics.median(latencies), cuts[98])


# --- memory: one 50 MB message -----------------------------------------------------------------------


def big_message(size: int) -> bytes:
    """A message of ``size`` octets, almost all of it a base64 attachment (how 50 MB messages look)."""
    head = (
        f"From: Alice Example <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: the archive\r\n"
        "Date: Tue, 14 Nov 2023 22:13:18 +0000\r\nMessage-ID: <big.bench@example.com>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThe archive is attached.\r\n"
        '--b\r\nContent-Type: application/octet-stream; name="archive.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    tail = b"--b--\r\n"
    payload_size = (size - len(head) - len(tail)) * 57 // 78
    body = base64.encodebytes(os.urandom(payload_size)).replace(b"\n", b"\r\n")
    return head + body + tail


@dataclass(frozen=True)
class BigMessage:
    before: int
    """RSS just before (VmHWM reset to it), bytes."""
    peak: int
    """VmHWM once the 250 arrived, bytes."""
    seconds: float
    reset: bool
    """False when VmHWM could not be reset: ``before`` is then the old peak and the rise a lower bound."""

    @property
    def rise(self) -> int:
        return self.peak - self.before


def send_big(server: Server, message: bytes) -> BigMessage:
    reset = reset_peak(server.pid)
    before = memory_bytes(server.pid, "VmRSS" if reset else "VmHWM")
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", server.port, CLIENT_NAME, timeout=600) as client:
        refused = client.sendmail(SENDER, [RECIPIENT], message)
    if refused:
        raise BenchError(f"{server.label} refused the 50 MB message: {refused}")
    seconds = time.perf_counter() - started
    return BigMessage(before, memory_bytes(server.pid, "VmHWM"), seconds, reset)


# --- the disk -----------------------------------------------------------------------------------------


def durable_write_rate(directory: Path, threads: int, writes: int = 240, size: int = 3_700) -> float:
    """What a Maildir delivery must do, per second: write a file, fsync it, rename it into new/, fsync
    new/. ``threads`` at once, as the server's default executor runs deliveries."""
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    (directory / "new").mkdir(exist_ok=True)
    payload = b"x" * size

    def deliver(number: int) -> None:
        temporary, final = directory / "tmp" / str(number), directory / "new" / str(number)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, final)
        directory_fd = os.open(directory / "new", os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(deliver, range(writes)))
    rate = writes / (time.perf_counter() - started)
    shutil.rmtree(directory)
    return rate


# --- one server, start to stop ------------------------------------------------------------------------


@dataclass
class Measured:
    label: str
    throughput: dict[int, Throughput] = field(default_factory=dict)
    latency: dict[int, Latency] = field(default_factory=dict)
    peak_rss: int = 0
    """VmHWM added up over the server's processes."""
    processes: int = 1
    pss: int = 0
    """Pss added up over the server's processes after the load."""
    big: BigMessage | None = None
    sent: int = 0
    """Messages accepted by this server in the whole run."""


def measure(server: Server, tools: PostfixTools, load: Load, big: bytes) -> Measured:
    result = Measured(server.label)
    data = wire_data(load.message.read_bytes())
    smtp_source_seconds(tools, server.port, 4, WARM_UP_MESSAGES, load)
    result.sent += WARM_UP_MESSAGES
    for connections in CONNECTIONS:
        print(f"  {server.label:<18} {connections:>2} connection(s) ...", flush=True)
        result.throughput[connections] = throughput(tools, server, connections, load)
        result.latency[connections] = asyncio.run(
            drive(server.port, connections, load.driver_messages, data, load.persistent)
        )
        result.sent += load.messages * load.rounds + load.driver_messages
    result.peak_rss = memory_bytes(server.pid, "VmHWM")
    result.processes = len(process_tree(server.pid))
    result.pss = proportional_bytes(server.pid)
    print(f"  {server.label:<18} one {len(big) / MB:,.0f} MB message ...", flush=True)
    result.big = send_big(server, big)
    result.sent += 1
    return result


# --- profiles (--profile) -----------------------------------------------------------------------------


def tool_path(tools_dir: Path, name: str) -> Path | None:
    found = shutil.which(name, path=os.pathsep.join([str(tools_dir / "bin"), os.environ.get("PATH", "")]))
    return Path(found) if found else None


SAMPLE_RATE = 250
"""py-spy samples per second."""


def cpu_profile(
    py_spy: Path, server: Server, tools: PostfixTools, load: Load, rate: float, seconds: float
) -> None:
    """py-spy on the server while smtp-source keeps 16 connections busy: once sampling only the thread
    that holds the GIL (what the Python code costs, by phase and by function), once sampling every
    thread, idle or not (how busy the event loop thread and the executor's threads are)."""
    duration = max(1, int(seconds))
    heading = f"py-spy, {duration} s at {SAMPLE_RATE} Hz, smtp-source at {TARGET_CONNECTIONS} connections"
    for mode in ("--gil", "--idle"):
        raw = server.log.with_name(f"py-spy{mode}.txt")
        sampled = [
            str(py_spy), "record", "--pid", str(server.pid), "--subprocesses", "--duration", str(duration),
            "--rate", str(SAMPLE_RATE), "--format", "raw", "--output", str(raw), "--nonblocking", mode,
        ]  # fmt: skip
        count = int(rate * (duration + 5))
        started = time.perf_counter()
        source = subprocess.Popen(
            smtp_source_command(tools, server.port, TARGET_CONNECTIONS, count, load),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
        done = subprocess.run(sampled, capture_output=True, text=True, check=False)
        source.wait(count + 60)
        rate_then = count / (time.perf_counter() - started)
        if done.returncode != 0 or not raw.exists():
            print(f"\npy-spy failed ({done.returncode}): {done.stderr.strip()[-300:]}")
            return
        samples = read_samples(raw)
        if mode == "--gil":
            print_gil_profile(
                samples, f"{heading} ({rate_then:,.0f} msg/s)", duration * SAMPLE_RATE, rate_then
            )
        else:
            print_thread_profile(samples, f"{heading} ({rate_then:,.0f} msg/s)", rate_then)


@dataclass(frozen=True)
class Sample:
    frames: tuple[str, ...]
    """``function (package/module.py)``, outermost first; empty when no Python frame was running."""
    count: int

    @property
    def leaf(self) -> str:
        return self.frames[-1] if self.frames else "(no Python frame)"


STACK_LINE = re.compile(r"^(.*) (\d+)$")
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def read_samples(raw: Path) -> list[Sample]:
    """py-spy's raw output: one ``frame;frame;...;frame count`` line per distinct stack."""
    samples = []
    for line in raw.read_text().splitlines():
        matched = STACK_LINE.match(line)
        if matched:
            stack = matched.group(1).strip()
            frames = tuple(short_frame(frame) for frame in stack.split(";")) if stack else ()
            samples.append(Sample(frames, int(matched.group(2))))
    return samples


PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging (aiosmtpd's INFO lines and ours)", ("(logging/",)),
    (
        "inbound checks (auth/, verify/, dns/)",
        ("mailtoaster/auth/", "mailtoaster/verify/", "mailtoaster/dns/"),
    ),
    (
        "local delivery: directory look-ups, Maildir",
        ("mailtoaster/store/", "mailtoaster/durable", "Mailboxes."),
    ),
    ("accepting a connection (accept, SMTP.__init__)", ("_accept_connection", "SMTP.__init__ (")),
    ("DATA: lines read and written to the spool", ("._read_data (",)),
    ("pipeline: spool read, parse, trace fields", ("mailtoaster/pipeline/", "mailtoaster/message.py")),
    ("SMTP dialogue (aiosmtpd and our hooks)", ("(aiosmtpd/", "(mailtoaster/smtp/")),
    ("hand-offs to the executor (to_thread)", ("(concurrent/futures/", "(asyncio/threads.py")),
)
"""Where a sample's time goes: the first phase one of whose markers is in one of its frames."""
OTHER_PHASE = "the rest: event loop, socket reads and writes"

PLUMBING = {
    "_run_module_as_main", "_run_code", "<module>", "main", "run", "Runner.run",
    "BaseEventLoop.run_until_complete", "BaseEventLoop.run_forever", "BaseEventLoop._run_once",
    "Handle._run", "Thread._bootstrap", "Thread._bootstrap_inner", "Thread.run", "_worker", "_WorkItem.run",
}  # fmt: skip
"""Functions under (nearly) every stack of their thread: left out of the inclusive table."""


def phase_of(sample: Sample) -> str:
    for phase, markers in PHASES:
        if any(marker in frame for frame in sample.frames for marker in markers):
            return phase
    return OTHER_PHASE


def print_gil_profile(
    samples: list[Sample], heading: str, possible: int, rate: float, rows: int = 24
) -> None:
    """By phase with the milliseconds of GIL time per message each stands for, then by function."""
    total = sum(sample.count for sample in samples) or 1
    per_message = total / possible / rate * 1000
    phases: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for sample in samples:
        phases[phase_of(sample)] += sample.count
        own[sample.leaf] += sample.count
        for frame in set(sample.frames):
            if frame.partition(" (")[0] not in PLUMBING:
                inclusive[frame] += sample.count
    print(
        f"\n=== {heading}, the thread holding the GIL: held {total / possible:.0%} of the time, "
        f"{per_message:.2f} ms per message"
    )
    print("  by phase                                                   ms/msg")
    for phase, count in phases.most_common():
        print(f"    {count / total:6.1%}  {phase:<50}{count / total * per_message:6.2f}")
    print("  functions, inclusive")
    for frame, count in inclusive.most_common(rows):
        print(f"    {count / total:6.1%}  {frame}")
    print("  functions, self")
    for frame, count in own.most_common(rows // 2):
        print(f"    {count / total:6.1%}  {frame}")


LOOP_THREAD = "event loop thread"
EXECUTOR_THREADS = "executor threads"
IDLE_LEAVES = {"EpollSelector.select (selectors.py)", "_worker (concurrent/futures/thread.py)"}
"""Where an event loop waits for sockets and an executor thread for work."""


def print_thread_profile(samples: list[Sample], heading: str, rate: float, rows: int = 10) -> None:
    """Event loop thread and executor threads: the share of their samples spent not waiting for work,
    and what they were doing then (a thread blocked in fsync or in SQLite counts as busy)."""
    groups: dict[str, list[Sample]] = {LOOP_THREAD: [], EXECUTOR_THREADS: []}
    for sample in samples:
        if any(frame.startswith("BaseEventLoop.run_forever ") for frame in sample.frames):
            groups[LOOP_THREAD].append(sample)
        elif any(frame.startswith("_worker ") for frame in sample.frames):
            groups[EXECUTOR_THREADS].append(sample)
    print(f"\n=== {heading}, every thread, waiting or not")
    for name, group in groups.items():
        total = sum(sample.count for sample in group) or 1
        busy: collections.Counter[str] = collections.Counter()
        for sample in group:
            if sample.leaf not in IDLE_LEAVES:
                busy[sample.leaf] += sample.count
        share = sum(busy.values()) / total
        print(
            f"  {name}: busy in {share:.0%} of {total:,} samples"
            + (f" ({share / rate * 1000:.2f} ms per message)" if name == LOOP_THREAD else "")
            + "; busiest calls"
        )
        for frame, count in busy.most_common(rows):
            print(f"    {count / total:6.1%}  {frame}")


def short_frame(frame: str) -> str:
    """py-spy's ``function (path/to/module.py:123)`` as ``function (package/module.py)``: one entry per
    function, whatever the line."""
    matched = FRAME.match(frame)
    return f"{matched.group('function')} ({short_file(matched.group('file'))})" if matched else frame


def short_file(filename: str) -> str:
    parts = Path(filename).parts
    for anchor in ("mailtoaster", "aiosmtpd", "asyncio", "concurrent", "email", "logging"):
        if anchor in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(anchor) :])
    return Path(filename).name


MEMRAY_SHOWN = 5 * MB
"""Smaller allocations at the peak are the interpreter's own (imported modules, pymalloc arenas)."""


def memory_profile(tools_dir: Path, installation: Installation, workdir: Path, big: bytes) -> None:
    """mailtoaster under memray, one big message, then the allocations alive at the high-water mark."""
    capture = workdir / "memray.bin"
    bootstrap = (
        f"import runpy, sys; sys.path.append({str(tools_dir)!r}); sys.argv[0] = 'memray'; "
        "runpy.run_module('memray', run_name='__main__', alter_sys=True)"
    )
    prefix = (sys.executable, "-c", bootstrap, "run", "--quiet", "--force", "-o", str(capture))
    server = start_mailtoaster(installation, workdir, prefix)
    try:
        send_big(server, big)
    finally:
        server.stop()
    sys.path.append(str(tools_dir))
    memray = importlib.import_module("memray")
    reader = memray.FileReader(str(capture))
    records = sorted(
        reader.get_high_watermark_allocation_records(merge_threads=True), key=lambda record: -record.size
    )
    large = [record for record in records if record.size >= MEMRAY_SHOWN]
    print(
        f"\n=== memray: mailtoaster's heap at its high-water mark with one {len(big) / MB:,.0f} MB message: "
        f"{reader.metadata.peak_memory / MB:,.1f} MB, of which {sum(r.size for r in large) / MB:,.1f} MB in "
        f"allocations of {MEMRAY_SHOWN / MB:g} MB or more:"
    )
    for record in large:
        print(f"  {record.size / MB:8,.1f} MB in {record.n_allocations} allocation(s), at (innermost first):")
        for function, filename, line in record.stack_trace(max_stacks=7):
            print(f"      {function} ({short_file(filename)}:{line})")


# --- the report ---------------------------------------------------------------------------------------


def revision() -> str:
    """The commit measured, and whether src/ differs from it (others edit the same checkout)."""

    def git(*arguments: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *arguments], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    try:
        head, dirty = git("log", "-1", "--format=%h %s"), git("status", "--porcelain", "--", "src")
    except OSError:
        return "unknown revision"
    head = head if len(head) <= 72 else head[:69] + "..."
    return f"{head or 'unknown revision'}{' + uncommitted changes in src/' if dirty else ''}"


def report(results: list[Measured], load: Load) -> None:
    per = "message" if not load.persistent else "message, connections kept open"
    print(
        f"\n{'':<20}{'conns':>6}{'smtp-source':>13}{'server CPU':>12}{'of it':>7}{'driver':>9}"
        f"{'p50':>9}{'p99':>9}\n{'':<20}{'':>6}{'msg/s':>13}{'ms/msg':>12}{'kernel':>7}{'msg/s':>9}"
        f"{'ms':>9}{'ms':>9}"
    )
    for result in results:
        for index, connections in enumerate(CONNECTIONS):
            speed, latency = result.throughput[connections], result.latency[connections]
            kernel = speed.system_per_message / speed.cpu_per_message if speed.cpu_per_message else 0.0
            print(
                f"{result.label if index == 0 else '':<20}{connections:>6}{speed.rate:>13,.0f}"
                f"{speed.cpu_per_message * 1000:>12.2f}{kernel:>7.0%}{latency.rate:>9,.0f}"
                f"{latency.p50 * 1000:>9.2f}{latency.p99 * 1000:>9.2f}"
            )
    print(f"(latency per {per}, measured by the Python driver run on its own)")
    print(
        f"\n{'memory (MB)':<20}{'peak RSS':>10}{'50 MB message:':>17}{'RSS before':>12}"
        f"{'peak':>8}{'rise':>8}{'s':>7}"
    )
    for result in results:
        big = result.big
        assert big is not None
        note = "" if big.reset else "  (VmHWM not resettable: rise is a lower bound)"
        if result.processes > 1:
            note += f"  ({result.processes} processes added up; Pss {result.pss / MB:,.1f})"
        print(
            f"{result.label:<20}{result.peak_rss / MB:>10.1f}{'':>17}{big.before / MB:>12.1f}"
            f"{big.peak / MB:>8.1f}{big.rise / MB:>+8.1f}{big.seconds:>7.2f}{note}"
        )


def targets(ours: Measured) -> list[tuple[str, str]]:
    speed = ours.throughput[TARGET_CONNECTIONS].rate
    big = ours.big
    assert big is not None
    return [
        (
            "PASS" if speed >= TARGET_RATE else "MISS",
            f"{TARGET_CONNECTIONS} connections >= {TARGET_RATE:,.0f} messages/s, every check on and every "
            f"message fsynced: {speed:,.0f}/s",
        ),
        (
            "PASS" if ours.peak_rss <= TARGET_PEAK_RSS else "MISS",
            f"peak RSS under that load <= {TARGET_PEAK_RSS / MB:,.0f} MB: {ours.peak_rss / MB:,.1f} MB"
            + (
                f" ({ours.processes} processes' VmHWM added up; Pss {ours.pss / MB:,.1f} MB)"
                if ours.processes > 1
                else ""
            ),
        ),
        (
            "PASS" if big.rise <= TARGET_BIG_RISE else "MISS",
            f"a 50 MB message raises RSS by <= {TARGET_BIG_RISE / MB:,.0f} MB: {big.rise / MB:+,.1f} MB "
            f"({big.before / MB:,.1f} -> {big.peak / MB:,.1f})",
        ),
    ]


# --- main ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    messages: int
    rounds: int
    driver_messages: int
    persistent: bool
    profile: bool
    profile_seconds: float
    tools_dir: Path
    workers: int | None = None
    """mailtoaster's ``[server] workers``; None: its default."""


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per smtp-source round (1000)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"smtp-source rounds per cell ({ROUNDS})")
    parser.add_argument("--driver-messages", type=int, default=600, help="messages per latency cell (600)")
    parser.add_argument("--quick", action="store_true", help="300 messages, 1 round, 300 for latency")
    parser.add_argument("--persistent", action="store_true", help="all messages of a connection over it")
    parser.add_argument("--profile", action="store_true", help="also py-spy and memray mailtoaster")
    parser.add_argument("--profile-seconds", type=float, default=8.0, help="py-spy sampling time (8)")
    parser.add_argument(
        "--tools", type=Path, default=DEFAULT_TOOLS_DIR, help="pip --target directory with py-spy and memray"
    )
    parser.add_argument(
        "--workers", type=int, help="mailtoaster's [server] workers (its default: one per core)"
    )
    args = parser.parse_args()
    messages, rounds, driver = (
        (300, 1, 300) if args.quick else (args.messages, args.rounds, args.driver_messages)
    )
    if min(messages, rounds) < 1 or driver < 2:
        parser.error("--messages and --rounds must be at least 1, --driver-messages at least 2")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    return Options(
        messages,
        rounds,
        driver,
        args.persistent,
        args.profile,
        args.profile_seconds,
        args.tools,
        args.workers,
    )


def main() -> int:
    options = parse_options()
    try:
        postfix = find_postfix_tools()
        with tempfile.TemporaryDirectory(prefix="smtp-load-") as temporary:
            run(options, postfix, Path(temporary))
    except (BenchError, OSError, subprocess.SubprocessError, smtplib.SMTPException) as error:
        print(f"smtp_load: {error}", file=sys.stderr)
        return 1
    return 0


def run(options: Options, postfix: PostfixTools, workdir: Path) -> None:
    installation = install(workdir / "checks", options.workers)
    with_spam = install(workdir / "default", options.workers, spam=True)
    load = Load(
        installation.message, options.messages, options.rounds, options.driver_messages, options.persistent
    )
    describe(load, postfix, installation, workdir, options.workers)
    big = big_message(BIG_MESSAGE_SIZE)
    peers: list[Measured] = []
    for start in (
        partial(start_smtp_sink, postfix, workdir),
        partial(start_aiosmtpd, workdir),
        partial(start_mailtoaster, with_spam, workdir, label=MAILTOASTER_SPAM),
    ):
        server = start()
        try:
            peers.append(measure(server, postfix, load, big))
        finally:
            server.stop()
    server = start_mailtoaster(installation, workdir)
    try:
        ours = measure(server, postfix, load, big)
        report([*peers, ours], load)
        inbox, junk = delivered(installation.maildir)
        print(
            f"\nmailtoaster: {inbox:,} messages in the inbox and {junk:,} in Junk, of {ours.sent:,} "
            f"accepted; a delivered message says: {verdicts(installation.maildir)}"
        )
        print("\ntargets (mailtoaster; messages/s from smtp-source, RSS from VmHWM)")
        for mark, text in targets(ours):
            print(f"  {mark:<5} {text}")
        if options.profile:
            profile_cpu(options, server, postfix, load, ours.throughput[TARGET_CONNECTIONS].rate)
    finally:
        server.stop()
    if options.profile:
        profile_memory(options, installation, workdir, big)


def describe(
    load: Load, postfix: PostfixTools, installation: Installation, workdir: Path, workers: int | None
) -> None:
    print(bench_dkim.machine())
    print(f"mailtoaster at {revision()}")
    mode = "over connections kept open (-d)" if load.persistent else "one connection per message"
    print(
        f"load: Postfix {postfix.version} smtp-source -F, a DKIM-signed "
        f"{load.message.stat().st_size:,}-octet message, {mode}; {load.messages:,} messages per round, "
        f"best of {load.rounds}; latency from an asyncio client, {load.driver_messages:,} messages per cell"
    )
    print(
        "mailtoaster: iprev, SPF, Sender ID, DomainKeys, DKIM, ADSP, DMARC (p=reject), ARC against a zone "
        f"file; {CLIENT_IP} is no relay client; every message fsynced into a Maildir; info log to a file"
    )
    processes = workers or os.cpu_count() or 1
    setting = "its default, one per core" if workers is None else "--workers"
    print(f"mailtoaster: {processes} process(es) ([server] workers: {setting})")
    alone, parallel = (durable_write_rate(workdir / "disk-probe", threads) for threads in (1, processes))
    print(
        f"disk: {alone:,.0f} Maildir-style deliveries/s in 1 thread, {parallel:,.0f}/s in {processes} (one "
        "per mailtoaster process): write 3.7 KB, fsync, rename, fsync the directory"
    )


def profile_cpu(options: Options, server: Server, postfix: PostfixTools, load: Load, rate: float) -> None:
    py_spy = tool_path(options.tools_dir, "py-spy")
    if py_spy is None:
        print(f"\nno CPU profile: py-spy is neither on PATH nor in {options.tools_dir}/bin")
        return
    cpu_profile(py_spy, server, postfix, load, rate, options.profile_seconds)


def profile_memory(options: Options, installation: Installation, workdir: Path, big: bytes) -> None:
    if importlib.util.find_spec("memray") is None and not (options.tools_dir / "memray").is_dir():
        print(f"\nno memory profile: memray is neither importable nor in {options.tools_dir}")
        return
    memory_profile(options.tools_dir, installation, workdir, big)


if __name__ == "__main__":
    sys.exit(main())
