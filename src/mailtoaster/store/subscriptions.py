"""The IMAP subscription files of a Maildir++ root, kept for both IMAP servers that read it.

- Courier-IMAP: ``courierimapsubscribed``, one folder per line in Courier's ``INBOX.`` namespace
  (``INBOX.Junk``, ``INBOX.Junk.Sub``).
- Dovecot: ``subscriptions``, one folder per line without a namespace prefix. Version 1 (Dovecot before
  2.3) writes the name as stored (``Junk.Sub``); version 2 starts with the header ``V<TAB>2<LF><LF>`` and
  writes each hierarchy level separated by a TAB (``Junk<TAB>Sub``), each level TAB-escaped
  (``\\x01`` → ``\\x011``, TAB → ``\\x01t``, CR → ``\\x01r``, LF → ``\\x01n``, NUL → ``\\x010``).
  Dovecot keeps the version of an existing file and writes version 2 for a new one; so do we.

Names here are *storage names*: levels joined by ``.``, each level in modified UTF-7, no ``INBOX.``.

Both files are changed the way Dovecot changes its own: the new content is written to ``<file>.lock``
(created exclusively, so it is also the lock against Dovecot and against our other deliveries), fsynced,
then renamed over the file. A lock older than :data:`STALE_LOCK_SECONDS` is taken as left by a crash.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mailtoaster.durable import fsync_directory, write_all
from mailtoaster.store.errors import MaildirError

COURIER_FILE = "courierimapsubscribed"
DOVECOT_FILE = "subscriptions"
DOVECOT_V2_HEADER = "V\t2\n\n"
COURIER_NAMESPACE = "INBOX."
INBOX = "INBOX"
HIERARCHY_SEPARATOR = "."
LOCK_SUFFIX = ".lock"
LOCK_TIMEOUT_SECONDS = 10.0
STALE_LOCK_SECONDS = 30.0
"""Dovecot's own stale timeout for this lock (``SUBSCRIPTION_FILE_CHANGE_TIMEOUT``)."""
_LOCK_POLL_SECONDS = 0.02

_TAB_ESCAPES = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n", "\x00": "\x010"}
_TAB_UNESCAPES = {escaped[1]: char for char, escaped in _TAB_ESCAPES.items()}


@dataclass(frozen=True)
class Subscriptions:
    """The storage names each file lists, in file order."""

    courier: tuple[str, ...]
    dovecot: tuple[str, ...]


def parse_courier(text: str) -> list[str]:
    names = []
    for line in text.splitlines():
        if line.upper() == INBOX:
            names.append(INBOX)
        elif line[: len(COURIER_NAMESPACE)].upper() == COURIER_NAMESPACE and len(line) > len(
            COURIER_NAMESPACE
        ):
            names.append(line[len(COURIER_NAMESPACE) :])
    return names


def courier_line(name: str) -> str:
    return f"{name}\n" if name == INBOX else f"{COURIER_NAMESPACE}{name}\n"


def parse_dovecot(text: str) -> list[str]:
    """Names of a Dovecot subscriptions file of either version."""
    if text.startswith(DOVECOT_V2_HEADER):
        lines = text[len(DOVECOT_V2_HEADER) :].split("\n")
        names = (
            HIERARCHY_SEPARATOR.join(tab_unescape(level) for level in line.split("\t")) for line in lines
        )
    else:
        names = (line.removesuffix(HIERARCHY_SEPARATOR) for line in text.split("\n"))
    return [name for name in names if name]


def dovecot_line(name: str, version: int) -> str:
    if version < 2:
        return f"{name}\n"
    return "\t".join(tab_escape(level) for level in name.split(HIERARCHY_SEPARATOR)) + "\n"


def format_dovecot(names: Iterable[str], *, version: int = 2) -> str:
    header = DOVECOT_V2_HEADER if version >= 2 else ""
    return header + "".join(dovecot_line(name, version) for name in names)


def tab_escape(text: str) -> str:
    return "".join(_TAB_ESCAPES.get(char, char) for char in text)


def tab_unescape(text: str) -> str:
    parts = text.split("\x01")
    return parts[0] + "".join(_TAB_UNESCAPES.get(part[:1], part[:1]) + part[1:] for part in parts[1:])


