"""The IMAP server's mailbox layer over Maildir++: UIDs, flags, keywords, changes and folder operations, on
the same files as SMTP delivery and as Dovecot (see docs/store.md, "The IMAP mailbox layer").

- A message is a file in ``cur/`` or ``new/``. Its *basename* (the name up to ``:``) never changes; its
  flags are the letters of the info suffix ``:2,<letters>`` (``D`` \\Draft, ``F`` \\Flagged, ``R``
  \\Answered, ``S`` \\Seen, ``T`` \\Deleted, ``a``-``z`` keywords from ``dovecot-keywords``), so every
  Maildir program sees the same flags. Changing flags renames the file.
- UIDs and UIDVALIDITY live in the folder's ``dovecot-uidlist`` (:mod:`.uidlist`), assigned under its
  lock in the order of the time in the file name, exactly as Dovecot keeps them: the two can serve one
  Maildir side by side. Delivery keeps writing into ``new/`` without any lock; a sync picks the files up.
- \\Recent: a message is recent for the first read-write session told of it, however it came; the
  folder's ``mailtoaster-recent`` holds the highest UID already given out as recent (see
  :meth:`Folder._judge_recent`). A read-only session (EXAMINE, STATUS) counts the UIDs above it and takes
  nothing.
- :meth:`Folder.sync` is one session's view of a folder catching up with the disk: it reports what the
  session must tell its client (EXISTS, EXPUNGE, FETCH FLAGS, FLAGS). When nothing changed it costs four
  ``stat`` calls; otherwise one ``scandir`` of ``new/`` and ``cur/`` and the new lines of the uid list.

Everything here is blocking file code; the server calls it from worker threads, but for
:meth:`Folder.sync_from_snapshot` (a few ``stat`` calls, made on its event loop).
"""

from __future__ import annotations

import bisect
import dataclasses
import errno
import gc
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO, Literal, TypeVar

from mailtoaster.durable import fsync_directory, write_all
from mailtoaster.store.errors import FolderNameError, MaildirError
from mailtoaster.store.maildir import (
    CHUNK_SIZE,
    FILE_MODE,
    FOLDER_SEPARATOR,
    Maildir,
    folder_directory_name,
    folder_name_from_directory,
    is_inbox,
    unique_name,
)
from mailtoaster.store.subscriptions import DOVECOT_FILE, INBOX
from mailtoaster.store.uidlist import (
    KEYWORDS_FILE,
    UIDLIST_FILE,
    Keywords,
    UidList,
    UidListCorruptError,
    next_uidvalidity,
)

SYSTEM_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
"""Info-suffix letters of the IMAP system flags (the Maildir specification's letters)."""
FLAG_LETTERS = {flag.casefold(): letter for letter, flag in SYSTEM_FLAGS.items()}
RECENT = "\\Recent"
DELETED = "\\Deleted"
SEEN = "\\Seen"
SPECIAL_USE = {
    "Archive": "\\Archive",
    "Drafts": "\\Drafts",
    "Junk": "\\Junk",
    "Sent": "\\Sent",
    "Trash": "\\Trash",
}
"""RFC 6154 attributes of the top-level folders of these names."""
INFO_PREFIX = ":2,"
DIRTY_NANOSECONDS = 1_000_000_000
"""A directory changed less than this before it was looked at may change again within the same mtime
tick, so its unchanged mtime proves nothing: such a folder is scanned again at the next sync."""
MEASURE_AT_ASSIGNMENT = 1000
"""When at most this many files get UIDs at once, their CRLF size is measured then and stored with the
UID (``W``); larger batches (an imported Maildir) are measured when RFC822.SIZE is first asked for."""
SIZES_PER_REWRITE = 256
"""Sizes measured later are written to the uid list (a rewrite) once this many are pending, or on close."""
DELETED_PREFIX = ".deleted."
RECENT_FILE = "mailtoaster-recent"
"""``<uidvalidity> <uid>``: the highest UID already given to a session as \\Recent (see
:meth:`Folder._judge_recent`); Dovecot ignores the file (its index keeps the same fact for its sessions)."""
MAX_CACHED_MESSAGES = 200_000
"""How many messages the process keeps in folder snapshots (about 0.5 KB each), see :class:`SnapshotCache`."""

StoreMode = Literal["replace", "add", "remove"]
T = TypeVar("T")

log = logging.getLogger("mailtoaster.store")

_SIZE_FIELDS = {key: re.compile(rf",{key}=(\d+)(?=[,:]|$)") for key in "SW"}
_SORT_KEY = re.compile(r"(\d*)(?:\.[^.:M]*M(\d+))?")
_SORT_KEYS = re.compile(r"^(\d*)(?:\.[^.:M\n]*M(\d+))?", re.MULTILINE)
""":data:`_SORT_KEY` for each line of names joined by line feeds."""


class FolderNotFoundError(MaildirError, LookupError):
    """No folder of that name (a name that only has sub-folders, listed \\Noselect, is none either)."""


class FolderGoneError(FolderNotFoundError):
    """The selected folder was deleted or renamed by someone else; the session must end it."""


class FolderExistsError(MaildirError):
    """CREATE or RENAME to a name that exists already."""


class MessageGoneError(MaildirError, LookupError):
    """A message was expunged by another session before it could be read, copied or moved."""


class KeywordLimitError(MaildirError):
    """A folder's 26 keyword letters (``a``-``z``) are all taken."""


class ReadOnlyFolderError(MaildirError):
    """A change was asked of a folder opened read-only (EXAMINE)."""


class FlagError(MaildirError, ValueError):
    """A system flag (``\\Name``) that IMAP does not define or that cannot be stored (``\\Recent``)."""


class Message:
    """One message as a session knows it: UID, where its file is, its flags (without \\Recent).

    Treat it as immutable: when a message's file is renamed the view gets a new :class:`Message`, so the
    sessions of one process can share them (see :class:`SnapshotCache`). ``vsize`` and ``mtime`` only
    cache facts that never change for a basename (:meth:`Folder.rfc822_size`, :meth:`Folder.internal_date`).

    Compact, as a folder holds tens of thousands: the file name is not kept whole but as the basename
    (shared with the uid list) and the *place*, ``n`` or ``c`` (new/ or cur/) followed by the rest of the
    name (``c:2,RS``), an interned string most messages share, as they share the ``flags`` frozenset.
    """

    __slots__ = ("basename", "flags", "mtime", "place", "uid", "vsize")

    def __init__(self, uid: int, basename: str, place: str, flags: frozenset[str]) -> None:
        self.uid = uid
        self.basename = basename
        self.place = place
        self.flags = flags
        self.vsize: int | None = None
        self.mtime: float | None = None

    @property
    def location(self) -> str:
        """``cur/<file name>`` or ``new/<file name>``, relative to the folder directory."""
        return location_of(self.basename, self.place)

    def moved(self, place: str, flags: frozenset[str]) -> Message:
        """The same message under a new file name (with new flags), caches kept."""
        message = Message(self.uid, self.basename, place, flags)
        message.vsize, message.mtime = self.vsize, self.mtime
        return message

    def __repr__(self) -> str:
        return f"Message(uid={self.uid}, location={self.location!r}, flags={sorted(self.flags)})"


@dataclass(frozen=True)
class Changes:
    """What a sync found since the previous one, for the untagged responses the session owes its client."""

    expunged: tuple[int, ...] = ()
    """UIDs removed from the view, ascending (for VANISHED)."""
    expunged_sequences: tuple[int, ...] = ()
    """The numbers to send as ``* n EXPUNGE``, in this order (each counts the ones before it as gone)."""
    added: tuple[int, ...] = ()
    """UIDs new in the view, ascending; send ``* <len(messages)> EXISTS`` (and RECENT)."""
    flags_changed: tuple[int, ...] = ()
    """UIDs (still in the view) whose flags someone else changed; send ``* n FETCH (FLAGS ...)``."""
    keywords_changed: bool = False
    """The set of defined keywords changed: send FLAGS and PERMANENTFLAGS again."""
    uidvalidity_changed: bool = False
    """The uid list was lost and made anew: the session's UIDs mean nothing now, it must end (BYE)."""
    recent: int | None = None
    """The number of \\Recent messages when it changed or messages were added: send ``* n RECENT``
    (after EXISTS). An expunge of a recent message changes it too (RFC 3501 §7.3.2)."""

    def __bool__(self) -> bool:
        return bool(
            self.expunged
            or self.added
            or self.flags_changed
            or self.keywords_changed
            or self.uidvalidity_changed
            or self.recent is not None
        )


