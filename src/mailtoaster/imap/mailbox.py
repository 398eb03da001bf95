"""The selected mailbox of an IMAP session: the session's :class:`~mailtoaster.store.Folder` view, and
the responses SELECT, FETCH, STORE, SEARCH and a sync owe the client.

Everything here reads or changes files, so the session calls it from a worker thread (never on the
event loop); one session's calls come one at a time, so the view changes only between them. FETCH is
a generator of response bytes, pulled a batch at a time (:data:`BATCH_BYTES`): a 50 MB ``BODY[]``
goes out in pieces without ever being held whole, and ``FETCH 1:* FLAGS`` over 50,000 messages costs
a few thread hand-offs, not 50,000.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Generator, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

from mailtoaster.imap import fetch as fetching
from mailtoaster.imap import response
from mailtoaster.imap.cache import HeaderCache, decode_values, encode_values
from mailtoaster.imap.parser import StoreMode
from mailtoaster.imap.search import (
    HeaderContains,
    SearchKey,
    SearchProgram,
    header_contains,
    header_field_values,
    header_fields,
)
from mailtoaster.imap.sequence import SequenceSet
from mailtoaster.store import Changes, CopyResult, Folder, MaildirError, Message, MessageGoneError
from mailtoaster.store.folder import StoreMode as FlagChange

SYSTEM_FLAG_ORDER = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
RECENT = "\\Recent"
SEEN = "\\Seen"
BATCH_BYTES = 256 * 1024
"""Response bytes gathered in a worker thread before they are written (and the writer drained)."""
HEADER_READ = 64 * 1024
_FILE_ITEMS = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822", "RFC822.HEADER", "RFC822.TEXT"})
_CHEAP_ITEMS = {"UID": b"UID %d", "FLAGS": b"FLAGS %s", "RFC822.SIZE": b"RFC822.SIZE %d"}
"""FETCH items answered without the file (when only these are asked): their formats."""
_CHEAP_SLOTS = {"UID": 1, "FLAGS": 2, "RFC822.SIZE": 3}
_STORE_MODES: dict[StoreMode, FlagChange] = {
    StoreMode.REPLACE: "replace",
    StoreMode.ADD: "add",
    StoreMode.REMOVE: "remove",
}


def is_flag_atom(flag: str) -> bool:
    """Whether ``flag`` can go into a flag list as it is (a keyword some other program wrote into
    ``dovecot-keywords`` might not: it is left out rather than allowed to break the response)."""
    try:
        response.atom(flag[1:] if flag.startswith("\\") else flag)
    except ValueError:
        return False
    return True


def ordered_flags(flags: AbstractSet[str], recent: bool = False) -> list[str]:
    """System flags in RFC order, ``\\Recent``, then keywords sorted."""
    ordered = [flag for flag in SYSTEM_FLAG_ORDER if flag in flags]
    if recent:
        ordered.append(RECENT)
    ordered += sorted(flag for flag in flags if not flag.startswith("\\") and is_flag_atom(flag))
    return ordered


def flag_list(flags: Iterable[str]) -> bytes:
    return response.paren_list(flag.encode("ascii") for flag in flags)


def local_datetime(timestamp: float) -> datetime:
    """A file time in the server's time zone (what INTERNALDATE shows and SEARCH BEFORE/ON compare)."""
    return datetime.fromtimestamp(timestamp).astimezone()


@dataclass
class FetchOutcome:
    """What a FETCH left to say after its responses: messages it could not read."""

    missing: int = 0


@dataclass(frozen=True)
class StoreOutcome:
    responses: list[bytes]
    added: dict[int, frozenset[str]] = field(default_factory=dict)
    """UID → the flags STORE newly set on it (for learning from ``$Junk``)."""


