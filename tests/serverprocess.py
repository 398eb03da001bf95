"""``mailtoaster serve`` as a real subprocess, for tests that must kill, signal and restart it.

:mod:`tests.serverharness` runs the server in a thread of the test process, which is quick but cannot
be SIGKILLed without killing the tests too. Here the server is a child process started with a TOML
configuration file: :class:`ServerProcess` starts it, waits for the welcome text on stdout and reads
the ports from it (the configuration asks for port 0, so every start gets new ports), keeps what it
logs on stderr so a test can wait for a log line (the only way to know that a signal was handled),
and kills, signals or restarts it.

:func:`prepare_installation` lays out the same installation as the threaded harness (users
alice/bob@example.org, a key for example.org, the zone and the ``tcp.smtp`` rules), but as files a
separate process reads. :func:`remote_sink` runs the aiosmtpd sink that plays the remote MX.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiosmtpd.controller import Controller

import mailtoaster
from mailtoaster.cli import main as cli_main
from mailtoaster.keys import KeyType, create_key
from tests.serverharness import (
    LOCAL_DOMAIN,
    RULES,
    STRANGER,
    Sink,
    add_users,
    free_port,
    zone_text,
)

STARTUP_TIMEOUT = 20.0
"""Seconds from spawning to the welcome text; a start takes well under one on an idle machine."""
EXIT_TIMEOUT = 15.0
SERVER_HOSTNAME = "mx.example.org"
WORKERS = 2
"""Processes per server: set, not one per core, so that every machine runs the same test."""
LISTENER_NAMES = ("smtp", "submission", "smtps")

_LISTENER_LINE = re.compile(r"^\s+(smtp|submission|smtps)\s+\S+:(\d+)")
_WELCOME_END = re.compile(r"^Next:$")
_ACCEPTING = re.compile(r"worker process (\d+) accepting")
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
"""A line the server's logging wrote (``logging.basicConfig`` format in ``cli/serve.py``)."""

TomlValue = str | int | float | bool | Sequence[str]


class ServerProcessError(RuntimeError):
    """The server process did not do what the test harness waited for (start, log, exit) in time."""


@dataclass(frozen=True)
class ServerPorts:
    """The ports one run of the server listens on (read from its welcome text)."""

    smtp: int
    submission: int
    smtps: int


@dataclass(frozen=True)
class ExitedServer:
    """A server process that ended by itself: how, and everything it printed."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    @property
    def message_lines(self) -> list[str]:
        """What stderr holds besides log records: the command's own messages (errors, tracebacks)."""
        return [line for line in self.stderr_lines if not LOG_RECORD.match(line)]


