"""Spam learning from what IMAP users do with their mail: moving it into or out of Junk, flagging it.

A user who drags a message into Junk has judged it spam, and one who takes it out of Junk (anywhere but
Trash) has judged it ham; mail readers also say so with keywords (``$Junk``/``$NotJunk``, RFC 5788;
Thunderbird's ``Junk``/``NonJunk``). Those judgements are the best training the filter can get, and
they are per user: each is learned in the user's own scope (and the global one, as
:meth:`SpamFilter.learn <mailtoaster.spam.filter.SpamFilter.learn>` always does), the scope the server
scores that user's mail with.

The rules (:func:`label_for_transfer`, :func:`label_for_keywords`):

* COPY, MOVE or APPEND into a Junk folder (``Junk``, any folder below it, or a folder whose special use
  is ``\\Junk``) from anywhere that is not one: spam.
* COPY or MOVE out of a Junk folder into one that is neither Junk nor Trash (``Trash``, below it, or
  special use ``\\Trash``): ham. A plain COPY counts: a client's "not junk" is often COPY to INBOX, then
  STORE ``\\Deleted`` and EXPUNGE in Junk, and the judgement is the COPY.
* STORE adding ``$Junk`` (or ``Junk``): spam; adding ``$NotJunk`` (``NotJunk``, ``NonJunk``): ham.
* Into Trash, between two folders that are both Junk or both not: nothing.

Learning a message as the other class moves its tokens over (the filter's ``moved`` outcome), so a
message learned as spam and then rescued is counted once, as ham.

Learning never holds up a command: the session hands a :class:`LearningEvent` (which messages, by
folder and UID) to :class:`JunkLearner`, whose one thread reads the messages through a read-only view
of the folder and learns them, after the command's tagged OK has gone out. The queue is bounded; a full
queue drops the event with a WARNING rather than waiting. Every message learned (or not) is one INFO
line on ``mailtoaster.imap.learn``. Messages larger than ``[spam] max_size`` are not learned (the
server never scores them either), messages gone by the time the thread looks are skipped, and with the
filter disabled or its store unavailable the event is logged and dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from mailtoaster.spam import SpamFilter, TokenStoreUnavailable
from mailtoaster.spam.store import Label
from mailtoaster.store import MaildirError, MailStore
from mailtoaster.store.folder import SPECIAL_USE, Folder
from mailtoaster.store.maildir import FOLDER_SEPARATOR, Maildir

log = logging.getLogger("mailtoaster.imap.learn")

JUNK_KEYWORDS = frozenset({"$junk", "junk"})
"""Keywords (compared without case) that say spam: RFC 5788's ``$Junk`` and Thunderbird's ``Junk``."""
NOT_JUNK_KEYWORDS = frozenset({"$notjunk", "notjunk", "nonjunk"})
"""Keywords that say ham: ``$NotJunk`` and Thunderbird's ``NonJunk``."""
QUEUE_SIZE = 1000
"""Events waiting for the learning thread; more are dropped (logged), never waited for."""
STOP_TIMEOUT = 10.0
"""Seconds :meth:`JunkLearner.stop` lets the thread finish what is queued."""
READ_CHUNK = 64 * 1024


def _special_use(name: str) -> str | None:
    return SPECIAL_USE.get(name)


def _top_level(name: str) -> str:
    return name.split(FOLDER_SEPARATOR, 1)[0]


def is_junk(name: str) -> bool:
    """``Junk``, a folder below it, or a folder with the ``\\Junk`` special use."""
    return _top_level(name) == "Junk" or _special_use(name) == "\\Junk"


def is_trash(name: str) -> bool:
    """``Trash``, a folder below it, or a folder with the ``\\Trash`` special use."""
    return _top_level(name) == "Trash" or _special_use(name) == "\\Trash"


def label_for_transfer(source: str | None, target: str) -> Label | None:
    """What a COPY or MOVE from ``source`` (None: APPEND) into ``target`` says about the messages."""
    if is_junk(target):
        return None if source is not None and is_junk(source) else "spam"
    if source is not None and is_junk(source) and not is_trash(target):
        return "ham"
    return None


def label_for_keywords(added: Iterable[str]) -> Label | None:
    """What adding the flags ``added`` says (spam wins if a client sets both)."""
    folded = {flag.casefold() for flag in added}
    if folded & JUNK_KEYWORDS:
        return "spam"
    if folded & NOT_JUNK_KEYWORDS:
        return "ham"
    return None