@dataclass(frozen=True)
class AppendResult:
    """For ``APPENDUID <uidvalidity> <uid>`` (RFC 4315)."""

    uidvalidity: int
    uid: int


@dataclass(frozen=True)
class CopyResult:
    """For ``COPYUID <uidvalidity> <source uids> <target uids>`` (RFC 4315), pairs in the same order."""

    uidvalidity: int
    source_uids: tuple[int, ...]
    target_uids: tuple[int, ...]


@dataclass(frozen=True)
class FolderStatus:
    """The STATUS items."""

    messages: int
    recent: int
    uidnext: int
    uidvalidity: int
    unseen: int


@dataclass(frozen=True)
class FolderListing:
    """One LIST line: a folder, or a name that only exists as the parent of folders (not selectable)."""

    name: str
    selectable: bool
    has_children: bool
    special_use: str | None = None

    @property
    def attributes(self) -> tuple[str, ...]:
        """The RFC 3501/3348/6154 attributes: ``\\Noselect``, ``\\HasChildren`` or ``\\HasNoChildren``,
        the special use."""
        attributes = [] if self.selectable else ["\\Noselect"]
        attributes.append("\\HasChildren" if self.has_children else "\\HasNoChildren")
        if self.special_use:
            attributes.append(self.special_use)
        return tuple(attributes)


