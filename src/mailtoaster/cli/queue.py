"""``mailtoaster queue list|flush|delete``: look at and manage the outbound queue of a data directory."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailtoaster.cli.common import CliError
from mailtoaster.queue import Queue, QueueEntry, QueueError, check_queue_id, queue_directory
from mailtoaster.queue.runner import DEFAULT_SCAN_INTERVAL

DEFAULT_DATA_DIR = Path("var")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "queue",
        help="list, flush or delete messages in the outbound queue",
        description="Inspect and manage the outbound queue at DATA_DIR/queue.",
    )
    actions = parser.add_subparsers(dest="queue_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="show every queued message and its recipients")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing.set_defaults(func=run_list)
    flush = actions.add_parser(
        "flush",
        help="make every queued message due now",
        description="Set every message's next attempt to now. A running server delivers them at its "
        f"next queue scan (at most {DEFAULT_SCAN_INTERVAL:.0f} s later).",
    )
    flush.set_defaults(func=run_flush)
    delete = actions.add_parser(
        "delete",
        help="remove messages from the queue (no bounce is sent)",
        description="Remove messages "
        "from the queue without delivering or bouncing them. A delivery already in progress finishes.",
    )
    delete.add_argument("ids", nargs="+", metavar="ID", help="queue id, as shown by 'queue list'")
    delete.set_defaults(func=run_delete)
    for action in (listing, flush, delete):
        action.add_argument(
            "--data-dir",
            metavar="DIR",
            default=str(DEFAULT_DATA_DIR),
            help=f"the server's data directory; the queue is DIR/queue (default {DEFAULT_DATA_DIR})",
        )


def open_queue(args: argparse.Namespace) -> Queue:
    try:
        return Queue(queue_directory(args.data_dir), create=False)
    except QueueError as exc:
        raise CliError(f"{exc} (is --data-dir {args.data_dir} the server's data directory?)") from exc


def format_duration(seconds: float) -> str:
    """``45s``, ``12m``, ``2h05m``, ``3d04h``: short enough for a column."""
    whole = int(max(0.0, seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


def next_attempt_text(entry: QueueEntry, now: float) -> str:
    if not entry.pending:
        return "bounce pending"
    if entry.next_attempt <= now:
        return "next now"
    return f"next in {format_duration(entry.next_attempt - now)}"


def entry_lines(entry: QueueEntry, now: float) -> list[str]:
    head = (
        f"{entry.id}  {entry.size} bytes  age {format_duration(entry.age(now))}  "
        f"{next_attempt_text(entry, now)}  attempts {entry.attempts}  from <{entry.sender}>"
    )
    lines = [head]
    for recipient in entry.recipients:
        line = f"    {recipient.state.value:<9}  <{recipient.address}>"
        if recipient.diagnostic:
            line += f"  {recipient.status} {recipient.diagnostic}"
        if recipient.remote_mta:
            line += f" ({recipient.remote_mta})"
        lines.append(line)
    return lines


def entry_json(entry: QueueEntry, now: float) -> dict[str, object]:
    return {
        "id": entry.id,
        "sender": entry.sender,
        "size": entry.size,
        "created": _iso(entry.created),
        "age_seconds": int(entry.age(now)),
        "attempts": entry.attempts,
        "next_attempt": _iso(entry.next_attempt),
        "recipients": [
            {
                "address": r.address,
                "state": r.state.value,
                "status": r.status,
                "last_reply": r.diagnostic,
                "remote_mta": r.remote_mta,
            }
            for r in entry.recipients
        ],
    }


def run_list(args: argparse.Namespace) -> int:
    entries = open_queue(args).entries()
    now = time.time()
    if args.json:
        print(json.dumps([entry_json(entry, now) for entry in entries], indent=2, ensure_ascii=False))
        return 0
    for entry in entries:
        print("\n".join(entry_lines(entry, now)))
    total = sum(entry.size for entry in entries)
    count = f"{len(entries)} message" + ("" if len(entries) == 1 else "s")
    print(f"-- {count}, {total} bytes" if entries else "-- the queue is empty")
    return 0


def run_flush(args: argparse.Namespace) -> int:
    queue = open_queue(args)
    try:
        rescheduled = queue.flush(time.time())
    except QueueError as exc:
        raise CliError(str(exc)) from exc
    print(
        f"{rescheduled} message(s) made due now; a running server delivers them at its next queue scan "
        f"(within {DEFAULT_SCAN_INTERVAL:.0f} s)"
    )
    return 0


def _checked_ids(queue: Queue, ids: Sequence[str]) -> list[str]:
    """All ids valid and queued, or an error naming the first that is not (nothing is deleted then)."""
    for entry_id in ids:
        try:
            queue.get(check_queue_id(entry_id))
        except QueueError as exc:
            raise CliError(str(exc)) from exc
    return list(dict.fromkeys(ids))


def run_delete(args: argparse.Namespace) -> int:
    queue = open_queue(args)
    for entry_id in _checked_ids(queue, args.ids):
        try:
            queue.remove(entry_id)
        except QueueError as exc:
            raise CliError(str(exc)) from exc
        print(f"deleted {entry_id}")
    return 0