@dataclass(frozen=True)
class LearningEvent:
    """Messages a user's action judged: ``uids`` in ``folder`` (where they are now) of ``maildir``."""

    user: str
    maildir: Maildir
    folder: str
    uids: tuple[int, ...]
    label: Label
    action: str
    """``copy``, ``move``, ``append`` or ``keyword``."""
    source: str | None = None
    """The folder the messages came from (COPY, MOVE), for the log."""


class JunkLearner:
    """One thread that learns :class:`LearningEvent` s with ``spam_filter`` (None: the filter is off,
    events are only logged). :meth:`submit` never blocks or raises."""

    def __init__(
        self, spam_filter: SpamFilter | None, *, max_size: int, queue_size: int = QUEUE_SIZE
    ) -> None:
        self._filter = spam_filter
        self._max_size = max_size
        self._queue: queue.Queue[LearningEvent | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._pending = 0
        self._pending_lock = threading.Lock()
        self.idle = threading.Event()
        """Set whenever nothing is queued or being learned (tests wait on it)."""
        self.idle.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="imap-junk-learner", daemon=True)
            self._thread.start()

    def submit(self, event: LearningEvent) -> None:
        """Queue ``event``; a full queue (or a stopped learner) drops it with a WARNING."""
        if self._stopping or self._thread is None:
            log.warning("learning stopped, not queued: %s", _describe(event))
            return
        with self._pending_lock:
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                log.warning(
                    "learning queue full (%d events), dropped: %s", self._queue.maxsize, _describe(event)
                )
                return
            self._pending += 1
            self.idle.clear()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Learn what is queued (for up to ``timeout`` seconds), then end the thread."""
        self._stopping = True
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("learning queue still full at shutdown: queued events are dropped")
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("learning thread still busy after %gs at shutdown", timeout)
        self._thread = None

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                self.learn(event)
            except Exception:  # the thread must outlive any one event
                log.exception("learning failed: %s", _describe(event))
            with self._pending_lock:
                self._pending -= 1
                if not self._pending:
                    self.idle.set()

    def learn(self, event: LearningEvent) -> None:
        """Learn the event's messages now (in the calling thread)."""
        if self._filter is None:
            log.info("%s outcome=not-learned (spam filter disabled)", _describe(event))
            return
        try:
            folder = MailStore(event.maildir).select(event.folder, readonly=True)
        except MaildirError as error:
            log.info("%s outcome=not-learned (folder unreadable: %s)", _describe(event), error)
            return
        try:
            for uid in event.uids:
                if not self._learn_one(event, folder, uid):
                    return
        finally:
            folder.close()

    def _learn_one(self, event: LearningEvent, folder: Folder, uid: int) -> bool:
        """Learn one message; False when the store is unavailable (the rest would fail alike)."""
        assert self._filter is not None
        where = _describe(event, uid)
        message = folder.message(uid)
        if message is None:
            log.info("%s outcome=not-learned (message gone)", where)
            return True
        try:
            if folder.stored_size(message) > self._max_size:
                log.info("%s outcome=not-learned (larger than [spam] max_size %d)", where, self._max_size)
                return True
            with folder.open_message(message) as stream:
                data = stream.read(self._max_size + 1)
        except MaildirError as error:
            log.info("%s outcome=not-learned (%s)", where, error)
            return True
        except OSError as error:
            log.info("%s outcome=not-learned (cannot read: %s)", where, error.strerror or error)
            return True
        try:
            outcome = self._filter.learn(data, event.label, event.user)
        except TokenStoreUnavailable as error:
            log.warning("%s outcome=not-learned (token store unavailable: %s)", where, error)
            return False
        log.info("%s outcome=%s", where, outcome.value.replace(" ", "-"))
        return True


def _describe(event: LearningEvent, uid: int | None = None) -> str:
    uids = str(uid) if uid is not None else ",".join(str(each) for each in event.uids[:20])
    if uid is None and len(event.uids) > 20:
        uids += f",...({len(event.uids)})"
    return (
        f"learn user={event.user} action={event.action} from={event.source or '-'} to={event.folder} "
        f"uid={uids} label={event.label}"
    )
