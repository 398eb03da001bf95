"""A private ``redis-server`` for tests: Debian's binary on a free loopback port, no persistence.

Without ``redis-server`` the tests that need it skip, except under ``CI=true``, where they fail:
``scripts/test`` installs it. Used by the token store conformance tests and the server's spam tests
(a Redis that is stopped while the server runs).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REDIS_PACKAGE = "redis-server"
START_TIMEOUT = 10.0
"""Seconds redis-server may take to answer PING after it was started (it takes milliseconds)."""


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    return found


def require_redis_server() -> str:
    binary = redis_server_binary()
    if binary is not None:
        return binary
    problem = "redis-server is not installed"
    if _ci():
        pytest.fail(f"{problem}; CI=true requires it (scripts/test installs {REDIS_PACKAGE})")
    pytest.skip(f"{problem} (install: apt-get install {REDIS_PACKAGE})")


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextmanager
def running_redis(binary: str) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, stopped (and its directory removed) after."""
    with tempfile.TemporaryDirectory(prefix="mt-redis-") as workdir:
        port = free_port()
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", workdir, "--daemonize", "no", "--logfile", str(Path(workdir) / "redis.log")]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _answers_ping(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    log = Path(workdir, "redis.log")
                    detail = log.read_text(errors="replace") if log.exists() else ""
                    raise RuntimeError(f"redis-server did not start on port {port}:\n{detail}")
                time.sleep(0.02)
            yield RedisServer(port, process)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()


def flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
