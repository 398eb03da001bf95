"""Durable file-system steps shared by the stores that promise "once acknowledged, never lost" (the
Maildir++ store, the outbound queue): a rename or a new file is only on disk once its directory is."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(path: Path) -> None:
    """Make a rename, a new file or an unlink inside ``path`` durable: fsync(2) of the directory itself."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (it may write fewer than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