class SelectedMailbox:
    """One session's selected folder (SELECT, or read-only EXAMINE)."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def readonly(self) -> bool:
        return self.folder.readonly

    # -- views ------------------------------------------------------------------------------------

    def flags_of(self, message: Message) -> list[str]:
        return ordered_flags(message.flags, message.uid in self.folder.recent)

    def uids(self) -> list[int]:
        return [message.uid for message in self.folder.messages]

    def targets(self, by_uid: bool, sequence_set: SequenceSet) -> list[tuple[int, Message]]:
        """``(sequence number, message)`` of what the set names, ascending. Sequence numbers beyond the
        mailbox raise :class:`~mailtoaster.imap.sequence.SequenceSetError`; unknown UIDs are skipped."""
        messages = self.folder.messages
        if by_uid:
            wanted = set(sequence_set.uids(self.uids()))
            return [(index + 1, message) for index, message in enumerate(messages) if message.uid in wanted]
        return [(number, messages[number - 1]) for number in sequence_set.message_numbers(len(messages))]

    def defined_flags(self) -> list[str]:
        return [*SYSTEM_FLAG_ORDER, *(keyword for keyword in self.folder.keywords if is_flag_atom(keyword))]

    def flag_responses(self) -> list[bytes]:
        """FLAGS and PERMANENTFLAGS (none for EXAMINE; ``\\*`` while keywords can still be made)."""
        defined = self.defined_flags()
        if self.readonly:
            permanent: list[str] = []
        else:
            permanent = defined + ([] if self.folder.keywords_full else ["\\*"])
        return [
            response.untagged(b"FLAGS " + flag_list(defined)),
            response.untagged(b"OK [PERMANENTFLAGS " + flag_list(permanent) + b"] Flags permitted."),
        ]

    def select_responses(self) -> list[bytes]:
        folder = self.folder
        lines = self.flag_responses()
        lines.append(response.untagged(b"%d EXISTS" % len(folder.messages)))
        lines.append(response.untagged(b"%d RECENT" % len(folder.recent)))
        first_unseen = folder.first_unseen()
        if first_unseen is not None:
            lines.append(response.untagged(b"OK [UNSEEN %d] First unseen." % first_unseen))
        lines.append(response.untagged(b"OK [UIDVALIDITY %d] UIDs valid." % folder.uidvalidity))
        lines.append(response.untagged(b"OK [UIDNEXT %d] Predicted next UID." % folder.uidnext))
        return lines

    # -- keeping up with the disk -------------------------------------------------------------------

    def sync(self, *, report_expunges: bool) -> tuple[list[bytes], bool]:
        """Catch up with the disk: the untagged responses to send, and whether UIDVALIDITY changed
        (then the session must end, RFC 3501 §2.3.1.1)."""
        changes = self.folder.sync(report_expunges=report_expunges)
        if changes.uidvalidity_changed:
            return [], True
        return self.change_responses(changes), False

    def change_responses(self, changes: Changes) -> list[bytes]:
        """EXPUNGEs (in the order given), FLAGS if the keywords changed, EXISTS and RECENT for new
        messages, FETCH FLAGS for flags others changed."""
        folder = self.folder
        lines = [response.untagged(b"%d EXPUNGE" % number) for number in changes.expunged_sequences]
        if changes.keywords_changed:
            lines += self.flag_responses()
        if changes.added:
            lines.append(response.untagged(b"%d EXISTS" % len(folder.messages)))
        if changes.added or changes.recent is not None:
            lines.append(response.untagged(b"%d RECENT" % len(folder.recent)))
        for uid in changes.flags_changed:
            number = folder.sequence(uid)
            message = folder.message(uid)
            if number is not None and message is not None:
                flags = flag_list(self.flags_of(message))
                lines.append(response.untagged(b"%d FETCH (UID %d FLAGS %s)" % (number, uid, flags)))
        return lines

    # -- FETCH ------------------------------------------------------------------------------------

    def fetch(
        self,
        targets: Sequence[tuple[int, Message]],
        wanted: Sequence[FetchItem],
        *,
        outcome: FetchOutcome,
    ) -> Generator[bytes, None, None]:
        """The ``* n FETCH (...)`` responses for ``wanted`` (from :func:`fetch_items`), as pieces
        (literals streamed). Sets ``\\Seen`` for body items that are not PEEK (not in a read-only
        folder) and then reports FLAGS. Messages that vanished meanwhile are left out and counted in
        ``outcome``. Everything that can fail for a message is done before its first piece."""
        if wanted and all(isinstance(item, str) and item in _CHEAP_ITEMS for item in wanted):
            yield from self._fetch_cheap(targets, wanted, outcome=outcome)
            return
        sets_seen = not self.readonly and fetching.sets_seen(wanted)
        needs_file = any(not isinstance(item, str) or item in _FILE_ITEMS for item in wanted)
        for number, message in targets:
            if message.uid in self.folder.gone and needs_file:
                outcome.missing += 1
                continue
            try:
                pieces, content = self._prepare(message, wanted, sets_seen=sets_seen, needs_file=needs_file)
            except MessageGoneError:
                outcome.missing += 1
                continue
            yield from _fetch_response(number, pieces, content)

    def _fetch_cheap(
        self, targets: Sequence[tuple[int, Message]], wanted: Sequence[FetchItem], *, outcome: FetchOutcome
    ) -> Iterator[bytes]:
        """FETCH of UID, FLAGS and RFC822.SIZE only (what every client asks when it syncs): the same
        bytes as the general path, each line formatted at once (flag lists rendered once per flag set),
        joined in batches of about :data:`BATCH_BYTES`."""
        names = [item for item in wanted if isinstance(item, str)]
        template = b"* %d FETCH (" + b" ".join(_CHEAP_ITEMS[item] for item in names) + b")\r\n"
        pick = operator.itemgetter(0, *(_CHEAP_SLOTS[item] for item in names))
        wants_size = "RFC822.SIZE" in wanted
        recent = self.folder.recent
        rendered: dict[frozenset[str], bytes] = {}
        rendered_recent: dict[frozenset[str], bytes] = {}
        batch: list[bytes] = []
        size = 0
        for number, message in targets:
            uid = message.uid
            if uid in recent:
                flags = rendered_recent.get(message.flags)
                if flags is None:
                    flags = rendered_recent[message.flags] = flag_list(ordered_flags(message.flags, True))
            else:
                flags = rendered.get(message.flags)
                if flags is None:
                    flags = rendered[message.flags] = flag_list(ordered_flags(message.flags))
            vsize = message.vsize
            if wants_size and vsize is None:
                try:
                    vsize = self.folder.rfc822_size(message)
                except MessageGoneError:
                    outcome.missing += 1
                    continue
            line = template % pick((number, uid, flags, vsize))
            batch.append(line)
            size += len(line)
            if size >= BATCH_BYTES:
                yield b"".join(batch)
                batch, size = [], 0
        if batch:
            yield b"".join(batch)

    def _prepare(
        self, message: Message, wanted: Sequence[FetchItem], *, sets_seen: bool, needs_file: bool
    ) -> tuple[list[Iterator[bytes]], fetching.FetchMessage | None]:
        """One message's items, each ready to stream (sizes, dates and the file already read), and the
        file's content to release once they are sent."""
        flags_changed = False
        if sets_seen and SEEN not in message.flags:
            flags_changed = bool(self.folder.store([message.uid], [SEEN], "add"))
            message = self.folder.message(message.uid) or message
        content = open_fetch_message(self.folder, message) if needs_file else None
        try:
            pieces = [self._item(item, message, content) for item in wanted]
        except BaseException:
            if content is not None:
                content.close()
            raise
        if flags_changed and "FLAGS" not in wanted:
            pieces.append(iter([b"FLAGS " + flag_list(self.flags_of(message))]))
        return pieces, content

    def _item(
        self, item: str | fetching.BodySection, message: Message, content: fetching.FetchMessage | None
    ) -> Iterator[bytes]:
        if item == "UID":
            return iter([b"UID %d" % message.uid])
        if item == "FLAGS":
            return iter([b"FLAGS " + flag_list(self.flags_of(message))])
        if item == "INTERNALDATE":
            moment = local_datetime(self.folder.internal_date(message))
            return iter([b"INTERNALDATE " + response.date_time(moment)])
        if item == "RFC822.SIZE":
            return iter([b"RFC822.SIZE %d" % self.folder.rfc822_size(message)])
        assert content is not None
        return content.render_chunks(item)

    # -- SEARCH -----------------------------------------------------------------------------------

    def search(self, criteria: SearchKey, *, by_uid: bool) -> list[int]:
        messages = self.folder.messages
        program = SearchProgram(
            criteria, message_count=len(messages), max_uid=messages[-1].uid if messages else 0
        )
        fields = header_fields(criteria)
        lookup = _HeaderLookup(self.folder, fields, messages) if fields else None
        found = []
        if lookup is not None and isinstance(criteria, HeaderContains):
            # the common search, one header field: no per-message program to run
            name = next(iter(fields))
            known = lookup.known(name)
            for index, message in enumerate(messages):
                blob = known.get(message.basename)
                values = decode_values(blob) if blob is not None else None
                if values is None:
                    values = lookup.values(_SearchView(self.folder, message, index + 1, lookup), name)
                if header_contains(criteria, values or ()):
                    found.append(message.uid if by_uid else index + 1)
        else:
            for index, message in enumerate(messages):
                if program.matches(_SearchView(self.folder, message, index + 1, lookup)):
                    found.append(message.uid if by_uid else index + 1)
        if lookup is not None:
            lookup.save()
        return found

    # -- STORE, COPY, MOVE, EXPUNGE ------------------------------------------------------------------

    def store(
        self,
        targets: Sequence[tuple[int, Message]],
        mode: StoreMode,
        flags: Sequence[str],
        *,
        silent: bool,
        by_uid: bool,
    ) -> StoreOutcome:
        """Change the flags; the FETCH responses for the messages whose flags changed (none if
        ``silent``), and what was newly set."""
        before = {message.uid: message.flags for _, message in targets}
        changed = set(self.folder.store(before, flags, _STORE_MODES[mode]))
        lines = []
        added: dict[int, frozenset[str]] = {}
        for number, old in targets:
            message = self.folder.message(old.uid) or old
            if old.uid not in changed:
                continue  # as Dovecot: a FETCH only for messages whose flags changed
            added[old.uid] = frozenset(message.flags - before[old.uid])
            if silent:
                continue
            uid_item = b"UID %d " % message.uid if by_uid else b""
            shown = flag_list(self.flags_of(message))
            lines.append(response.untagged(b"%d FETCH (%sFLAGS %s)" % (number, uid_item, shown)))
        return StoreOutcome(lines, added)

    def transfer(self, targets: Sequence[tuple[int, Message]], target: Folder, *, move: bool) -> CopyResult:
        uids = [message.uid for _, message in targets]
        if move:
            return self.folder.move(uids, target)
        return self.folder.copy(uids, target)


