"""``mailtoaster serve`` as several processes, so that SMTP work uses every CPU core.

One Python process runs its Python code on one core at a time (the GIL), and a small message's
delivery waits for the disk on the event loop (see ``pipeline.process._storing``). So ``serve`` starts
``[server] workers`` processes (one per core by default), as Postfix runs several ``smtpd``:

* the **main process** binds the listening sockets, cleans the spool, recovers the queue, serves SMTP
  itself and runs the one queue runner; then it starts the others and keeps them running;
* each **worker process** is a fresh ``mailtoaster serve`` (started anew, not forked: the main
  process has threads and an event loop by then, which a fork would copy half-way) that inherits the
  listening sockets and accepts on them too, with its own directory connection, resolver and event
  loop. What it queues wakes the main process's runner with SIGUSR1.

The kernel hands each new connection to whichever process accepts first: a process busy with CPU or
waiting for the disk leaves it to the others. Signals: SIGTERM (or SIGINT) to the main process stops
every process, each finishing the transactions in progress; SIGHUP reloads the rules in all of them. A
worker that dies is started again after a pause; a worker whose main process dies is killed by the
kernel (``PR_SET_PDEATHSIG``), as its messages in flight were never acknowledged. Spool files of a
dead worker are removed by the main process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mailtoaster.config import Config
from mailtoaster.server.app import SHUTDOWN_GRACE, MailServer, StartupError, WorkerRole
from mailtoaster.smtp.data import spool_file_prefix

log = logging.getLogger("mailtoaster.server")

SOCKETS_OPTION = "--worker-sockets"
"""The hidden ``serve`` option that makes a worker process: the inherited listening sockets."""
PARENT_OPTION = "--worker-of"
"""The hidden ``serve`` option naming the main process's pid."""

READY = "ready"
"""What a worker prints on its standard output (a pipe to the main process) once its signal
handlers are in place: before that, a SIGHUP would end it (the default action)."""

RESTART_DELAY = 1.0
"""Seconds before a dead worker is started again; doubled while workers keep dying, up to a minute."""

_PR_SET_PDEATHSIG = 1


def worker_count(configured: int) -> int:
    """Processes to run in all: the setting, or one per CPU core for 0."""
    return configured or os.cpu_count() or 1


def encode_fds(fds: Mapping[str, Sequence[int]]) -> str:
    """``smtp=3,4;submission=5;smtps=6``."""
    return ";".join(f"{name}={','.join(str(fd) for fd in group)}" for name, group in fds.items() if group)


def decode_fds(text: str) -> dict[str, list[int]]:
    """The inverse of :func:`encode_fds`; ValueError for anything else."""
    fds: dict[str, list[int]] = {}
    for item in filter(None, text.split(";")):
        name, equals, numbers = item.partition("=")
        if not equals or not name.isidentifier():
            raise ValueError(f"{SOCKETS_OPTION}: {item!r} is not name=fd,fd")
        fds[name] = [int(number) for number in numbers.split(",")]
    return fds


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when its parent dies, and leave now if that already
    happened (between the parent's fork and this call)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def _notify(parent: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(parent, signal.SIGUSR1)


async def run_worker(config: Config, fds_text: str, parent: int) -> int:
    """The life of one worker process: accept on the inherited sockets until SIGTERM."""
    _die_with(parent)
    try:
        sockets = {
            name: [socket.socket(fileno=fd) for fd in group] for name, group in decode_fds(fds_text).items()
        }
    except (ValueError, OSError) as error:
        raise StartupError(f"worker process: cannot take over the listening sockets: {error}") from error
    server = MailServer(config, worker=WorkerRole(sockets, queued=lambda: _notify(parent)))
    await server.start()
    server.install_signal_handlers()
    log.info("worker process %d accepting", os.getpid())
    print(READY, flush=True)  # to the main process: signals are safe to send from now on
    await server.wait_stopped()
    return 0


async def run_main(config: Config, worker_command: Sequence[str], ready: Callable[[MailServer], None]) -> int:
    """The main process: serve, start the workers, stop them all on SIGTERM."""
    server = MailServer(config)
    await server.start()
    server.install_signal_handlers()
    pool: WorkerPool | None = None
    count = worker_count(config.server.workers)
    if count > 1:
        pool = WorkerPool(worker_command, server.listening_fds(), count - 1, server.spool_dir)
        _forward_signals(server, pool)
        pool.start()
    ready(server)
    await server.wait_stopped()
    if pool is not None:
        await pool.stop()
    return 0


def _forward_signals(server: MailServer, pool: WorkerPool) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        pool.signal_all(signal.SIGTERM)
        server.request_stop()

    def reload() -> None:
        server.reload_rules()
        pool.signal_all(signal.SIGHUP)

    def wake() -> None:
        if server.runner is not None:
            server.runner.wake()

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGUSR1, wake)


