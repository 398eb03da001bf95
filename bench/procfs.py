"""Reading a server's processes from /proc, for the benchmarks that measure a whole process tree."""

from __future__ import annotations

import contextlib
from pathlib import Path


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (a server's worker or per-connection processes)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pending.extend(int(child) for child in task.read_text().split())
    return found