FetchItem = str | fetching.BodySection


def fetch_items(items: Sequence[FetchItem], by_uid: bool) -> list[FetchItem]:
    """The parser's items as the mailbox fetches them: UID first for UID FETCH, no item twice."""
    wanted: list[FetchItem] = ["UID"] if by_uid else []
    for item in items:
        if item not in wanted:
            wanted.append(item)
    return wanted


def _fetch_response(
    number: int, pieces: list[Iterator[bytes]], content: fetching.FetchMessage | None
) -> Iterator[bytes]:
    try:
        yield b"* %d FETCH (" % number
        for index, piece in enumerate(pieces):
            if index:
                yield b" "
            yield from piece
        yield b")\r\n"
    finally:
        if content is not None:
            content.close()


def open_fetch_message(folder: Folder, message: Message) -> fetching.FetchMessage:
    """The message's bytes for FETCH: read when small, mapped when large (found again if another
    process renamed the file). Raises :class:`~mailtoaster.store.MessageGoneError`."""
    descriptor = folder.open_message_descriptor(message)
    try:
        return fetching.message_from_descriptor(descriptor)
    finally:
        os.close(descriptor)


def take_batch(chunks: Iterator[bytes], budget: int = BATCH_BYTES) -> bytes:
    """The next ``budget`` or so bytes of ``chunks`` (empty at the end), joined."""
    batch: list[bytes] = []
    size = 0
    for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= budget:
            break
    return b"".join(batch)


