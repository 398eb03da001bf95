"""The durable queue (``mailtoaster.queue.spool``) and its retry schedule (``mailtoaster.queue.schedule``)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailtoaster.queue import (
    EntryNotFoundError,
    InvalidAddressError,
    InvalidQueueIdError,
    Queue,
    QueueError,
    QueueNotFoundError,
    Recipient,
    RecipientState,
    RetryPolicy,
    is_expired,
    next_attempt_time,
    qmail_retry_time,
    retry_delay,
)
from mailtoaster.queue.spool import entry_from_json

MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "lock")


# -- enqueue and read back -------------------------------------------------------------------------


def test_enqueue_bytes_with_prefix(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = Queue(tmp_path / "q", clock=clock)
    entry = queue.enqueue(MESSAGE, "a@example.org", ["b@example.net", "c@example.com"], prefix=b"X-P: 1\r\n")
    assert entry.sender == "a@example.org"
    assert [r.address for r in entry.recipients] == ["b@example.net", "c@example.com"]
    assert all(r.state is RecipientState.PENDING for r in entry.recipients)
    assert entry.created == entry.next_attempt == clock.now
    assert entry.attempts == 0
    assert entry.size == len(MESSAGE) + 8
    with queue.open_message(entry.id) as stream:
        assert stream.read() == b"X-P: 1\r\n" + MESSAGE
    assert queue.get(entry.id) == entry
    assert queue.entries() == [entry]


def test_enqueue_from_path_and_stream(tmp_path: Path) -> None:
    source = tmp_path / "source.eml"
    source.write_bytes(MESSAGE)
    queue = Queue(tmp_path / "q")
    from_path = queue.enqueue(source, "", ["b@example.net"])
    from_stream = queue.enqueue(io.BytesIO(MESSAGE), "a@example.org", ["b@example.net"])
    for entry in (from_path, from_stream):
        assert queue.message_path(entry.id).read_bytes() == MESSAGE
    assert queue.get(from_path.id).sender == ""


def test_files_are_private(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q")
    entry = queue.enqueue(MESSAGE, "a@example.org", ["b@example.net"])
    assert stat.S_IMODE(queue.message_path(entry.id).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "q" / "envelopes" / f"{entry.id}.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "q").stat().st_mode) == 0o700


def test_ids_are_unique_sortable_and_safe(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = Queue(tmp_path / "q", clock=clock)
    ids = []
    for step in range(5):
        clock.now += step * 0.001
        ids.append(queue.enqueue(MESSAGE, "a@example.org", ["b@example.net"]).id)
    same_time = {queue.enqueue(MESSAGE, "a@example.org", ["b@example.net"]).id for _ in range(20)}
    assert ids == sorted(ids)
    assert len(same_time) == 20 and not same_time & set(ids)
    assert all(set(i) <= set("0123456789abcdef-") for i in ids)
    assert [e.id for e in queue.entries()] == sorted([*ids, *same_time])


def test_duplicate_recipients_are_queued_once(tmp_path: Path) -> None:
    entry = Queue(tmp_path / "q").enqueue(MESSAGE, "a@x.org", ["b@y.net", "c@y.net", "b@y.net"])
    assert [r.address for r in entry.recipients] == ["b@y.net", "c@y.net"]


@pytest.mark.parametrize(
    ("sender", "recipients"),
    [
        ("a@example.org\r\nRCPT TO:<evil@x>", ["b@example.net"]),
        ("a@example.org", ["b@example.net\nDATA"]),
        ("a@exa\x00mple.org", ["b@example.net"]),
        ("a@example.org", ["b@example.net> SIZE=1"]),
        ("a@example.org", ["no-domain"]),
        ("a@example.org", [""]),
    ],
)
def test_bad_addresses_are_refused_before_writing(tmp_path: Path, sender: str, recipients: list[str]) -> None:
    queue = Queue(tmp_path / "q")
    with pytest.raises(InvalidAddressError):
        queue.enqueue(MESSAGE, sender, recipients)
    assert files_under(tmp_path / "q") == []


def test_no_recipients_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(QueueError, match="at least one recipient"):
        Queue(tmp_path / "q").enqueue(MESSAGE, "a@example.org", [])


def test_failing_source_leaves_nothing(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        calls = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("client went away")
            return b"x" * 100

    queue = Queue(tmp_path / "q")
    with pytest.raises(QueueError, match="client went away"):
        queue.enqueue(Broken(), "a@example.org", ["b@example.net"])  # type: ignore[arg-type]
    assert files_under(tmp_path / "q") == []


# -- due, update, flush, remove --------------------------------------------------------------------


def test_due_update_flush_remove(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = Queue(tmp_path / "q", clock=clock)
    first = queue.enqueue(MESSAGE, "a@example.org", ["b@example.net"])
    clock.now += 10
    second = queue.enqueue(MESSAGE, "a@example.org", ["c@example.net"])
    assert [e.id for e in queue.due(clock.now)] == [first.id, second.id]
    assert [e.id for e in queue.due(clock.now - 5)] == [first.id]

    later = replace(
        first,
        attempts=1,
        next_attempt=clock.now + 300,
        recipients=(
            Recipient("b@example.net", RecipientState.PENDING, "4.7.1", "smtp; 451 4.7.1 later", "mx"),
        ),
    )
    queue.update(later)
    assert queue.get(first.id) == later
    assert [e.id for e in queue.due(clock.now)] == [second.id]

    assert queue.flush(clock.now) == 1
    assert queue.get(first.id).next_attempt == clock.now
    assert queue.get(first.id).recipients == later.recipients  # flush changes the time only

    queue.remove(first.id)
    assert [e.id for e in queue.entries()] == [second.id]
    assert not queue.message_path(first.id).exists()
    with pytest.raises(EntryNotFoundError):
        queue.get(first.id)
    with pytest.raises(EntryNotFoundError):
        queue.update(later)  # a removed entry is never brought back
    with pytest.raises(EntryNotFoundError):
        queue.remove(first.id)
    with pytest.raises(EntryNotFoundError):
        queue.open_message(first.id)


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "", "0614A3B2C1D00-7F3A9C21E4", "x" * 24])
def test_ids_are_checked_before_use_as_file_names(tmp_path: Path, bad_id: str) -> None:
    queue = Queue(tmp_path / "q")
    for operation in (queue.get, queue.remove, queue.open_message, queue.message_path):
        with pytest.raises(InvalidQueueIdError):
            operation(bad_id)


def test_missing_queue_is_not_created_when_asked_not_to(tmp_path: Path) -> None:
    with pytest.raises(QueueNotFoundError, match="no queue at"):
        Queue(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()


def test_envelope_is_json_with_every_field(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q", clock=FakeClock(1234.5))
    entry = queue.enqueue(MESSAGE, "a@example.org", ["b@example.net"])
    document = json.loads((tmp_path / "q" / "envelopes" / f"{entry.id}.json").read_text())
    assert document["version"] == 1
    assert document["id"] == entry.id
    assert document["sender"] == "a@example.org"
    assert document["created"] == document["next_attempt"] == 1234.5
    assert document["attempts"] == 0
    assert document["size"] == len(MESSAGE)
    assert document["recipients"] == [
        {
            "address": "b@example.net",
            "state": "pending",
            "status": "",
            "diagnostic": "",
            "remote_mta": "",
            "reported": False,
        }
    ]


@pytest.mark.parametrize(
    "mutation",
    [
        lambda d: d.pop("sender"),
        lambda d: d.update(attempts="1"),
        lambda d: d.update(version=99),
        lambda d: d.update(recipients=[]),
        lambda d: d["recipients"][0].update(state="lost"),
        lambda d: d.update(id="../x"),
    ],
)
def test_corrupt_envelopes_are_rejected(tmp_path: Path, mutation: Callable[[dict[str, Any]], object]) -> None:
    queue = Queue(tmp_path / "q")
    entry = queue.enqueue(MESSAGE, "a@example.org", ["b@example.net"])
    path = tmp_path / "q" / "envelopes" / f"{entry.id}.json"
    document = json.loads(path.read_text())
    mutation(document)
    path.write_text(json.dumps(document))
    with pytest.raises(QueueError):
        entry_from_json(path.read_bytes())
    assert queue.entries() == []  # skipped (and logged), not fatal


# -- crashes ---------------------------------------------------------------------------------------


class SimulatedKill(BaseException):
    """Stands for SIGKILL: not an Exception, so no clean-up code of the queue runs."""


class CallCounter:
    """Wraps os.fsync, os.replace and os.rename; raises on the Nth call of any of them."""

    def __init__(self, fail_at: int | None, error: BaseException) -> None:
        self.fail_at = fail_at
        self.error = error
        self.calls: list[str] = []

    def wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if len(self.calls) == self.fail_at:
                raise self.error
            return real(*args, **kwargs)

        return wrapper

    @classmethod
    def install(
        cls, monkeypatch: pytest.MonkeyPatch, fail_at: int | None, error: BaseException
    ) -> CallCounter:
        counter = cls(fail_at, error)
        for name in ("fsync", "replace", "rename"):
            monkeypatch.setattr(os, name, counter.wrap(name, getattr(os, name)))
        return counter


def enqueue_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    with monkeypatch.context() as patch:
        counter = CallCounter.install(patch, None, OSError())
        Queue(tmp_path / "probe").enqueue(MESSAGE, "a@example.org", ["b@example.net"])
    return counter.calls


def test_enqueue_protocol_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # message fsync, rename, directory fsync; envelope fsync, rename (commit), directory fsync
    assert enqueue_steps(tmp_path, monkeypatch) == ["fsync", "replace", "fsync", "fsync", "replace", "fsync"]


def crash_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, bool]]:
    """Each step number, and whether the commit (the envelope's rename) is complete after it fails."""
    steps = enqueue_steps(tmp_path, monkeypatch)
    commit = [i for i, name in enumerate(steps, 1) if name == "replace"][-1]
    for step in range(1, len(steps) + 1):
        yield step, step > commit


def test_kill_at_every_step_leaves_complete_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for step, committed in crash_points(tmp_path, monkeypatch):
        root = tmp_path / f"kill-{step}"
        queue = Queue(root)
        survivor = queue.enqueue(b"earlier message\r\n", "a@example.org", ["old@example.net"])
        with monkeypatch.context() as patch:
            CallCounter.install(patch, step, SimulatedKill())
            with pytest.raises(SimulatedKill):
                queue.enqueue(MESSAGE, "a@example.org", ["b@example.net"])
        restarted = Queue(root)
        report = restarted.recover()
        entries = restarted.entries()
        assert survivor in entries, step
        others = [e for e in entries if e.id != survivor.id]
        if committed:
            (entry,) = others
            assert restarted.message_path(entry.id).read_bytes() == MESSAGE
            assert [r.address for r in entry.recipients] == ["b@example.net"]
        else:
            assert others == [], step
            assert report.temporary_files or report.orphan_messages, step
        assert files_under(root / "tmp") == []
        assert sorted(p.name for p in (root / "messages").iterdir()) == sorted(e.id for e in entries)
        assert report.corrupt_entries == ()


def test_error_at_every_step_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for step, _ in crash_points(tmp_path, monkeypatch):
        root = tmp_path / f"error-{step}"
        queue = Queue(root)
        with monkeypatch.context() as patch:
            CallCounter.install(patch, step, OSError(28, "No space left on device"))
            with pytest.raises(QueueError, match="No space left"):
                queue.enqueue(MESSAGE, "a@example.org", ["b@example.net"])
        assert queue.entries() == [], step  # not acknowledged, so not queued: no duplicate later
        assert files_under(root) == [], step


def test_recover_cleans_garbage_and_sets_corrupt_entries_aside(tmp_path: Path) -> None:
    root = tmp_path / "q"
    queue = Queue(root)
    good = queue.enqueue(MESSAGE, "a@example.org", ["b@example.net"])
    unreadable = queue.enqueue(MESSAGE, "a@example.org", ["c@example.net"])
    headless = queue.enqueue(MESSAGE, "a@example.org", ["d@example.net"])
    (root / "envelopes" / f"{unreadable.id}.json").write_text("{not json")
    queue.message_path(headless.id).unlink()
    (root / "tmp" / "0614a3b2c1d00-0000000000.message").write_bytes(b"half")
    (root / "messages" / "0614a3b2c1d00-1111111111").write_bytes(b"never committed")

    report = queue.recover()
    assert report.temporary_files == ("0614a3b2c1d00-0000000000.message",)
    assert report.orphan_messages == ("0614a3b2c1d00-1111111111",)
    assert set(report.corrupt_entries) == {unreadable.id, headless.id}
    assert report.complete_entries == 1
    assert queue.entries() == [good]
    assert sorted(p.name for p in (root / "corrupt").iterdir()) == sorted(
        [f"{unreadable.id}.json", unreadable.id, f"{headless.id}.json"]
    )
    assert queue.recover().complete_entries == 1  # idempotent


KILL_CHILD = textwrap.dedent(
    """
    import sys
    from mailtoaster.queue import Queue
    queue = Queue(sys.argv[1])
    body = b"Subject: kill test\\r\\n\\r\\n" + b"x" * 200_000
    while True:
        entry = queue.enqueue(body, "a@example.org", ["b@example.net"])
        print(entry.id, flush=True)
    """
)


def test_sigkill_never_loses_an_acknowledged_message(tmp_path: Path) -> None:
    root = tmp_path / "q"
    body = b"Subject: kill test\r\n\r\n" + b"x" * 200_000
    acknowledged: set[str] = set()
    for delay in (0.3, 0.45, 0.6):
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD, str(root)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
        )
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        output, _ = child.communicate(timeout=10)
        acknowledged |= set(output.decode().split())
        queue = Queue(root)
        queue.recover()
        present = {entry.id for entry in queue.entries()}
        assert acknowledged <= present
        assert all(queue.message_path(i).read_bytes() == body for i in present)
    assert acknowledged, "the child never got to enqueue anything"