@dataclass(frozen=True)
class ServerSetup:
    """The files of one installation: what ``mailtoaster serve --config`` is given, and its data."""

    root: Path
    data_dir: Path
    config_file: Path
    rules_file: Path
    zone_file: Path

    def maildir(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.data_dir / "mail" / domain / local / "Maildir"


def toml_text(tables: Mapping[str, Mapping[str, TomlValue]]) -> str:
    """A TOML document of simple tables (strings, numbers, booleans, lists of strings)."""
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{name} = {_toml_value(value)}" for name, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return "[" + ", ".join(json.dumps(item) for item in value) + "]"


def default_tables(setup_paths: ServerSetup, sink_port: int) -> dict[str, dict[str, TomlValue]]:
    """Loopback only, ports chosen by the system, fast queue retries, DNS from the zone file."""
    return {
        "server": {
            "hostname": SERVER_HOSTNAME,
            "data_dir": str(setup_paths.data_dir),
            "smtp_port": 0,
            "submission_port": 0,
            "smtps_port": 0,
            "max_message_size": 1_000_000,
            "timeout": 20,
            "workers": WORKERS,
        },
        "rules": {"file": str(setup_paths.rules_file)},
        "dns": {"zone_file": str(setup_paths.zone_file)},
        "queue": {"port": sink_port, "first_retry": "1s", "max_retry": "2s"},
        "imap": {"imap_port": 0, "imaps_port": 0},
    }


def prepare_installation(
    root: Path, *, sink_port: int, overrides: Mapping[str, Mapping[str, TomlValue]] | None = None
) -> ServerSetup:
    """Users, an Ed25519 key for example.org, zone, rules and ``serve.toml`` under ``root``.

    ``overrides`` replaces single settings of the default tables (e.g. ``{"server": {"smtp_port":
    2525}}``). Ed25519 rather than RSA: relayed mail is still signed, at a fraction of the cost.
    """
    setup = ServerSetup(
        root=root,
        data_dir=root / "var",
        config_file=root / "serve.toml",
        rules_file=root / "tcp.smtp",
        zone_file=root / "test.zone",
    )
    setup.data_dir.mkdir(parents=True)
    add_users(setup.data_dir)
    keys_dir = setup.data_dir / "keys"
    create_key(keys_dir, LOCAL_DOMAIN, "ed2026", key_type=KeyType.ED25519)
    setup.zone_file.write_text(zone_text(keys_dir, root / "no-sender-keys"))
    setup.rules_file.write_text(RULES)
    tables = default_tables(setup, sink_port)
    for table, values in (overrides or {}).items():
        tables.setdefault(table, {}).update(values)
    setup.config_file.write_text(toml_text(tables))
    return setup


@contextlib.contextmanager
def remote_sink() -> Iterator[tuple[Sink, int]]:
    """The remote MX for remote.example (the zone points it at 127.0.0.1): ``(sink, port)``."""
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


class OutputReader:
    """Drains one pipe of the child in a thread (a full pipe would block the server) and keeps its
    lines, so that a test can wait for a line that matches."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        for line in self._stream:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._changed:
            return list(self._lines)

    def wait_for(self, pattern: str | re.Pattern[str], *, after: int = 0, timeout: float) -> int:
        """The index of the first line from ``after`` on that matches; an error at EOF or timeout."""
        expression = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            index = after
            while True:
                while index < len(self._lines):
                    if expression.search(self._lines[index]):
                        return index
                    index += 1
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    state = "ended" if self._closed else f"was silent for {timeout:.0f} s"
                    raise ServerProcessError(f"no line matching {expression.pattern!r}: output {state}")
                self._changed.wait(remaining)

    def join(self, timeout: float = EXIT_TIMEOUT) -> None:
        self._thread.join(timeout)


def parse_welcome(lines: Sequence[str]) -> ServerPorts:
    """The first port of each listener in the welcome text (``  smtp        127.0.0.1:34647``)."""
    found: dict[str, int] = {}
    for line in lines:
        if match := _LISTENER_LINE.match(line):
            found.setdefault(match.group(1), int(match.group(2)))
    missing = [name for name in LISTENER_NAMES if name not in found]
    if missing:
        raise ServerProcessError(f"the welcome text names no port for {', '.join(missing)}")
    return ServerPorts(found["smtp"], found["submission"], found["smtps"])


class _Run:
    """One incarnation of the server: the child and the readers of its two pipes."""

    def __init__(self, command: Sequence[str], cwd: Path) -> None:
        environment = dict(os.environ)
        source_root = str(Path(mailtoaster.__file__).resolve().parents[1])
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [source_root, environment.get("PYTHONPATH")])
        )
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.stdout = OutputReader(self.process.stdout, "serve-stdout")
        self.stderr = OutputReader(self.process.stderr, "serve-stderr")

    def wait(self, timeout: float) -> int:
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired as error:
            raise ServerProcessError(f"the server did not exit within {timeout:.0f} s") from error
        self.stdout.join()
        self.stderr.join()
        return returncode

    def exited(self, returncode: int) -> ExitedServer:
        return ExitedServer(returncode, "\n".join(self.stdout.lines), "\n".join(self.stderr.lines))


class ServerProcess:
    """``mailtoaster serve --config FILE`` as a child process; a context manager that kills it at exit.

    ``ports`` is None while no run is up, so load threads can poll it during a restart and back off.
    """

    def __init__(self, config_file: Path, *, cwd: Path, extra_args: Sequence[str] = ()) -> None:
        self.command = [
            sys.executable,
            "-m",
            "mailtoaster",
            "serve",
            "--config",
            str(config_file),
            *extra_args,
        ]
        self.cwd = cwd
        self.ports: ServerPorts | None = None
        self._run: _Run | None = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = STARTUP_TIMEOUT) -> ServerPorts:
        """Spawn the server and wait for its welcome text; the ports it listens on."""
        if self.running:
            raise ServerProcessError("the server is already running")
        run = _Run(self.command, self.cwd)
        self._run = run
        try:
            end = run.stdout.wait_for(_WELCOME_END, timeout=timeout)
        except ServerProcessError as error:
            stderr = "\n".join(run.stderr.lines[-5:])
            raise ServerProcessError(f"the server did not start ({error}); stderr ends: {stderr}") from error
        self.ports = parse_welcome(run.stdout.lines[:end])
        return self.ports

    def run_to_exit(self, timeout: float = STARTUP_TIMEOUT) -> ExitedServer:
        """Spawn the server expecting it to end by itself (a startup error): how it ended."""
        run = _Run(self.command, self.cwd)
        self._run = run
        return run.exited(run.wait(timeout))

    @property
    def running(self) -> bool:
        return self._run is not None and self._run.process.poll() is None

    def kill(self) -> int:
        """SIGKILL: no clean-up of any kind runs. Returns the exit status (``-SIGKILL``)."""
        run = self._current()
        self.ports = None
        run.process.kill()
        return run.wait(EXIT_TIMEOUT)

    def restart(self) -> ServerPorts:
        """Kill the server (if it runs) and start it again on the same data; the new ports."""
        if self.running:
            self.kill()
        return self.start()

    def send_signal(self, signum: signal.Signals) -> None:
        self._current().process.send_signal(signum)

    @property
    def main_pid(self) -> int:
        return self._current().process.pid

    def worker_pids(self) -> list[int]:
        """The worker processes the main process started (its children, from /proc)."""
        pid = self.main_pid
        children: list[int] = []
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                children.extend(int(child) for child in task.read_text().split())
        return children

    def wait_for_workers(self, count: int, timeout: float = STARTUP_TIMEOUT) -> list[int]:
        """The worker pids once ``count`` of them have said they accept."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            accepting = {int(m.group(1)) for line in self.log_lines if (m := _ACCEPTING.search(line))}
            if len(pids) == count and set(pids) <= accepting:
                return pids
            time.sleep(0.05)
        raise ServerProcessError(f"{count} worker processes did not come up in {timeout:.0f} s")

    def wait(self, timeout: float = EXIT_TIMEOUT) -> ExitedServer:
        """Wait for the server to exit by itself; how it ended and what it printed."""
        run = self._current()
        returncode = run.wait(timeout)
        self.ports = None
        return run.exited(returncode)

    def close(self) -> None:
        if self.running:
            self.kill()

    def _current(self) -> _Run:
        if self._run is None:
            raise ServerProcessError("the server was never started")
        return self._run

    # -- the log ---------------------------------------------------------------------------------

    def log_mark(self) -> int:
        """A position in the current run's log: :meth:`wait_for_log` looks only at lines after it."""
        return len(self._current().stderr.lines)

    def wait_for_log(self, pattern: str, *, after: int = 0, timeout: float = 10.0, times: int = 1) -> str:
        """The ``times``-th log line from ``after`` on that matches ``pattern`` (a regular expression):
        more than one when every process of the server logs it."""
        reader = self._current().stderr
        index = after - 1
        for _ in range(times):
            index = reader.wait_for(pattern, after=index + 1, timeout=timeout)
        return reader.lines[index]

    @property
    def log_lines(self) -> list[str]:
        return self._current().stderr.lines

    # -- clients ---------------------------------------------------------------------------------

    def smtp(self, source: str = STRANGER, *, timeout: float = 10.0) -> smtplib.SMTP:
        """An smtplib client on the SMTP port, bound to ``source`` and past EHLO."""
        if self.ports is None:
            raise ServerProcessError("the server is not running")
        client = smtplib.SMTP("127.0.0.1", self.ports.smtp, source_address=(source, 0), timeout=timeout)
        client.ehlo("client.sender.example")
        return client


def wait_until(condition: Callable[[], bool], seconds: float, interval: float = 0.05) -> bool:
    """Whether ``condition`` became true within ``seconds`` (polled every ``interval``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def greeting(port: int, source: str, *, timeout: float = 5.0) -> str:
    """The first reply line a client from ``source`` gets on connecting (220 greets, 554 refuses)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        return read_reply_line(sock)


def read_reply_line(sock: socket.socket) -> str:
    """One CRLF-terminated reply line from a raw socket ("" if the server closed the connection)."""
    received = b""
    while not received.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        received += chunk
    return received.decode("utf-8", errors="replace").rstrip("\r\n")


def refuses_connections(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:``port`` any more."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            return False
    except ConnectionRefusedError:
        return True


def queue_listing(data_dir: Path) -> list[dict[str, Any]]:
    """``mailtoaster queue list --json --data-dir DIR``, run in-process, parsed."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = cli_main(["queue", "list", "--json", "--data-dir", str(data_dir)])
    if code != 0:
        raise ServerProcessError(f"queue list exited {code}")
    listing: list[dict[str, Any]] = json.loads(output.getvalue())
    return listing