class _HeaderLookup:
    """The header fields one SEARCH reads, from the folder's :class:`~mailtoaster.imap.cache.HeaderCache`
    where it has them; what had to be read from the files is added to it at the end (:meth:`save`)."""

    def __init__(self, folder: Folder, fields: frozenset[str], messages: Sequence[Message]) -> None:
        self._cache = HeaderCache(folder.path)
        self.fields = fields
        basenames = {message.basename for message in messages}
        self._known = {name: self._cache.load(name, basenames) for name in sorted(fields)}
        self._new: dict[str, dict[str, bytes]] = {name: {} for name in fields}

    def known(self, lower_name: str) -> dict[str, bytes]:
        """Base name → encoded values of ``lower_name``, as far as known (:func:`decode_values`)."""
        return self._known[lower_name]

    def values(self, view: _SearchView, lower_name: str) -> list[bytes] | None:
        """The values of ``lower_name`` for the message (None: not a field this lookup keeps, or the
        file is gone)."""
        known = self._known.get(lower_name)
        if known is None:
            return None
        basename = view.basename
        blob = known.get(basename)
        if blob is not None:
            cached = decode_values(blob)
            if cached is not None:
                return cached
        header = view.read_header()
        if header is None:
            return None
        wanted: list[bytes] = []
        for name, entries in self._known.items():
            values = header_field_values(header, name)
            entries[basename] = self._new[name][basename] = encode_values(values)
            if name == lower_name:
                wanted = values
        return wanted

    def save(self) -> None:
        for name, entries in self._new.items():
            if entries:
                self._cache.save(name, entries)


