"""``mailtoaster queue list|flush|delete``, run in-process against a queue made by the test."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from mailtoaster.cli import main
from mailtoaster.queue import Queue, QueueEntry, Recipient, RecipientState, queue_directory
from tests.clirun import assert_usage_error, run

MESSAGE = b"Subject: hello\r\n\r\nbody\r\n"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


def deferred_entry(queue: Queue) -> QueueEntry:
    """A message created two hours ago: one recipient delivered, one deferred until in ten minutes."""
    now = time.time()
    entry = queue.enqueue(MESSAGE, "alice@example.org", ["bob@example.net", "carol@example.com"])
    changed = replace(
        entry,
        created=now - 7200,
        attempts=3,
        next_attempt=now + 600,
        recipients=(
            Recipient("bob@example.net", RecipientState.DELIVERED, "2.0.0", "smtp; 250 ok", "mx.example.net"),
            Recipient("carol@example.com", RecipientState.PENDING, "4.4.1", "x-mailtoaster; connect refused"),
        ),
    )
    queue.update(changed)
    return changed


def test_list_text(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queue = Queue(queue_directory(data_dir))
    entry = deferred_entry(queue)
    bounce = queue.enqueue(MESSAGE, "", ["dave@example.net"])
    code, out, err = run(capsys, "queue", "list", "--data-dir", str(data_dir))
    assert code == 0, err
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith(entry.id))
    assert f"{len(MESSAGE)} bytes" in head
    assert "age 2h00m" in head or "age 1h59m" in head
    assert "next in 9m" in head or "next in 10m" in head
    assert "attempts 3" in head and "from <alice@example.org>" in head
    assert "    delivered  <bob@example.net>  2.0.0 smtp; 250 ok (mx.example.net)" in lines
    assert "    pending    <carol@example.com>  4.4.1 x-mailtoaster; connect refused" in lines
    bounce_head = next(line for line in lines if line.startswith(bounce.id))
    assert "from <>" in bounce_head and "next now" in bounce_head
    assert lines[-1] == f"-- 2 messages, {2 * len(MESSAGE)} bytes"


def test_list_json(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry = deferred_entry(Queue(queue_directory(data_dir)))
    code, out, _ = run(capsys, "queue", "list", "--json", "--data-dir", str(data_dir))
    assert code == 0
    (listed,) = json.loads(out)
    assert listed["id"] == entry.id
    assert listed["sender"] == "alice@example.org"
    assert listed["size"] == len(MESSAGE)
    assert listed["attempts"] == 3
    assert 7199 <= listed["age_seconds"] <= 7300
    assert listed["next_attempt"].endswith("+00:00")
    assert listed["recipients"] == [
        {
            "address": "bob@example.net",
            "state": "delivered",
            "status": "2.0.0",
            "last_reply": "smtp; 250 ok",
            "remote_mta": "mx.example.net",
        },
        {
            "address": "carol@example.com",
            "state": "pending",
            "status": "4.4.1",
            "last_reply": "x-mailtoaster; connect refused",
            "remote_mta": "",
        },
    ]


def test_list_empty_queue(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Queue(queue_directory(data_dir))
    assert run(capsys, "queue", "list", "--data-dir", str(data_dir)) == (0, "-- the queue is empty\n", "")
    assert run(capsys, "queue", "list", "--json", "--data-dir", str(data_dir))[1] == "[]\n"


def test_default_data_dir_is_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    entry = Queue(tmp_path / "var" / "queue").enqueue(MESSAGE, "alice@example.org", ["bob@example.net"])
    code, out, _ = run(capsys, "queue", "list")
    assert code == 0 and entry.id in out


def test_flush_makes_everything_due(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queue = Queue(queue_directory(data_dir))
    entry = deferred_entry(queue)
    already_due = queue.enqueue(MESSAGE, "alice@example.org", ["eve@example.net"])
    before = time.time()
    code, out, err = run(capsys, "queue", "flush", "--data-dir", str(data_dir))
    assert code == 0, err
    assert out.startswith("1 message(s) made due now")
    flushed = queue.get(entry.id)
    assert before <= flushed.next_attempt <= time.time()
    assert flushed.recipients == entry.recipients and flushed.attempts == 3
    assert queue.get(already_due.id) == already_due
    assert {e.id for e in queue.due(time.time())} == {entry.id, already_due.id}


def test_delete(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queue = Queue(queue_directory(data_dir))
    first = queue.enqueue(MESSAGE, "alice@example.org", ["bob@example.net"])
    second = queue.enqueue(MESSAGE, "alice@example.org", ["carol@example.net"])
    kept = queue.enqueue(MESSAGE, "alice@example.org", ["dave@example.net"])
    code, out, err = run(capsys, "queue", "delete", first.id, second.id, "--data-dir", str(data_dir))
    assert code == 0, err
    assert out.splitlines() == [f"deleted {first.id}", f"deleted {second.id}"]
    assert [e.id for e in queue.entries()] == [kept.id]
    assert not queue.message_path(first.id).exists()


def test_delete_unknown_id_deletes_nothing(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queue = Queue(queue_directory(data_dir))
    entry = queue.enqueue(MESSAGE, "alice@example.org", ["bob@example.net"])
    missing = "0614a3b2c1d00-0000000000"
    code, out, err = run(capsys, "queue", "delete", entry.id, missing, "--data-dir", str(data_dir))
    assert_usage_error(code, out, err, f"no message {missing} in the queue")
    assert [e.id for e in queue.entries()] == [entry.id]


def test_delete_refuses_what_is_not_an_id(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Queue(queue_directory(data_dir))
    code, out, err = run(capsys, "queue", "delete", "../../etc/passwd", "--data-dir", str(data_dir))
    assert_usage_error(code, out, err, "is not a queue id")


@pytest.mark.parametrize("action", [["list"], ["flush"], ["delete", "0614a3b2c1d00-0000000000"]])
def test_missing_queue_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: list[str]
) -> None:
    code, out, err = run(capsys, "queue", *action, "--data-dir", str(tmp_path / "nowhere"))
    assert_usage_error(code, out, err, "no queue at")
    assert not (tmp_path / "nowhere").exists()


def test_an_action_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["queue"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "required" in err