class WorkerPool:
    """The worker processes of the main process, kept running until :meth:`stop`."""

    def __init__(
        self, command: Sequence[str], fds: Mapping[str, Sequence[int]], count: int, spool_dir: Path
    ) -> None:
        self._command = [*command, SOCKETS_OPTION, encode_fds(fds), PARENT_OPTION, str(os.getpid())]
        self._fds = [fd for group in fds.values() for fd in group]
        self._count = count
        self._spool_dir = spool_dir
        self._starting: dict[int, asyncio.subprocess.Process] = {}
        self._ready: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._reloads = 0
        """SIGHUPs forwarded so far: a worker that was starting during one gets it once ready."""

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep_running(slot), name=f"worker-{slot}")
            for slot in range(self._count)
        ]

    def signal_all(self, signum: int) -> None:
        """A signal to every worker whose handlers are in place; SIGTERM (and SIGKILL) to those still
        starting too, which simply ends them."""
        if signum in (signal.SIGTERM, signal.SIGKILL):
            self._stopping = True
            targets = [*self._ready.values(), *self._starting.values()]
        else:
            self._reloads += signum == signal.SIGHUP
            targets = list(self._ready.values())
        for process in targets:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    async def stop(self, grace: float = SHUTDOWN_GRACE + 5) -> None:
        """SIGTERM to every worker (each finishes its transactions), SIGKILL after ``grace``."""
        self.signal_all(signal.SIGTERM)
        if not self._tasks:
            return
        _, running = await asyncio.wait(self._tasks, timeout=grace)
        if running:
            self.signal_all(signal.SIGKILL)
            await asyncio.wait(running)

    async def _keep_running(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY
        while not self._stopping:
            started = loop.time()
            pid, status = await self._run_one(slot)
            self._remove_spool_files(pid)
            if self._stopping:
                return
            if loop.time() - started > 60:
                delay = RESTART_DELAY
            log.error("worker process %d ended (%s); starting another in %g s", pid, _ended(status), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)

    async def _run_one(self, slot: int) -> tuple[int, int]:
        """Start a worker, wait until it is ready and then until it ends: (pid, exit status)."""
        process = await asyncio.create_subprocess_exec(
            *self._command,
            pass_fds=self._fds,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        self._starting[slot] = process
        reloads = self._reloads
        try:
            if (await process.stdout.readline()).strip() == READY.encode():
                self._ready[slot] = process
                del self._starting[slot]
                if self._reloads != reloads:
                    process.send_signal(signal.SIGHUP)
            while await process.stdout.read(4096):
                pass  # a worker prints nothing else; a full pipe must not block it if it does
            return process.pid, await process.wait()
        finally:
            self._starting.pop(slot, None)
            self._ready.pop(slot, None)

    def _remove_spool_files(self, pid: int) -> None:
        """Messages a dead worker was receiving were never acknowledged: their clients still have them."""
        for path in self._spool_dir.glob(spool_file_prefix(pid) + "*"):
            path.unlink(missing_ok=True)


def _ended(status: int) -> str:
    return f"signal {-status}" if status < 0 else f"exit status {status}"