# -- size ------------------------------------------------------------------------------------------


class GeneratedStream(io.RawIOBase):
    """``size`` bytes of a repeating pattern, produced on demand (never held in memory)."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        count = min(self.remaining, 65536 if size < 0 else size)
        chunk = (b"0123456789abcdef" * (count // 16 + 1))[:count]
        self.remaining -= count
        self.digest.update(chunk)
        return chunk


def test_large_message_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    size = 48 * 1024 * 1024
    queue = Queue(tmp_path / "q")
    source = GeneratedStream(size)
    tracemalloc.start()
    try:
        entry = queue.enqueue(source, "a@example.org", ["b@example.net"])  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert entry.size == size
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while queueing {size}"
    stored = hashlib.sha256()
    with queue.open_message(entry.id) as stream:
        while chunk := stream.read(1 << 20):
            stored.update(chunk)
    assert stored.hexdigest() == source.digest.hexdigest()


# -- schedule --------------------------------------------------------------------------------------


def test_retry_delays_double_up_to_the_ceiling() -> None:
    assert [retry_delay(n) / 60 for n in range(1, 9)] == [5, 10, 20, 40, 80, 120, 120, 120]
    assert retry_delay(10_000) == 7200
    policy = RetryPolicy(first_delay=60, max_delay=600, lifetime=3600)
    assert [retry_delay(n, policy) for n in range(1, 6)] == [60, 120, 240, 480, 600]


def test_next_attempt_and_expiry() -> None:
    created = 1_000_000.0
    day = 86400.0
    assert next_attempt_time(1, created, created + 1, RetryPolicy()) == created + 1 + 300
    assert next_attempt_time(7, created, created + day, RetryPolicy()) == created + day + 7200
    # a retry that would fall after the lifetime is moved to the expiry: one last try, then the bounce
    assert next_attempt_time(50, created, created + 5 * day - 60, RetryPolicy()) == created + 5 * day
    assert next_attempt_time(51, created, created + 5 * day, RetryPolicy()) is None
    assert not is_expired(created, created + 5 * day - 1)
    assert is_expired(created, created + 5 * day)


def test_qmail_schedule_is_quadratic() -> None:
    created = 0.0
    times = [created]
    for _ in range(4):
        times.append(qmail_retry_time(created, times[-1]))
    assert times[1:] == [400, 1600, 3600, 6400]  # (20 s · n)²: 6m40s, 26m40s, 1h, 1h46m40s


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="first_delay"):
        RetryPolicy(first_delay=0)
    with pytest.raises(ValueError, match="first_delay"):
        RetryPolicy(first_delay=600, max_delay=60)
