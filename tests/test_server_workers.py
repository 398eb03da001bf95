"""``mailtoaster serve`` as several processes (docs/smtp.md, worker processes): the workers accept on
the main process's sockets, pick up rule reloads, hand their queued mail to the main process's queue
runner, are replaced when they die, and die with the main process.

Which process accepts a connection is the kernel's choice; to talk to a worker for certain, a test
stops the main process (SIGSTOP): only the workers can accept then.
"""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.serverharness import ALICE, RELAY_CLIENT, REMOTE, STRANGER, free_port
from tests.serverprocess import (
    ServerProcess,
    greeting,
    prepare_installation,
    remote_sink,
    wait_until,
)

WORKERS = 3
NEWLY_DENIED = "127.0.0.5"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def main_stopped(server: ServerProcess) -> Iterator[None]:
    """The main process frozen: only the workers accept connections meanwhile."""
    os.kill(server.main_pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.main_pid, signal.SIGCONT)


def message(recipient: str, subject: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "someone@sender.example"
    mail["To"] = recipient
    mail["Subject"] = subject
    mail.set_content("Sent to a worker process.\n")
    return mail


def start(server: ServerProcess) -> list[int]:
    server.start()
    return server.wait_for_workers(WORKERS - 1)


def test_workers_accept_and_deliver_while_the_main_process_is_stopped(tmp_path: Path) -> None:
    setup = prepare_installation(tmp_path, sink_port=free_port(), overrides={"server": {"workers": WORKERS}})
    with ServerProcess(setup.config_file, cwd=tmp_path) as server:
        workers = start(server)
        assert len(set(workers)) == WORKERS - 1 and server.main_pid not in workers
        with main_stopped(server):
            for number in range(6):
                with server.smtp(STRANGER) as client:
                    client.send_message(message(ALICE, f"number {number}"))
        delivered = list((setup.maildir(ALICE) / "new").iterdir())
    assert len(delivered) == 6
    delivering = {name.split("P", 1)[1].split("Q", 1)[0] for name in (path.name for path in delivered)}
    assert delivering <= {str(pid) for pid in workers}


def test_rules_reloaded_on_sighup_reach_every_worker(tmp_path: Path) -> None:
    setup = prepare_installation(tmp_path, sink_port=free_port(), overrides={"server": {"workers": WORKERS}})
    with ServerProcess(setup.config_file, cwd=tmp_path) as server:
        start(server)
        assert server.ports is not None
        port = server.ports.smtp
        setup.rules_file.write_text(f"{NEWLY_DENIED}:deny\n{setup.rules_file.read_text()}")
        mark = server.log_mark()
        server.send_signal(signal.SIGHUP)
        server.wait_for_log("rules reloaded", after=mark, times=WORKERS)
        with main_stopped(server):
            for _ in range(4):
                assert greeting(port, NEWLY_DENIED).startswith("554 5.7.1 ")
                assert greeting(port, STRANGER).startswith("220 ")


def test_mail_a_worker_queues_wakes_the_main_process_queue_runner(tmp_path: Path) -> None:
    """The runner scans the queue once a minute by itself; a worker's SIGUSR1 makes it look at once."""
    with remote_sink() as (sink, sink_port):
        setup = prepare_installation(
            tmp_path, sink_port=sink_port, overrides={"server": {"workers": WORKERS}}
        )
        with ServerProcess(setup.config_file, cwd=tmp_path) as server:
            start(server)
            with main_stopped(server), server.smtp(RELAY_CLIENT) as client:
                client.send_message(message(REMOTE, "relayed by a worker"))
            assert wait_until(lambda: len(sink.messages) == 1, 15.0), "the queue runner was not woken"


def test_a_dead_worker_is_replaced_and_its_spool_files_removed(tmp_path: Path) -> None:
    setup = prepare_installation(tmp_path, sink_port=free_port(), overrides={"server": {"workers": 2}})
    spool = setup.data_dir / "spool"
    with ServerProcess(setup.config_file, cwd=tmp_path) as server:
        [worker] = start_workers(server, 1)
        with main_stopped(server):
            client = server.smtp(STRANGER)
            assert client.mail("someone@sender.example")[0] == 250 and client.rcpt(ALICE)[0] == 250
            client.putcmd("data")
            assert client.getreply()[0] == 354
            # Over the in-memory limit, so that the worker spools it to a file.
            client.send(b"Subject: never finished\r\n\r\n" + b"half a message\r\n" * 10_000)
            assert wait_until(lambda: any(spool.glob(f"in.{worker}.*")), 5.0)
            mark = server.log_mark()
            os.kill(worker, signal.SIGKILL)
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.close()
        server.wait_for_log(rf"worker process {worker} ended \(signal 9\)", after=mark)
        [replacement] = server.wait_for_workers(1)
        assert replacement != worker and not any(spool.glob(f"in.{worker}.*"))
        with main_stopped(server), server.smtp(STRANGER) as client:
            client.send_message(message(ALICE, "to the replacement"))
    [delivered] = (setup.maildir(ALICE) / "new").iterdir()
    assert f"P{worker}Q" not in delivered.name


def start_workers(server: ServerProcess, count: int) -> list[int]:
    server.start()
    return server.wait_for_workers(count)


def test_workers_die_with_the_main_process_and_stop_with_it(tmp_path: Path) -> None:
    setup = prepare_installation(tmp_path, sink_port=free_port(), overrides={"server": {"workers": WORKERS}})
    with ServerProcess(setup.config_file, cwd=tmp_path) as server:
        workers = start(server)
        server.send_signal(signal.SIGTERM)
        exited = server.wait()
        assert exited.returncode == 0 and "Traceback" not in exited.stderr
        assert exited.stderr.count(" stopped") == WORKERS
        assert wait_until(lambda: not any(alive(pid) for pid in workers), 5.0)
        workers = start(server)
        server.kill()
        assert wait_until(lambda: not any(alive(pid) for pid in workers), 5.0), "orphaned workers live on"


def test_the_sockets_option_round_trips_and_refuses_garbage() -> None:
    from mailtoaster.server.workers import decode_fds, encode_fds, worker_count

    fds = {"smtp": [3, 4], "submission": [5], "smtps": [6]}
    assert decode_fds(encode_fds(fds)) == fds
    assert encode_fds({"smtp": [3], "submission": []}) == "smtp=3"
    for garbage in ("smtp", "smtp=x", "=3", "smtp=3;bad name=4"):
        with pytest.raises(ValueError):
            decode_fds(garbage)
    assert worker_count(3) == 3 and worker_count(0) == (os.cpu_count() or 1)


def test_a_worker_given_sockets_it_cannot_take_over_is_a_startup_error(tmp_path: Path) -> None:
    """A worker process started by hand with a bad option (its parent: this test) says so, exit 2."""
    setup = prepare_installation(tmp_path, sink_port=free_port())
    command = [sys.executable, "-m", "mailtoaster", "serve", "--config", str(setup.config_file)]
    command += ["--worker-sockets", "smtp=x", "--worker-of", str(os.getpid())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "cannot take over the listening sockets" in done.stderr and "Traceback" not in done.stderr