class Folder:
    """One session's view of one folder: ``messages`` (ascending UIDs; sequence number = index + 1), the
    UIDs ``recent`` for this session, UIDVALIDITY and UIDNEXT, kept current by :meth:`sync`.

    Get one from :class:`MailStore` (``select``, ``folder``). Changes to the disk (store, expunge, copy,
    move, append) show in the view at the next :meth:`sync`, except the flags :meth:`store` sets, which
    it puts in the view itself (the STORE response reports them). Calls are serialized by an internal
    lock, so any worker thread may make them; other sessions and processes are kept in step by the uid
    list lock and atomic renames. A session's first sync starts from the last full view any session of
    this process made of the folder (``snapshots``), when the disk shows it is still current.
    """

    def __init__(
        self,
        maildir: Maildir,
        name: str,
        path: Path,
        *,
        readonly: bool,
        clock: Callable[[], int],
        snapshots: SnapshotCache | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.readonly = readonly
        self.messages: list[Message] = []
        self.recent: set[int] = set()
        self.gone: set[int] = set()
        """UIDs still in the view whose files are gone: held back by ``sync(report_expunges=False)``."""
        self.uidvalidity = 0
        self._snapshots = snapshots
        self._maildir = maildir
        self._clock = clock
        self._directory = os.path.abspath(path)
        self._uidlist = UidList(path)
        self._keywords = Keywords(path)
        self._uids: list[int] = []
        self._view_shared = False
        """``messages`` and ``_uids`` are a snapshot's too: copy before changing them (:meth:`_own_view`)."""
        self._counts: dict[str, int] = {}
        """What was counted in the view as it is (``unseen``, ``first_unseen``), shared with a snapshot along
        with the lists; a new one whenever the view changes."""
        self._flag_sets: dict[str, frozenset[str]] = {}
        """place → flags: the few flag sets the messages share."""
        self._stamp: tuple[int, int] | None = None
        self._scan_stamp: tuple[int, int] | None = None
        """The directories' stamp from just before the last :meth:`_scan` (None: unknown or too recent)."""
        self._synced = False
        self._keywords_added = False
        self._pending_sizes: dict[str, int] = {}
        self._removed: set[str] = set()
        self._recent_judged: int | None = None
        """The highest UID this session has judged recent or not (see :meth:`_judge_recent`)."""
        self._lowest_in_new: int | None = None
        """The lowest UID found in new/ by the last scan, before claiming (see :meth:`_judge_recent`)."""
        self._waiting: int | None = None
        """The same after claiming: what a snapshot tells the next session."""
        self._mutex = threading.RLock()

    # The view

    @property
    def uidnext(self) -> int:
        return self._uidlist.next_uid

    @property
    def keywords(self) -> tuple[str, ...]:
        """The keywords defined in this folder (for FLAGS and PERMANENTFLAGS)."""
        return self._keywords.defined

    @property
    def keywords_full(self) -> bool:
        """True when no new keyword can be stored (leave ``\\*`` out of PERMANENTFLAGS)."""
        return self._keywords.full

    def message(self, uid: int) -> Message | None:
        index = self._index(uid)
        return None if index is None else self.messages[index]

    def sequence(self, uid: int) -> int | None:
        """The message sequence number of ``uid`` in the view, or None."""
        index = self._index(uid)
        return None if index is None else index + 1

    def _index(self, uid: int) -> int | None:
        index = bisect.bisect_left(self._uids, uid)
        if index < len(self._uids) and self._uids[index] == uid:
            return index
        return None

    def unseen(self) -> int:
        """The number of messages without \\Seen (STATUS), counted once per state of the view."""
        counts = self._counts
        count = counts.get("unseen")
        if count is None:
            count = counts["unseen"] = sum(1 for message in self.messages if SEEN not in message.flags)
        return count

    def first_unseen(self) -> int | None:
        """The sequence number of the first message without \\Seen (SELECT's ``[UNSEEN n]``), found once per
        state of the view (0 stands for none)."""
        counts = self._counts
        first = counts.get("first_unseen")
        if first is None:
            first = next(
                (index + 1 for index, message in enumerate(self.messages) if SEEN not in message.flags), 0
            )
            counts["first_unseen"] = first
        return first or None

    def watch_paths(self) -> tuple[Path, ...]:
        """What changes when the folder changes, for an IDLE that waits on inotify instead of polling."""
        return (self.path / "new", self.path / "cur", self.path / UIDLIST_FILE, self.path / KEYWORDS_FILE)

    # Catching up with the disk

    def sync(self, *, report_expunges: bool = True) -> Changes:
        """Catch the view up with the disk: UIDs for new files, new/ claimed (read-write sessions), the
        changes since the last sync returned. With ``report_expunges`` False (while answering FETCH,
        STORE or SEARCH, RFC 3501 §7.4.1) vanished messages stay in the view, their UIDs in
        :attr:`gone`, until a later sync reports them. (What the first sync returns means nothing: SELECT
        reports the view itself.)"""
        with self._mutex, cyclic_gc_paused():
            first = not self._synced
            if first:
                self._adopt_snapshot()
            recent_before = len(self.recent)
            keywords_changed = self._keywords.refresh() or self._keywords_added
            self._keywords_added = False
            uidlist_changed = self._refresh_uidlist()
            if self._synced and self._uidlist.uidvalidity != self.uidvalidity:
                if not first:
                    log.warning("%s: UIDVALIDITY changed under a session; its view starts again", self.path)
                self._forget_view()
            validity_changed = not first and self._uidlist.uidvalidity != self.uidvalidity
            stamp = self._directory_stamp()
            holding = report_expunges and bool(self.gone)
            unchanged = stamp is not None and stamp == self._stamp and not uidlist_changed
            if self._synced and unchanged and not keywords_changed and not holding:
                if first:
                    self._judge_recent()
                self._persist_sizes(force=False)
                return Changes()
            changes = self._catch_up(report_expunges=report_expunges, keywords_changed=keywords_changed)
            self._judge_recent()
            self._stamp = stamp
            self._synced = True
            self._publish_snapshot(stamp)
            self._persist_sizes(force=False)
            if validity_changed:
                return Changes(added=changes.added, keywords_changed=True, uidvalidity_changed=True)
            if changes.added or len(self.recent) != recent_before:
                return dataclasses.replace(changes, recent=len(self.recent))
            return changes

    def _catch_up(self, *, report_expunges: bool, keywords_changed: bool) -> Changes:
        """The full sync: scan, give UIDs, claim new/, compare with the view."""
        files = self._assign(self._scan_verified())
        self._lowest_in_new = self._lowest_waiting(files)
        if not self.readonly and self._lowest_in_new is not None:
            self._claim_new(files)
            self._waiting = self._lowest_waiting(files)
        else:
            self._waiting = self._lowest_in_new
        return self._apply(files, report_expunges=report_expunges, keywords_changed=keywords_changed)

    def sync_from_snapshot(self) -> bool:
        """The first sync when the disk shows nothing changed since the process's last full view of the
        folder (its snapshot): four ``stat`` calls and a read of the \\Recent marker, no scan, no lock, no
        write, nothing copied, so cheap enough for the server's event loop. True if done (the view is then
        what :meth:`sync` would have made, :attr:`recent` included); False, with nothing changed, when the
        folder must be read or written: call :meth:`sync` (from a worker thread)."""
        with self._mutex:
            if self._synced or self._snapshots is None:
                return False
            snapshot = self._snapshots.get(self._directory)
            if snapshot is None or (not self.readonly and snapshot.lowest_in_new is not None):
                return False  # a read-write session scans to claim what waits in new/
            if not (snapshot.keywords.unchanged_on_disk() and snapshot.uidlist.unchanged_on_disk()):
                return False
            if self._directory_stamp() != snapshot.stamp:
                return False
            highest = snapshot.uids[-1] if snapshot.uids else 0
            marker = self._read_recent_marker(snapshot.uidlist.uidvalidity)
            if not self.readonly and (marker is None or marker < highest):
                return False  # this session is the first told of some: the marker must be raised
            self._adopt(snapshot)
            self._mark_recent(marker, highest)
            return True

    def _adopt_snapshot(self) -> None:
        """Start from the process's last full view of this folder (the usual checks then prove it current
        or catch it up, as for this session's own previous view)."""
        snapshot = self._snapshots.get(self._directory) if self._snapshots is not None else None
        if snapshot is not None:
            self._adopt(snapshot)

    def _adopt(self, snapshot: Snapshot) -> None:
        """Nothing big is copied: the message lists (and what was counted in them) are shared until this
        view changes them, the uid list's dictionaries until either side changes them."""
        self._uidlist = snapshot.uidlist.copy()
        self._keywords = snapshot.keywords.copy()
        self._flag_sets = dict(snapshot.flag_sets)
        self.messages = snapshot.messages
        self._uids = snapshot.uids
        self._counts = snapshot.counts
        self._view_shared = True
        self.uidvalidity = snapshot.uidlist.uidvalidity
        self._synced = True
        self._stamp = snapshot.stamp
        self._lowest_in_new = snapshot.lowest_in_new
        if not self.readonly and snapshot.lowest_in_new is not None:
            self._stamp = None  # messages wait in new/: scan, to claim them

    def _publish_snapshot(self, stamp: tuple[int, int] | None) -> None:
        if self._snapshots is None or stamp is None or self.gone:
            return
        self._snapshots.put(
            self._directory,
            Snapshot(
                stamp=stamp,
                uidlist=self._uidlist.copy(),
                keywords=self._keywords.copy(),
                flag_sets=dict(self._flag_sets),
                messages=self.messages,
                uids=self._uids,
                counts=self._counts,
                lowest_in_new=self._waiting,
            ),
        )
        self._view_shared = True

    def _own_view(self) -> None:
        """Before the view's lists change (an item replaced, one added): copy them if a snapshot shares
        them (copy on write), and forget what was counted in them."""
        if self._view_shared:
            self.messages = list(self.messages)
            self._uids = list(self._uids)
            self._view_shared = False
            self._counts = {}  # the snapshot's, which others may still fill in
        elif self._counts:
            self._counts = {}

    def _set_view(self, messages: list[Message], uids: list[int]) -> None:
        """A new view, its lists this view's own."""
        self.messages, self._uids = messages, uids
        self._view_shared = False
        self._counts = {}

    def _judge_recent(self) -> None:
        """\\Recent (RFC 3501 §2.3.2): each message is recent for the first session told of it, whichever
        way it came (delivery, APPEND, COPY, MOVE, another server). The folder's ``mailtoaster-recent``
        holds the highest UID some session has already been given as recent; a read-write session that
        shows higher UIDs raises it, under the uid list lock, and those UIDs are recent for it alone. A
        read-only session counts the UIDs above it without raising it. Before the file exists (a folder
        new to us, or with a new UIDVALIDITY) the messages found in new/ are the recent ones."""
        highest = self._uids[-1] if self._uids else 0
        if self._recent_judged is not None and highest <= self._recent_judged:
            return
        marker = self._read_recent_marker(self._uidlist.uidvalidity)
        if not self.readonly and (marker is None or marker < highest):
            with self._locked():
                marker = self._read_recent_marker(self._uidlist.uidvalidity)
                if marker is None or marker < highest:
                    self._write_recent_marker(highest)
        self._mark_recent(marker, highest)

    def _mark_recent(self, marker: int | None, highest: int) -> None:
        """The UIDs above the marker (as read, or as it was before this session raised it) are recent."""
        if marker is None:
            marker = highest if self._lowest_in_new is None else self._lowest_in_new - 1
        lowest = max(marker, self._recent_judged or 0)
        self.recent.update(self._uids[bisect.bisect_right(self._uids, lowest) :])
        self._recent_judged = highest

    def _read_recent_marker(self, uidvalidity: int) -> int | None:
        try:
            fd = os.open(os.path.join(self._directory, RECENT_FILE), os.O_RDONLY | os.O_CLOEXEC)
            try:
                fields = os.read(fd, 64).split()
            finally:
                os.close(fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MaildirError(f"cannot read {RECENT_FILE} of {self.name!r}: {exc.strerror or exc}") from exc
        if len(fields) != 2 or not all(field.isdigit() for field in fields):
            return None
        if int(fields[0]) != uidvalidity:
            return None
        return int(fields[1])

    def _write_recent_marker(self, uid: int) -> None:
        """Under the uid list lock: write the marker through a temporary file and a rename, so that no
        reader sees half of it (losing it in a crash only makes messages recent again)."""
        path = os.path.join(self._directory, RECENT_FILE)
        temporary = path + ".tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                write_all(fd, b"%d %d\n" % (self._uidlist.uidvalidity, uid))
            finally:
                os.close(fd)
            os.replace(temporary, path)
        except OSError as exc:
            raise MaildirError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Write sizes measured since the last uid list write (so the next SELECT need not measure)."""
        with self._mutex:
            self._persist_sizes(force=True)

    @property
    def close_writes(self) -> bool:
        """Whether :meth:`close` has anything to write (else it costs nothing: no worker thread needed)."""
        return bool(self._pending_sizes)

    def _lowest_waiting(self, files: dict[str, str]) -> int | None:
        """The lowest UID of the files in new/, if any (places are interned: a set of them is small)."""
        if all(place[0] != "n" for place in set(files.values())):
            return None
        uids = self._uidlist.uids
        return min(
            (uids[name] for name, place in files.items() if place[0] == "n" and name in uids), default=None
        )

    def _forget_view(self) -> None:
        self._set_view([], [])
        self.recent, self.gone = set(), set()
        self._recent_judged = None
        self._synced = False

    def _refresh_uidlist(self) -> bool:
        try:
            return self._uidlist.refresh()
        except UidListCorruptError as exc:
            log.error("%s", exc)
            with self._locked():
                self._refresh_uidlist_locked()
            return True

    def _refresh_uidlist_locked(self) -> None:
        """Under the lock: read the uid list; start a new one (new UIDVALIDITY) if it is missing or
        corrupt."""
        try:
            self._uidlist.refresh()
        except UidListCorruptError as exc:
            self._recover(exc)
        if not self._uidlist.exists:
            self._uidlist.create(self._new_uidvalidity())

    def _recover(self, problem: UidListCorruptError) -> None:
        log.error("%s; keeping it as %s.corrupt and starting a new uid list", problem, UIDLIST_FILE)
        try:
            os.replace(self._uidlist.path, self._uidlist.path.with_name(UIDLIST_FILE + ".corrupt"))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise MaildirError(f"cannot move {self._uidlist.path} aside: {exc.strerror or exc}") from exc

    def _new_uidvalidity(self) -> int:
        value = next_uidvalidity(self._maildir.path, clock=lambda: self._clock() / 1e9)
        return value + 1 if value == self.uidvalidity else value

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._uidlist.lock():
            yield

    def _directory_stamp(self) -> tuple[int, int] | None:
        """The mtimes of new/ and cur/, or None if they are too recent to prove that nothing changed."""
        try:
            new = os.stat(os.path.join(self._directory, "new")).st_mtime_ns
            cur = os.stat(os.path.join(self._directory, "cur")).st_mtime_ns
        except FileNotFoundError:
            raise FolderGoneError(f"folder {self.name!r} no longer exists") from None
        if time.time_ns() - max(new, cur) < DIRTY_NANOSECONDS:
            return None
        return (new, cur)

    def _scan(self) -> dict[str, str]:
        """basename → place (``n``/``c`` and the rest of the file name, see :class:`Message`). new/ is read
        first: a file moved to cur/ meanwhile is seen twice (its cur/ place wins) rather than not at all.
        The directories' stamp from just before is kept (:meth:`_still_as_scanned`)."""
        self._scan_stamp = self._directory_stamp()
        files = self._read_directory("new")
        files.update(self._read_directory("cur"))
        return files

    def _still_as_scanned(self) -> bool:
        """Whether new/ and cur/ are provably as the last scan read them: their stamp from before that
        scan (old enough to prove anything) is still theirs. Then a second scan would read the same."""
        return self._scan_stamp is not None and self._directory_stamp() == self._scan_stamp

    def _read_directory(self, subdirectory: str) -> dict[str, str]:
        """basename → place of one directory's files. Bulk string operations for the usual directory
        (no hidden files, no line feeds in names, every name with one ``:`` or none at all): a cold SELECT
        of 50,000 messages runs no Python code per file here."""
        tag = subdirectory[0]
        try:
            names = os.listdir(os.path.join(self._directory, subdirectory))
        except FileNotFoundError:
            raise FolderGoneError(f"folder {self.name!r} no longer exists") from None
        joined = "\n".join(names)
        if joined.startswith(".") or "\n." in joined:
            names = [name for name in names if name[0] != "."]
            joined = "\n".join(names)
        colons = joined.count(":")
        if joined.count("\n") != len(names) - 1 and names:
            files = self._read_names(tag, names)
        elif colons == 0:
            files = dict.fromkeys(names, tag)
        elif colons == len(names):
            parts = joined.replace(":", "\n").split("\n")
            places = map(sys.intern, map((tag + ":").__add__, parts[1::2]))
            files = dict(zip(parts[0::2], places, strict=True))
        else:
            files = self._read_names(tag, names)
        if len(files) != len(names):
            self._resolve_duplicates(subdirectory, files)
        return files

    @staticmethod
    def _read_names(tag: str, names: list[str]) -> dict[str, str]:
        intern = sys.intern
        return {
            (name if (colon := name.find(":")) < 0 else name[:colon]): (
                tag if colon < 0 else intern(tag + name[colon:])
            )
            for name in names
        }

    def _resolve_duplicates(self, subdirectory: str, files: dict[str, str]) -> None:
        """Two names with one basename: a rename seen half-done (keep the one that exists), or a real
        duplicate (a read-write session gives the second a basename of its own, so it gets its own UID)."""
        names: dict[str, list[str]] = {}
        for name in os.listdir(os.path.join(self._directory, subdirectory)):
            if not name.startswith("."):
                names.setdefault(name.partition(":")[0], []).append(name)
        for basename, candidates in names.items():
            existing = [name for name in candidates if os.path.exists(self._full(f"{subdirectory}/{name}"))]
            if not existing:
                files.pop(basename, None)
                continue
            files[basename] = place_of(basename, f"{subdirectory}/{existing[0]}")
            for duplicate in existing[1:] if not self.readonly else []:
                fresh = unique_name(self._clock(), self._maildir.hostname)
                info = duplicate[len(basename) :]
                os.rename(
                    self._full(f"{subdirectory}/{duplicate}"), self._full(f"{subdirectory}/{fresh}{info}")
                )
                files[fresh] = sys.intern(subdirectory[0] + info)
                log.warning("%s: duplicate file %s renamed to %s", self.path, duplicate, fresh)

    def _scan_verified(self) -> dict[str, str]:
        """A scan in which a message the view knows is missing only if a second scan misses it too (a
        file renamed by another process while the directory is read can be missed once)."""
        files = self._scan()
        removed = self._removed
        unexplained = any(
            message.basename not in files and message.basename not in removed for message in self.messages
        )
        if unexplained:
            again = self._scan()
            files = {**files, **again}
            self._scan_stamp = None  # two scans merged: not one reading of the directories
        self._removed.clear()
        return files

    def _assign(self, files: dict[str, str]) -> dict[str, str]:
        """Give UIDs to the files the uid list does not know, under its lock (rescanning under it)."""
        uids = self._uidlist.uids
        unassigned = [basename for basename in files if basename not in uids]
        if not unassigned and self._uidlist.exists:
            return files
        sizes = self._measure(unassigned, files) if len(unassigned) <= MEASURE_AT_ASSIGNMENT else {}
        with self._locked():
            self._refresh_uidlist_locked()
            # Rescanned under the lock, unless the directories are provably as ``files`` read them (a
            # 50,000-file folder's first SELECT would read them twice).
            locked = self._scan() if unassigned and not self._still_as_scanned() else files
            uids = self._uidlist.uids
            unassigned = maildir_sorted(name for name in locked if name not in uids)
            if unassigned:
                if len(unassigned) <= MEASURE_AT_ASSIGNMENT:
                    sizes.update(self._measure([name for name in unassigned if name not in sizes], locked))
                self._write_assignments(unassigned, sizes, present={**files, **locked})
        return {**files, **locked}

    def _write_assignments(
        self, basenames: list[str], sizes: dict[str, int], present: dict[str, str]
    ) -> None:
        uidlist = self._uidlist
        first = uidlist.next_uid
        records = [
            (first + index, f"W{sizes[name]}" if name in sizes else "", name)
            for index, name in enumerate(basenames)
        ]
        live = sum(1 for name in uidlist.uids if name in present)
        if self._pending_sizes or (live + len(records)) * 100 <= (len(uidlist.uids) + len(records)) * 75:
            # Dovecot's rule: rewrite (dropping the records of files that are gone) once a quarter is dead.
            self._apply_pending_sizes()
            uidlist.append(records, compact_to=present)
        else:
            uidlist.append(records)

    def _measure(self, basenames: list[str], files: dict[str, str]) -> dict[str, int]:
        """CRLF sizes of files whose names do not carry ``W=``; files gone meanwhile are skipped."""
        sizes = {}
        for basename in basenames:
            if size_field(basename, "W") is not None or basename not in files:
                continue
            try:
                with open(self._full(location_of(basename, files[basename])), "rb") as stream:
                    sizes[basename] = crlf_size(stream)
            except FileNotFoundError:
                continue
        return sizes

    def _claim_new(self, files: dict[str, str]) -> None:
        """Move the files of new/ to cur/ (``:2,`` appended), as Dovecot does (\\Recent is decided by
        :meth:`_judge_recent`, not by who moves them)."""
        lost = False
        waiting = [(basename, place) for basename, place in files.items() if place[0] == "n"]
        for basename, place in waiting:
            target = sys.intern("c" + (place[1:] if ":" in place else INFO_PREFIX))
            try:
                os.rename(self._full(location_of(basename, place)), self._full(location_of(basename, target)))
            except FileNotFoundError:
                lost = True  # another session claimed it first
                continue
            files[basename] = target
        if lost:
            for basename, location in self._read_directory("cur").items():
                if basename in files:
                    files[basename] = location

    def _apply(self, files: dict[str, str], *, report_expunges: bool, keywords_changed: bool) -> Changes:
        """Compare the scan with the view, update the view, and say what changed."""
        self.uidvalidity = self._uidlist.uidvalidity
        if keywords_changed:
            self._flag_sets.clear()
        if self.messages:
            unknown = dict(files)
            flags_changed = self._update_known(unknown, recompute=keywords_changed)
            added = self._add_new(unknown)
        else:
            flags_changed, added = [], self._build_view(files)
        expunged: list[int] = []
        sequences: list[int] = []
        if report_expunges:
            expunged, sequences = self._drop_expunged()
        return Changes(
            expunged=tuple(expunged),
            expunged_sequences=tuple(sequences),
            added=tuple(added),
            flags_changed=tuple(flags_changed),
            keywords_changed=keywords_changed,
        )

    def _update_known(self, unknown: dict[str, str], *, recompute: bool) -> list[int]:
        """Follow the view's messages in the scan, taking them out of ``unknown`` (what is left there is
        new to the view)."""
        changed = []
        gone = self.gone
        for index, message in enumerate(self.messages):
            place = unknown.pop(message.basename, None)
            if place is None:
                gone.add(message.uid)
                continue
            if gone:
                gone.discard(message.uid)
            if place != message.place or recompute:
                flags = self._flags_of(place)
                self._own_view()  # a copy the first time: the loop goes on over the equal original
                self.messages[index] = message.moved(place, flags)
                if flags != message.flags:
                    changed.append(message.uid)
        return changed

    def _add_new(self, unknown: dict[str, str]) -> list[int]:
        uids = self._uidlist.uids
        candidates = sorted((uid, name) for name in unknown if (uid := uids.get(name)) is not None)
        highest = self._uids[-1] if self._uids else 0
        added = []
        for uid, basename in candidates:
            if uid <= highest:
                log.warning(
                    "%s: %s has UID %d, below the view's %d; not shown", self.path, basename, uid, highest
                )
                continue
            place = unknown[basename]
            self._own_view()
            self.messages.append(Message(uid, basename, place, self._flags_of(place)))
            self._uids.append(uid)
            added.append(uid)
            highest = uid
        return added

    def _build_view(self, files: dict[str, str]) -> list[int]:
        """The first view: every file the uid list knows, in its (ascending UID) order; comprehensions
        only, as this is most of a cold SELECT's work. Basenames are the uid list's strings (one copy)."""
        for distinct in set(files.values()):
            self._flags_of(distinct)
        flag_sets, get = self._flag_sets, files.get
        messages = [
            Message(uid, name, place, flag_sets[place])
            for name, uid in self._uidlist.uids.items()
            if (place := get(name)) is not None
        ]
        self._set_view(messages, [message.uid for message in messages])
        return list(self._uids)

    def _drop_expunged(self) -> tuple[list[int], list[int]]:
        if not self.gone:
            return [], []
        expunged: list[int] = []
        sequences: list[int] = []
        kept: list[Message] = []
        for index, message in enumerate(self.messages):
            if message.uid in self.gone:
                sequences.append(index + 1 - len(expunged))
                expunged.append(message.uid)
                self.recent.discard(message.uid)
            else:
                kept.append(message)
        self._set_view(kept, [message.uid for message in kept])
        self.gone.clear()
        return expunged, sequences

    def _flags_of(self, place: str) -> frozenset[str]:
        flags = self._flag_sets.get(place)
        if flags is None:
            start = place.find(INFO_PREFIX)
            flags = self._flag_sets[place] = self._decode(place[start + 3 :] if start >= 0 else "")
        return flags

    def _decode(self, letters: str) -> frozenset[str]:
        flags = set()
        for letter in letters:
            if letter in SYSTEM_FLAGS:
                flags.add(SYSTEM_FLAGS[letter])
            elif "a" <= letter <= "z":
                flags.add(self._keywords.name(letter))
        return frozenset(flags)

    def _apply_pending_sizes(self) -> None:
        for basename, size in self._pending_sizes.items():
            uid = self._uidlist.uids.get(basename)
            if uid is not None:
                self._uidlist.set_extension(uid, "W", str(size))
        self._pending_sizes.clear()

    def _persist_sizes(self, *, force: bool) -> None:
        if not self._pending_sizes or (not force and len(self._pending_sizes) < SIZES_PER_REWRITE):
            return
        with self._locked():
            # When the snapshot is this view and its uid list what is on disk (no other writer while we
            # hold the lock), it still is after the rewrite, with the sizes: keep it current, or the next
            # session's SELECT would read the whole uid list again and scan the folder.
            snapshots = self._snapshots
            snapshot = snapshots.get(self._directory) if snapshots is not None else None
            if snapshot is not None and not (
                snapshot.messages is self.messages and snapshot.uidlist.unchanged_on_disk()
            ):
                snapshot = None
            self._refresh_uidlist_locked()
            self._apply_pending_sizes()
            self._uidlist.rewrite()
            if snapshots is not None and snapshot is not None:
                snapshots.put(self._directory, dataclasses.replace(snapshot, uidlist=self._uidlist.copy()))

    # Reading messages

    def open_message(self, message: Message) -> BinaryIO:
        """The message file, open for reading (found again if another process renamed it meanwhile).
        Raises :class:`MessageGoneError` if it was expunged."""
        with self._mutex:
            return self._with_file(message, lambda path: open(path, "rb"))

    def open_message_descriptor(self, message: Message) -> int:
        """:meth:`open_message` as a bare file descriptor (the caller closes it): no buffered file object,
        whose opening costs several system calls more (FETCH reads a thousand messages in a row)."""
        with self._mutex:
            return self._with_file(message, lambda path: os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    def rfc822_size(self, message: Message) -> int:
        """RFC822.SIZE, the size with CRLF line ends: from ``W=`` in the name, else the uid list's ``W``,
        else measured once (and stored in the uid list later, see :data:`SIZES_PER_REWRITE`)."""
        with self._mutex:
            if message.vsize is None:
                message.vsize = self._known_vsize(message)
            if message.vsize is None:
                with self.open_message(message) as stream:
                    message.vsize = crlf_size(stream)
                self._pending_sizes[message.basename] = message.vsize
            return message.vsize

    def stored_size(self, message: Message) -> int:
        """The size of the file as stored (LF line ends): ``S=`` from the name, else ``stat``."""
        size = size_field(message.basename, "S")
        if size is not None:
            return size
        with self._mutex:
            return self._with_file(message, lambda path: os.stat(path).st_size)

    def internal_date(self, message: Message) -> float:
        """INTERNALDATE: the file's mtime (as Dovecot uses for Maildir), in seconds since the epoch."""
        with self._mutex:
            if message.mtime is None:
                message.mtime = self._with_file(message, lambda path: os.stat(path).st_mtime)
            return message.mtime

    def _known_vsize(self, message: Message) -> int | None:
        size = size_field(message.basename, "W")
        if size is None and self._uidlist.uids.get(message.basename) == message.uid:
            value = self._uidlist.extension(message.uid, "W")
            size = int(value) if value is not None and value.isdigit() else None
        return size

    def _with_file(self, message: Message, action: Callable[[str], T]) -> T:
        locator = _Locator(self)
        location: str | None = message.location
        while location is not None:
            try:
                return action(self._full(location))
            except FileNotFoundError:
                location = locator.locate(message.basename, location)
        raise MessageGoneError(f"message UID {message.uid} of {self.name!r} no longer exists")

    def _full(self, location: str) -> str:
        return os.path.join(self._directory, location)

    # Changing messages

    def store(self, uids: Iterable[int], flags: Iterable[str], mode: StoreMode = "add") -> tuple[int, ...]:
        """Replace, add or remove ``flags`` (system flags and keywords; ``\\Recent`` is ignored) of the
        messages with these UIDs by renaming their files; the UIDs whose flags changed are returned and
        their ``flags`` in the view are current (including concurrent changes by others, merged).

        Raises :class:`KeywordLimitError` when a new keyword finds no free letter, :class:`FlagError`
        for an unknown system flag, :class:`ReadOnlyFolderError` in a read-only folder.
        """
        with self._mutex:
            self._writable()
            system, keywords = split_flags(flags)
            wanted = system | self._keyword_letters(keywords, create=mode != "remove", lock_held=False)
            locator = _Locator(self)
            changed = []
            for uid in uids:
                index = self._index(uid)
                if index is not None and uid not in self.gone and self._restore(index, mode, wanted, locator):
                    changed.append(uid)
            return tuple(changed)

    def _restore(self, index: int, mode: StoreMode, wanted: set[str], locator: _Locator) -> bool:
        """Rename message ``index``'s file for its new flags; the view gets the name it ends up with."""
        message = self.messages[index]
        location: str | None = message.location
        while location is not None:
            letters = combine_letters(letters_of(location), mode, wanted)
            target = f"cur/{message.basename}{INFO_PREFIX}{letters}"
            if target == location:
                break
            try:
                os.rename(self._full(location), self._full(target))
            except FileNotFoundError:
                location = locator.locate(message.basename, location)
                continue
            location = target
            break
        if location is None:
            return False
        place = place_of(message.basename, location)
        flags = self._flags_of(place)
        if place != message.place:
            self._own_view()
            self.messages[index] = message.moved(place, flags)
        return flags != message.flags

    def expunge(self, uids: Iterable[int] | None = None) -> tuple[int, ...]:
        """Remove the messages of the view flagged \\Deleted (only those among ``uids`` if given: UID
        EXPUNGE); returns the UIDs removed. A message whose \\Deleted another session took away meanwhile
        stays. The next :meth:`sync` reports the EXPUNGEs."""
        with self._mutex:
            self._writable()
            only = None if uids is None else set(uids)
            locator = _Locator(self)
            removed = []
            for message in self.messages:
                if (
                    message.uid in self.gone
                    or DELETED not in message.flags
                    or (only is not None and message.uid not in only)
                ):
                    continue
                if self._unlink_deleted(message, locator):
                    removed.append(message.uid)
                    self._removed.add(message.basename)
            return tuple(removed)

    def _unlink_deleted(self, message: Message, locator: _Locator) -> bool:
        location: str | None = message.location
        while location is not None and "T" in letters_of(location):
            try:
                os.unlink(self._full(location))
            except FileNotFoundError:
                location = locator.locate(message.basename, location)
                continue
            return True
        return False

    def append(
        self,
        source: BinaryIO | Path | bytes,
        *,
        flags: Iterable[str] = (),
        internal_date: float | None = None,
    ) -> AppendResult:
        """APPEND: store ``source`` (CRLF → LF) with ``flags`` and the mtime ``internal_date`` (default:
        now), into cur/ when it has flags, else into new/ (as Dovecot saves); its UID is assigned at once.
        The message is fsynced and in the uid list before this returns."""
        with self._mutex:
            system, keywords = split_flags(flags)
            temporary, size = self._maildir.write_temporary(self.path, source)
            try:
                with open(temporary, "rb") as stream:
                    vsize = crlf_size(stream)
                if internal_date is not None:
                    os.utime(temporary, (internal_date, internal_date))
                basename = f"{temporary.name},S={size},W={vsize}"
                with self._locked():
                    self._refresh_uidlist_locked()
                    self._assign_waiting_locked()
                    letters = "".join(
                        sorted(system | self._keyword_letters(keywords, create=True, lock_held=True))
                    )
                    uid = self._place_appended(temporary, basename, letters, vsize)
            finally:
                temporary.unlink(missing_ok=True)
            return AppendResult(self._uidlist.uidvalidity, uid)

    def _assign_waiting_locked(self) -> None:
        """Under the lock, before APPEND, COPY or MOVE take their UIDs: UIDs for the mail already waiting
        in new/ (delivered, not yet synced), so that UIDs follow arrival order as in Dovecot. Only new/ is
        read (cheap); the records are appended, never compacted, as cur/ was not looked at."""
        files = self._read_directory("new")
        uids = self._uidlist.uids
        waiting = maildir_sorted(name for name in files if name not in uids)
        if not waiting:
            return
        sizes = self._measure(waiting, files) if len(waiting) <= MEASURE_AT_ASSIGNMENT else {}
        first = self._uidlist.next_uid
        self._uidlist.append(
            [
                (first + index, f"W{sizes[name]}" if name in sizes else "", name)
                for index, name in enumerate(waiting)
            ]
        )

    def _place_appended(self, temporary: Path, basename: str, letters: str, vsize: int) -> int:
        location = f"cur/{basename}{INFO_PREFIX}{letters}" if letters else f"new/{basename}"
        final = self._full(location)
        os.rename(temporary, final)
        try:
            fsync_directory(Path(final).parent)
            uid = self._uidlist.next_uid
            self._uidlist.append([(uid, f"W{vsize}", basename)])
        except BaseException:
            os.unlink(final)
            raise
        return uid

    def copy(self, uids: Iterable[int], target: Folder) -> CopyResult:
        """COPY into ``target`` (hard links; a copy of the bytes across file systems): flags, keywords and
        internal date kept, new basenames, UIDs assigned at once. All or nothing: if a message was
        expunged meanwhile, nothing is copied and :class:`MessageGoneError` is raised."""
        with self._mutex:
            return self._transfer(uids, target, move=False)

    def move(self, uids: Iterable[int], target: Folder) -> CopyResult:
        """MOVE (RFC 6851): like :meth:`copy` but the files are renamed into ``target``; the next
        :meth:`sync` of this folder reports their EXPUNGEs."""
        with self._mutex:
            self._writable()
            return self._transfer(uids, target, move=True)

    def _transfer(self, uids: Iterable[int], target: Folder, *, move: bool) -> CopyResult:
        chosen = [
            message for uid in sorted(set(uids)) if (message := self.message(uid)) and uid not in self.gone
        ]
        if not chosen:
            return CopyResult(target.uidvalidity, (), ())
        sizes = [(self.stored_size(message), self.rfc822_size(message)) for message in chosen]
        locator = _Locator(self)
        with target._locked():
            target._refresh_uidlist_locked()
            target._assign_waiting_locked()
            target._keywords.refresh()
            placed: list[tuple[str, str]] = []
            try:
                records: list[tuple[str, int]] = []
                for message, (size, vsize) in zip(chosen, sizes, strict=True):
                    basename = f"{unique_name(self._clock(), self._maildir.hostname)},S={size},W={vsize}"
                    letters = self._letters_in(target, letters_of(message.location))
                    destination = f"cur/{basename}{INFO_PREFIX}{letters}" if letters else f"new/{basename}"
                    placed.append(
                        (self._place(message, target, destination, move=move, locator=locator), destination)
                    )
                    records.append((basename, vsize))
                for directory in {destination.partition("/")[0] for _, destination in placed}:
                    fsync_directory(target.path / directory)
                first = target._uidlist.next_uid
                target._uidlist.append(
                    [(first + index, f"W{vsize}", name) for index, (name, vsize) in enumerate(records)]
                )
            except BaseException:
                self._undo(placed, target, move=move)
                raise
        if move:
            self._removed.update(message.basename for message in chosen)
        return CopyResult(
            target._uidlist.uidvalidity,
            tuple(message.uid for message in chosen),
            tuple(range(first, first + len(records))),
        )

    def _place(
        self, message: Message, target: Folder, destination: str, *, move: bool, locator: _Locator
    ) -> str:
        """Link (or rename) the message's file to ``destination`` in ``target``; returns where it was."""
        final = target._full(destination)
        location: str | None = message.location
        while location is not None:
            try:
                (os.rename if move else os.link)(self._full(location), final)
                return location
            except FileNotFoundError:
                location = locator.locate(message.basename, location)
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # not another file system
                    raise
                self._copy_bytes(self._full(location), target, final)
                if move:
                    os.unlink(self._full(location))
                return location
        raise MessageGoneError(f"message UID {message.uid} of {self.name!r} no longer exists")

    def _copy_bytes(self, source: str, target: Folder, final: str) -> None:
        temporary = target.path / "tmp" / unique_name(self._clock(), self._maildir.hostname)
        try:
            with open(source, "rb") as reader:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
                try:
                    while chunk := reader.read(CHUNK_SIZE):
                        write_all(fd, chunk)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            shutil.copystat(source, temporary)
            os.rename(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)

    def _undo(self, placed: list[tuple[str, str]], target: Folder, *, move: bool) -> None:
        for source, destination in reversed(placed):
            try:
                if move:
                    os.rename(target._full(destination), self._full(source))
                else:
                    os.unlink(target._full(destination))
            except OSError as exc:
                log.error("cannot undo %s of %s: %s", "move" if move else "copy", destination, exc)

    def _letters_in(self, target: Folder, letters: str) -> str:
        """The info letters of ``letters`` in ``target``: keywords by name, given letters there if needed
        (a keyword that finds no free letter in the target is dropped)."""
        names = [self._keywords.name(letter) for letter in letters if "a" <= letter <= "z"]
        kept = {letter for letter in letters if not "a" <= letter <= "z"}
        if any(target._keywords.letter(name) is None for name in names):
            target._keywords.add(names)
            target._keywords_added = True
            target._flag_sets.clear()
        kept.update(letter for name in names if (letter := target._keywords.letter(name)) is not None)
        return "".join(sorted(kept))

    def _keyword_letters(self, names: Iterable[str], *, create: bool, lock_held: bool) -> set[str]:
        names = list(names)
        if create and any(self._keywords.letter(name) is None for name in names):
            if lock_held:
                self._add_keywords(names)
            else:
                with self._locked():
                    self._add_keywords(names)
        return {letter for name in names if (letter := self._keywords.letter(name)) is not None}

    def _add_keywords(self, names: list[str]) -> None:
        self._keywords.refresh()
        without_letter = self._keywords.add(names)
        self._keywords_added = True
        self._flag_sets.clear()
        if without_letter:
            raise KeywordLimitError(
                f"folder {self.name!r} has no free keyword letter for {', '.join(without_letter)}"
            )

    def _writable(self) -> None:
        if self.readonly:
            raise ReadOnlyFolderError(f"folder {self.name!r} is open read-only")


class _Locator:
    """Finds where a message's file went when its known name fails (another process renamed it): one
    scan serves many lookups, a new scan is made only when the scanned name fails too."""

    def __init__(self, folder: Folder) -> None:
        self._folder = folder
        self._files: dict[str, str] | None = None

    def locate(self, basename: str, failed: str) -> str | None:
        if self._files is None or self._found(basename) == failed:
            self._files = self._folder._scan()
            if self._found(basename) == failed:
                return None
        return self._found(basename)

    def _found(self, basename: str) -> str | None:
        place = None if self._files is None else self._files.get(basename)
        return None if place is None else location_of(basename, place)


@dataclass(frozen=True)
class Snapshot:
    """A folder's full view as one session last read it, and what proves it still current."""

    stamp: tuple[int, int]
    uidlist: UidList
    keywords: Keywords
    flag_sets: dict[str, frozenset[str]]
    messages: list[Message]
    """The view's lists, shared with the sessions that start from it: never changed (copy on write, see
    :meth:`Folder._own_view`)."""
    uids: list[int]
    counts: dict[str, int]
    """What was counted in ``messages`` (see :meth:`Folder.first_unseen`), filled in by the first to count."""
    lowest_in_new: int | None
    """The lowest UID still in new/ (a read-write session starting from it scans, to claim them)."""


class SnapshotCache:
    """The last full view of each folder, for the next session of this process that opens it: a warm
    SELECT then costs a few ``stat`` calls instead of a scan and a uid list read (the role Dovecot's
    index plays). Least recently used views are dropped beyond ``max_messages``."""

    def __init__(self, max_messages: int = MAX_CACHED_MESSAGES) -> None:
        self.max_messages = max_messages
        self._entries: OrderedDict[str, Snapshot] = OrderedDict()
        self._messages = 0
        self._lock = threading.Lock()

    def get(self, directory: str) -> Snapshot | None:
        with self._lock:
            snapshot = self._entries.get(directory)
            if snapshot is not None:
                self._entries.move_to_end(directory)
            return snapshot

    def put(self, directory: str, snapshot: Snapshot) -> None:
        with self._lock:
            previous = self._entries.pop(directory, None)
            if previous is not None:
                self._messages -= len(previous.messages)
            if len(snapshot.messages) > self.max_messages:
                return
            self._entries[directory] = snapshot
            self._messages += len(snapshot.messages)
            while self._messages > self.max_messages:
                _, dropped = self._entries.popitem(last=False)
                self._messages -= len(dropped.messages)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._messages = 0


SNAPSHOTS = SnapshotCache()
"""The process's cache, used by every :class:`MailStore` unless it is given another (or None)."""


class MailStore:
    """One user's Maildir++ as IMAP sees it: folders by name (``INBOX``, ``Junk``, ``Archive.2024``; levels
    separated by ``.``; Unicode names, stored in modified UTF-7), their listing and status, subscriptions.
    """

    def __init__(
        self,
        maildir: Maildir,
        *,
        clock: Callable[[], int] = time.time_ns,
        snapshots: SnapshotCache | None = SNAPSHOTS,
    ) -> None:
        self.maildir = maildir
        self._clock = clock
        self._snapshots = snapshots

    def folder(self, name: str, *, readonly: bool = False) -> Folder:
        """The folder, not yet read (for APPEND, COPY and MOVE targets); see :meth:`select`."""
        path = self._existing_path(name)
        return Folder(
            self.maildir,
            canonical_name(name),
            path,
            readonly=readonly,
            clock=self._clock,
            snapshots=self._snapshots,
        )

    def select(self, name: str, *, readonly: bool = False) -> Folder:
        """SELECT (or, ``readonly``, EXAMINE): the folder with its view read."""
        folder = self.folder(name, readonly=readonly)
        folder.sync()
        return folder

    def status(self, name: str) -> FolderStatus:
        """STATUS: the counts, read without claiming \\Recent (messages in new/ count as recent)."""
        folder = self.select(name, readonly=True)
        return FolderStatus(
            messages=len(folder.messages),
            recent=len(folder.recent),
            uidnext=folder.uidnext,
            uidvalidity=folder.uidvalidity,
            unseen=folder.unseen(),
        )

    def append(
        self,
        name: str,
        source: BinaryIO | Path | bytes,
        *,
        flags: Iterable[str] = (),
        internal_date: float | None = None,
    ) -> AppendResult:
        return self.folder(name).append(source, flags=flags, internal_date=internal_date)

    def exists(self, name: str) -> bool:
        try:
            self._existing_path(name)
        except (FolderNotFoundError, FolderNameError):
            return False
        return True

    def list_folders(self) -> list[FolderListing]:
        """Every folder, INBOX first, plus the names that only exist as parents (\\Noselect)."""
        names = [
            name
            for name in self.maildir.list_folders()
            if name.partition(FOLDER_SEPARATOR)[0].upper() != INBOX
        ]
        existing = set(names)
        parents = {
            name.rsplit(FOLDER_SEPARATOR, level)[0]
            for name in names
            for level in range(1, name.count(FOLDER_SEPARATOR) + 1)
        }
        listings = [FolderListing(INBOX, selectable=True, has_children=False)]
        for name in sorted(existing | parents):
            listings.append(
                FolderListing(
                    name,
                    selectable=name in existing,
                    has_children=name in parents,
                    special_use=SPECIAL_USE.get(name),
                )
            )
        return listings

    def create(self, name: str) -> None:
        """CREATE (a trailing ``.`` is dropped). Parents are not created: like Dovecot, a name with only
        sub-folders is listed \\Noselect. Not subscribed (CREATE does not subscribe)."""
        name = name.removesuffix(FOLDER_SEPARATOR)
        if is_inbox(name) or self.exists(name):
            raise FolderExistsError(f"folder {name!r} exists already")
        self.maildir.ensure()
        self.maildir.create_folder(name, subscribe=False)

    def delete(self, name: str) -> None:
        """DELETE: the folder and its messages go; its sub-folders stay (the name is then listed
        \\Noselect, RFC 3501's rule, as Dovecot does). INBOX and names that are only parents are refused."""
        if is_inbox(name):
            raise MaildirError("INBOX cannot be deleted")
        path = self._existing_path(name)
        self.maildir.ensure()
        trash = (
            self.maildir.path / "tmp" / (DELETED_PREFIX + unique_name(self._clock(), self.maildir.hostname))
        )
        try:
            os.rename(path, trash)  # one atomic step: no session ever sees half a folder
            fsync_directory(self.maildir.path)
        except OSError as exc:
            raise MaildirError(f"cannot delete folder {name!r}: {exc.strerror or exc}") from exc
        shutil.rmtree(trash, ignore_errors=True)

    def rename(self, old: str, new: str) -> None:
        """RENAME, sub-folders included (subscriptions stay as they are, as in Dovecot). RENAME INBOX
        moves INBOX's messages into the new folder and leaves INBOX empty (RFC 3501)."""
        new = new.removesuffix(FOLDER_SEPARATOR)
        if is_inbox(new) or self.exists(new):
            raise FolderExistsError(f"folder {new!r} exists already")
        if is_inbox(old):
            self._rename_inbox(new)
            return
        old_directory, new_directory = folder_directory_name(old), folder_directory_name(new)
        if new_directory.startswith(old_directory + FOLDER_SEPARATOR):
            raise MaildirError(f"cannot move folder {old!r} into its own sub-folder {new!r}")
        moves = self._renames(old_directory, new_directory)
        if not moves:
            raise FolderNotFoundError(f"no folder {old!r}")
        for _, target in moves:
            if (self.maildir.path / target).exists():
                raise FolderExistsError(f"folder {folder_name_from_directory(target)!r} exists already")
        try:
            for source, target in moves:
                os.rename(self.maildir.path / source, self.maildir.path / target)
            fsync_directory(self.maildir.path)
        except OSError as exc:
            raise MaildirError(f"cannot rename folder {old!r}: {exc.strerror or exc}") from exc

    def _renames(self, old_directory: str, new_directory: str) -> list[tuple[str, str]]:
        moves = []
        for entry in os.scandir(self.maildir.path):
            if entry.name == old_directory or entry.name.startswith(old_directory + FOLDER_SEPARATOR):
                target = new_directory + entry.name[len(old_directory) :]
                folder_name_from_directory(target)
                if len(target) > 255:
                    raise FolderNameError(f"folder {folder_name_from_directory(target)!r} is too long")
                moves.append((entry.name, target))
        return moves

    def _rename_inbox(self, new: str) -> None:
        self.maildir.ensure()
        self.maildir.create_folder(new, subscribe=False)
        target = self.maildir.folder_path(new)
        keywords = self.maildir.path / KEYWORDS_FILE
        if keywords.exists():
            shutil.copyfile(keywords, target / KEYWORDS_FILE)
        for subdirectory in ("new", "cur"):
            for entry in os.scandir(self.maildir.path / subdirectory):
                if not entry.name.startswith("."):
                    os.rename(entry.path, target / subdirectory / entry.name)
            fsync_directory(target / subdirectory)

    def subscribe(self, name: str) -> None:
        """SUBSCRIBE, in both Courier's and Dovecot's files; the folder must exist (as Dovecot checks)."""
        self._existing_path(name)
        self.maildir.subscribe(canonical_name(name))

    def unsubscribe(self, name: str) -> bool:
        """UNSUBSCRIBE from both files; True if the name was subscribed in either."""
        return self.maildir.unsubscribe(canonical_name(name))

    def subscribed(self) -> list[str]:
        """LSUB: Dovecot's ``subscriptions`` when it exists (Dovecot may be changing it too), else
        Courier's ``courierimapsubscribed``."""
        stored = self.maildir.subscriptions()
        names = stored.dovecot if (self.maildir.path / DOVECOT_FILE).exists() else stored.courier
        return [canonical_name(name) for name in names]

    def _existing_path(self, name: str) -> Path:
        if is_inbox(name):
            if not os.path.isdir(os.path.join(self.maildir.path, "cur")):
                self.maildir.ensure()  # INBOX is made when missing; when it is there, one stat
            return self.maildir.path
        path = self.maildir.folder_path(name)
        if not (path / "cur").is_dir():
            raise FolderNotFoundError(f"no folder {name!r}")
        return path


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a view of tens of thousands of messages is built: the
    objects hold no cycles, but each collection would walk all of them (it halves a 50,000-message SELECT).
    The collector is process-wide; it is only switched back on if it was on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def canonical_name(name: str) -> str:
    """``INBOX`` in any case is ``INBOX``; other names are case-sensitive."""
    return INBOX if is_inbox(name) else name


def split_flags(flags: Iterable[str]) -> tuple[set[str], list[str]]:
    """System flags as info letters, and keyword names; ``\\Recent`` is dropped, other ``\\`` names are
    refused."""
    letters = set()
    keywords = []
    for flag in flags:
        if flag.startswith("\\"):
            folded = flag.casefold()
            if folded == RECENT.casefold():
                continue
            if folded not in FLAG_LETTERS:
                raise FlagError(f"{flag} is not a flag that can be stored")
            letters.add(FLAG_LETTERS[folded])
        else:
            keywords.append(flag)
    return letters, keywords


def location_of(basename: str, place: str) -> str:
    """``new/<file name>`` or ``cur/<file name>`` of a message's basename and place (see :class:`Message`)."""
    return ("new/" if place[0] == "n" else "cur/") + basename + place[1:]


def place_of(basename: str, location: str) -> str:
    """The place (``n``/``c`` and the rest of the file name, interned) of ``location``."""
    return sys.intern(location[0] + location[4 + len(basename) :])


def letters_of(location: str) -> str:
    start = location.find(INFO_PREFIX)
    return location[start + 3 :] if start >= 0 else ""


def combine_letters(letters: str, mode: StoreMode, wanted: set[str]) -> str:
    """The info letters after a STORE; letters IMAP does not show (``P``, passed) survive even a replace."""
    if mode == "replace":
        result = {letter for letter in letters if letter not in SYSTEM_FLAGS and not "a" <= letter <= "z"}
        result |= wanted
    elif mode == "add":
        result = set(letters) | wanted
    else:
        result = set(letters) - wanted
    return "".join(sorted(result))


def size_field(basename: str, key: str) -> int | None:
    """``,S=<n>`` or ``,W=<n>`` from a file name, as Dovecot reads them."""
    match = _SIZE_FIELDS[key].search(basename)
    return int(match[1]) if match else None


def maildir_sort_key(basename: str) -> tuple[int, int, str]:
    """Dovecot's order for new UIDs: the seconds in the name, then the microseconds (``M<n>``), then the
    name."""
    match = _SORT_KEY.match(basename)
    assert match is not None
    return (int(match[1] or 0), int(match[2] or 0), basename)


def maildir_sorted(basenames: Iterable[str]) -> list[str]:
    """``sorted(basenames, key=maildir_sort_key)``, the keys made in bulk: one regular expression over all
    the names and C-level conversions, no Python call per name (a first SELECT sorts every file)."""
    names = list(basenames)
    joined = "\n".join(names)
    fields = _SORT_KEYS.findall(joined) if joined.count("\n") == len(names) - 1 else []
    if len(fields) != len(names) or len(names) < 64:  # a line feed in a name (never seen), or few names
        return sorted(names, key=maildir_sort_key)
    seconds = map(int, map("0".__add__, map(itemgetter(0), fields)))
    micros = map(int, map("0".__add__, map(itemgetter(1), fields)))
    return [name for _s, _m, name in sorted(zip(seconds, micros, names, strict=True))]


def crlf_size(stream: BinaryIO) -> int:
    """The size of the stream with every bare LF counted as CRLF (how IMAP serves a message stored with
    LF)."""
    size = lf = crlf = 0
    previous_cr = False
    while chunk := stream.read(CHUNK_SIZE):
        size += len(chunk)
        lf += chunk.count(b"\n")
        crlf += chunk.count(b"\r\n") + (1 if previous_cr and chunk[:1] == b"\n" else 0)
        previous_cr = chunk[-1:] == b"\r"
    return size + lf - crlf