def read_subscriptions(root: Path) -> Subscriptions:
    return Subscriptions(
        tuple(parse_courier(_read(root / COURIER_FILE) or "")),
        tuple(parse_dovecot(_read(root / DOVECOT_FILE) or "")),
    )


def subscribe(root: Path, name: str) -> bool:
    """Add storage name ``name`` to both files (each only if missing); True when a file changed."""
    courier = _update(root / COURIER_FILE, lambda text: _with_courier(text, name))
    dovecot = _update(root / DOVECOT_FILE, lambda text: _with_dovecot(text, name))
    return courier or dovecot


def unsubscribe(root: Path, name: str, *, also: Callable[[str], bool] | None = None) -> bool:
    """Remove storage name ``name`` (and any name ``also`` accepts) from both files, keeping every other
    line as it is; True when a file changed."""

    def unwanted(stored: str) -> bool:
        return stored == name or (also is not None and also(stored))

    courier = _update(root / COURIER_FILE, lambda text: _without_courier(text, unwanted))
    dovecot = _update(root / DOVECOT_FILE, lambda text: _without_dovecot(text, unwanted))
    return courier or dovecot


def _without_courier(text: str | None, unwanted: Callable[[str], bool]) -> str | None:
    if text is None:
        return None
    lines = _lines(text)
    kept = [line for line in lines if not any(unwanted(name) for name in parse_courier(line))]
    return None if len(kept) == len(lines) else "".join(kept)


def _without_dovecot(text: str | None, unwanted: Callable[[str], bool]) -> str | None:
    if text is None:
        return None
    header = DOVECOT_V2_HEADER if text.startswith(DOVECOT_V2_HEADER) else ""
    lines = _lines(text[len(header) :])
    kept = [line for line in lines if not any(unwanted(name) for name in parse_dovecot(header + line))]
    return None if len(kept) == len(lines) else header + "".join(kept)


def _lines(text: str) -> list[str]:
    """The lines of ``text`` with their LF; only LF ends a line (str.splitlines would also split names at
    characters such as U+2028)."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return [line for line in lines if line]


def _with_courier(text: str | None, name: str) -> str | None:
    if text is not None and name in parse_courier(text):
        return None
    return _append(text or "", courier_line(name))


def _with_dovecot(text: str | None, name: str) -> str | None:
    """Append the name in the file's own version (Dovecot rewrites existing lines verbatim, too)."""
    if text is None:
        return format_dovecot([name])
    if name in parse_dovecot(text):
        return None
    version = 2 if text.startswith(DOVECOT_V2_HEADER) else 1
    return _append(text, dovecot_line(name, version))


def _append(text: str, line: str) -> str:
    if text and not text.endswith("\n"):
        text += "\n"
    return text + line


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MaildirError(f"cannot read {path}: {exc.strerror or exc}") from None


def _update(path: Path, change: Callable[[str | None], str | None]) -> bool:
    """Under ``<path>.lock``: ``change(current text or None)`` → the new text, or None for no change."""
    lock = path.with_name(path.name + LOCK_SUFFIX)
    fd = _acquire(lock)
    try:
        new_text = change(_read(path))
        if new_text is not None:
            write_all(fd, new_text.encode("utf-8", errors="surrogateescape"))
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        lock.unlink(missing_ok=True)
        raise
    os.close(fd)
    if new_text is None:
        lock.unlink(missing_ok=True)
        return False
    try:
        os.replace(lock, path)
    except OSError as exc:
        lock.unlink(missing_ok=True)
        raise MaildirError(f"cannot replace {path}: {exc.strerror or exc}") from None
    fsync_directory(path.parent)
    return True


def _acquire(lock: Path) -> int:
    deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
    while True:
        try:
            return os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if _remove_if_stale(lock):
                continue
            if time.monotonic() > deadline:
                raise MaildirError(f"timed out waiting for the lock {lock}") from None
            time.sleep(_LOCK_POLL_SECONDS)
        except OSError as exc:
            raise MaildirError(f"cannot create {lock}: {exc.strerror or exc}") from None


def _remove_if_stale(lock: Path) -> bool:
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return True
    if age < STALE_LOCK_SECONDS:
        return False
    lock.unlink(missing_ok=True)
    return True