class _SearchView:
    """A message as :class:`~mailtoaster.imap.search.SearchProgram` reads it; the file only when a
    criterion needs it (header fields from the folder's header cache when it has them). A message
    whose file vanished reads as empty."""

    def __init__(
        self, folder: Folder, message: Message, number: int, lookup: _HeaderLookup | None = None
    ) -> None:
        self._folder = folder
        self._message = message
        self._number = number
        self._lookup = lookup
        self._header: bytes | None = None

    @property
    def basename(self) -> str:
        return self._message.basename

    def field_values(self, lower_name: str) -> list[bytes] | None:
        if self._lookup is None:
            return None
        return self._lookup.values(self, lower_name)

    def read_header(self) -> bytes | None:
        """The header section; None when the file is gone or cannot be read."""
        if self._header is None:
            try:
                with self._folder.open_message(self._message) as stream:
                    self._header = _read_header(stream)
            except (MaildirError, OSError):
                return None
        return self._header

    @property
    def seq(self) -> int:
        return self._number

    @property
    def uid(self) -> int:
        return self._message.uid

    @property
    def flags(self) -> AbstractSet[str]:
        if self._message.uid in self._folder.recent:
            return self._message.flags | {RECENT}
        return self._message.flags

    @property
    def internal_date(self) -> datetime:
        try:
            return local_datetime(self._folder.internal_date(self._message))
        except MaildirError:
            return local_datetime(0)

    @property
    def size(self) -> int:
        try:
            return self._folder.rfc822_size(self._message)
        except MaildirError:
            return 0

    def header_bytes(self) -> bytes:
        header = self.read_header()
        return b"" if header is None else header

    def message_bytes(self) -> bytes:
        try:
            with self._folder.open_message(self._message) as stream:
                return stream.read()
        except (MaildirError, OSError):
            return b""


def _read_header(stream: BinaryIO) -> bytes:
    """The header section up to and including its empty line (the whole file if it has none)."""
    data = b""
    searched = 0
    while chunk := stream.read(HEADER_READ):
        data += chunk
        ends = [
            found + len(separator)
            for separator in (b"\n\n", b"\r\n\r\n")
            if (found := data.find(separator, max(0, searched - 3))) >= 0
        ]
        if ends:
            return data[: min(ends)]
        searched = len(data)
    return data
