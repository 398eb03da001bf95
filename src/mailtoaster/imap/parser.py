"""IMAP commands (RFC 3501 and the extensions the server speaks) parsed from a :class:`RawCommand`.

:func:`parse_command` returns one frozen dataclass per command, its arguments decoded: mailbox names
from modified UTF-7 to text (``INBOX`` in any case becomes ``INBOX``), flags in canonical spelling,
dates as aware datetimes, sequence sets as :class:`~mailtoaster.imap.sequence.SequenceSet`, SEARCH
criteria as a :mod:`~mailtoaster.imap.search` tree, FETCH items as names and :class:`BodySection`.

Anything else raises :class:`ParseError` (and nothing but it): its :attr:`~ParseError.response` is the
line to send, ``<tag> BAD <what is wrong>`` (``* BAD`` when not even a tag could be read), or a NO
where Dovecot answers NO (a mailbox name that is not modified UTF-7, an unknown SEARCH charset with
``[BADCHARSET (US-ASCII UTF-8)]``).

The grammar is RFC 3501 §9 taken strictly where it protects us (tags, atoms, one space between
arguments, balanced parentheses, 32-bit numbers) and read as Dovecot reads it where clients are known
to stray (quoted strings may carry UTF-8; SEARCH string arguments may be any atom-like word).
Recognising IDLE's ``DONE`` line is the session's job: :func:`is_idle_done`.

Extensions: LITERAL+ (in :mod:`.reader`), SASL-IR, UIDPLUS (UID EXPUNGE), MOVE, UNSELECT, ENABLE, ID,
NAMESPACE, IDLE, LIST-EXTENDED selection and return options (RFC 5258) with SPECIAL-USE (RFC 6154) and
LIST-STATUS (RFC 5819). Not parsed: CONDSTORE/QRESYNC modifiers, MULTIAPPEND, CATENATE, BINARY, ESEARCH
return options (each is refused as an unexpected argument).
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TypeVar

from mailtoaster.imap.fetch import BodySection, FetchAttribute, Section
from mailtoaster.imap.reader import TAG, Literal, RawCommand, SpooledLiteral
from mailtoaster.imap.search import (
    SUPPORTED_CHARSETS,
    SearchKey,
    SearchSyntaxError,
    Token,
    TokenKind,
    UnknownCharsetError,
    parse_criteria,
)
from mailtoaster.imap.sequence import MAX_NUMBER, SequenceSet, SequenceSetError
from mailtoaster.store import FolderNameError, decode_mutf7

MAX_RESPONSE_TEXT = 200
"""Characters of an error message that go into the response line."""

# -- errors ------------------------------------------------------------------------------------------


class ParseError(Exception):
    """A command that cannot be carried out as written; :attr:`response` is the answer to send."""

    status = "BAD"
    code: str | None = None

    def __init__(self, message: str, tag: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag

    @property
    def response(self) -> bytes:
        """``<tag> <status> [<code>] <message>`` and CRLF; the message cut short and reduced to
        printable ASCII, so nothing the client sent can break the line."""
        text = re.sub(r"[^\x20-\x7e]", "?", self.message)[:MAX_RESPONSE_TEXT]
        code = f"[{self.code}] " if self.code else ""
        return f"{self.tag or '*'} {self.status} {code}{text}\r\n".encode("ascii")


class BadCharsetError(ParseError):
    """SEARCH with a CHARSET we cannot decode (RFC 3501 §6.4.4: tagged NO with BADCHARSET)."""

    status = "NO"
    code = f"BADCHARSET ({' '.join(SUPPORTED_CHARSETS)})"


class MailboxNameError(ParseError):
    """A mailbox name that is not valid modified UTF-7 (Dovecot answers NO, not BAD)."""

    status = "NO"


# -- commands ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    tag: str


@dataclass(frozen=True)
class Capability(Command):
    pass


@dataclass(frozen=True)
class Noop(Command):
    pass


@dataclass(frozen=True)
class Logout(Command):
    pass


@dataclass(frozen=True)
class StartTls(Command):
    pass


@dataclass(frozen=True)
class Authenticate(Command):
    mechanism: str
    """Upper case, e.g. ``PLAIN``."""
    initial_response: bytes | None = None
    """SASL-IR (RFC 4959), base64-decoded; ``b""`` for ``=``, None when absent."""


@dataclass(frozen=True)
class Login(Command):
    username: str
    password: str


@dataclass(frozen=True)
class Select(Command):
    mailbox: str


@dataclass(frozen=True)
class Examine(Command):
    mailbox: str


@dataclass(frozen=True)
class Create(Command):
    mailbox: str


@dataclass(frozen=True)
class Delete(Command):
    mailbox: str


@dataclass(frozen=True)
class Rename(Command):
    source: str
    destination: str


@dataclass(frozen=True)
class Subscribe(Command):
    mailbox: str


@dataclass(frozen=True)
class Unsubscribe(Command):
    mailbox: str


@dataclass(frozen=True)
class List(Command):
    """LIST, extended (RFC 5258) when ``selection`` or ``return_options`` are given or several
    patterns. Options are upper case; ``status_items`` are those of ``RETURN (STATUS (...))``."""

    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    status_items: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lsub(Command):
    reference: str
    pattern: str


@dataclass(frozen=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]
    """Upper case, in request order: MESSAGES, RECENT, UIDNEXT, UIDVALIDITY, UNSEEN."""


@dataclass(frozen=True)
class Append(Command):
    mailbox: str
    flags: tuple[str, ...]
    internal_date: datetime | None
    message: Literal
    """The message: bytes, or a :class:`~mailtoaster.imap.reader.SpooledLiteral` for a large one."""


@dataclass(frozen=True)
class Check(Command):
    pass


@dataclass(frozen=True)
class Close(Command):
    pass


@dataclass(frozen=True)
class Expunge(Command):
    pass


@dataclass(frozen=True)
class UidExpunge(Command):
    uids: SequenceSet


@dataclass(frozen=True)
class Search(Command):
    uid: bool
    charset: str | None
    criteria: SearchKey


FETCH_ATTRIBUTES = frozenset(
    {
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
    }
)
FETCH_MACROS = {
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


@dataclass(frozen=True)
class Fetch(Command):
    """FETCH or UID FETCH (which answers with UID whether asked or not: the session adds it)."""

    uid: bool
    sequence_set: SequenceSet
    items: tuple[FetchAttribute, ...]


class StoreMode(enum.Enum):
    REPLACE = "FLAGS"
    ADD = "+FLAGS"
    REMOVE = "-FLAGS"


@dataclass(frozen=True)
class Store(Command):
    uid: bool
    sequence_set: SequenceSet
    mode: StoreMode
    silent: bool
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Copy(Command):
    uid: bool
    sequence_set: SequenceSet
    mailbox: str


@dataclass(frozen=True)
class Move(Command):
    uid: bool
    sequence_set: SequenceSet
    mailbox: str


@dataclass(frozen=True)
class Idle(Command):
    pass


@dataclass(frozen=True)
class Namespace(Command):
    pass


@dataclass(frozen=True)
class Unselect(Command):
    pass


@dataclass(frozen=True)
class Enable(Command):
    capabilities: tuple[str, ...]
    """Upper case."""


@dataclass(frozen=True)
class Id(Command):
    parameters: tuple[tuple[str, str | None], ...] | None
    """The client's field/value pairs (None for ``ID NIL``)."""


SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")
LIST_SELECTION_OPTIONS = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
LIST_RETURN_OPTIONS = ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS")
MAX_ID_PAIRS = 30
"""RFC 2971 §3.3: a client sends at most 30 field-value pairs."""


def is_idle_done(line: bytes) -> bool:
    """Whether a line read during IDLE (without its CRLF) is the ``DONE`` that ends it."""
    return line.upper() == b"DONE"


# -- the grammar's pieces ----------------------------------------------------------------------------

_ATOM = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]+")
_ASTRING_ATOM = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e]+")
_LIST_ATOM = re.compile(rb"[\x21\x23-\x27\x2a-\x5b\x5d-\x7a\x7c-\x7e]+")
"""``list-char``: ATOM-CHAR, the wildcards ``%`` and ``*``, and ``]``."""
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_QUOTED_ESCAPE = re.compile(rb'\\(["\\])')
_LITERAL_HERE = re.compile(rb"\{[0-9]+\+?\}")
_NUMBER = re.compile(rb"[0-9]+")
_SEQUENCE_SET = re.compile(rb"[0-9:,*$]+")
_SEARCH_WORD = re.compile(rb'[^\x00-\x20\x7f()"{]+')
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_PART = re.compile(rb"[0-9]+(?:\.[0-9]+)*")
_SECTION_TEXT = re.compile(rb"[A-Za-z.]+")
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_STORE_ITEM = re.compile(rb"([+-]?)FLAGS(\.SILENT)?", re.IGNORECASE)
_DATE_TIME = re.compile(
    rb"( ?[0-9]|[0-9]{2})-([A-Za-z]{3})-([0-9]{4}) "  # date
    rb"([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"  # time and zone
)
_NIL = re.compile(rb"NIL(?=[ )]|\Z)", re.IGNORECASE)
_CHARSET = re.compile(rb"CHARSET ", re.IGNORECASE)
_UP_TO_SPACE = re.compile(rb"[^ ]+")
"""A run up to the next space (checked afterwards against what is allowed there)."""
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_NUMBER_DIGITS = len(str(MAX_NUMBER))
_Item = TypeVar("_Item")


class _Cursor:
    """A position in a command: which line, where in it. Literals sit between lines, so reading a
    literal moves to the start of the next line."""

    def __init__(self, raw: RawCommand) -> None:
        self._lines = raw.lines
        self._literals = raw.literals
        self._index = 0
        self.position = 0
        self.tag: str | None = None

    @property
    def _line(self) -> bytes:
        return self._lines[self._index]

    def error(self, message: str) -> ParseError:
        return ParseError(message, self.tag)

    def peek(self) -> bytes:
        """The next character (empty at the end of a line)."""
        return self._line[self.position : self.position + 1]

    def at_end(self) -> bool:
        return self._index == len(self._lines) - 1 and self.position >= len(self._line)

    def take(self, char: bytes) -> bool:
        if self.peek() == char:
            self.position += 1
            return True
        return False

    def expect(self, char: bytes, wanted: str) -> None:
        if not self.take(char):
            raise self.error(f"Expected {wanted}{self.found()}")

    def space(self, wanted: str) -> None:
        """The single space before the next argument, ``wanted`` saying what that argument is."""
        if self.at_end():
            raise self.error(f"Missing {wanted}")
        if not self.take(b" "):
            raise self.error(f"Expected a space before {wanted}{self.found()}")
        if self.peek() == b" ":
            raise self.error(f"Extra space before {wanted}")

    def match(self, pattern: re.Pattern[bytes]) -> bytes | None:
        found = pattern.match(self._line, self.position)
        if found is None:
            return None
        self.position = found.end()
        return found.group(0)

    def word(self, pattern: re.Pattern[bytes], wanted: str) -> bytes:
        found = self.match(pattern)
        if found is None:
            raise self.error(f"Expected {wanted}{self.found()}")
        return found

    def atom(self, wanted: str) -> str:
        return self.word(_ATOM, wanted).decode("ascii")

    def literal_here(self) -> bool:
        return (
            self._index < len(self._literals)
            and _LITERAL_HERE.fullmatch(self._line, self.position) is not None
        )

    def literal(self) -> Literal:
        literal = self._literals[self._index]
        self._index += 1
        self.position = 0
        return literal

    def string(self, wanted: str) -> bytes:
        """A quoted string or a literal (which must be held in memory)."""
        if self.peek() == b'"':
            return self._quoted(wanted)
        if self.literal_here():
            literal = self.literal()
            if isinstance(literal, SpooledLiteral):
                raise self.error(f"Literal too large for {wanted}")
            return literal
        raise self.error(f"Expected {wanted} as a string{self.found()}")

    def _quoted(self, wanted: str) -> bytes:
        found = _QUOTED.match(self._line, self.position)
        if found is None:
            raise self.error(f"Invalid quoted string for {wanted}")
        self.position = found.end()
        return _QUOTED_ESCAPE.sub(rb"\1", found.group(1))

    def astring(self, wanted: str, atom: re.Pattern[bytes] = _ASTRING_ATOM) -> bytes:
        if self.peek() == b'"' or self.literal_here():
            return self.string(wanted)
        return self.word(atom, wanted)

    def nstring(self, wanted: str) -> bytes | None:
        if self.peek() == b'"' or self.literal_here():
            return self.string(wanted)
        if self.match(_NIL) is not None:
            return None
        raise self.error(f"Expected {wanted} as a string or NIL{self.found()}")

    def number(self, wanted: str, nonzero: bool = False) -> int:
        digits = self.word(_NUMBER, wanted)
        value = int(digits) if len(digits) <= _NUMBER_DIGITS else MAX_NUMBER + 1
        if value > MAX_NUMBER or (nonzero and value == 0):
            raise self.error(f"Invalid {wanted} {digits[:20].decode('ascii')}")
        return value

    def list_items(self, wanted: str, item: Callable[[], _Item]) -> list[_Item]:
        """``"(" [item *(SP item)] ")"``, each item read by ``item``."""
        self.expect(b"(", f"'(' to open the {wanted} list")
        items: list[_Item] = []
        while not self.take(b")"):
            if not self.peek():
                raise self.error(f"Missing ')' to close the {wanted} list")
            if items:
                self.space(f"the next {wanted}")
            items.append(item())
        return items

    def end(self) -> None:
        if not self.at_end():
            raise self.error(f"Unexpected characters at the end of the command{self.found()}")

    def found(self) -> str:
        """What the cursor is at, for error messages."""
        rest = self._line[self.position : self.position + 20]
        if not rest:
            return " (found the end of the line)"
        return f" (found {rest.decode('ascii', 'replace')!r})"


_Handler = Callable[[_Cursor, str], Command]
_UidHandler = Callable[[_Cursor, str, bool], Command]


# -- arguments -----------------------------------------------------------------------------------


def _utf8(cursor: _Cursor, data: bytes, wanted: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise cursor.error(f"The {wanted} is not valid UTF-8") from None


def _mailbox(cursor: _Cursor, wanted: str = "a mailbox name") -> str:
    return _decode_mailbox(cursor, cursor.astring(wanted))


def _decode_mailbox(cursor: _Cursor, raw: bytes) -> str:
    """A mailbox name as text: INBOX in any case is INBOX, anything else modified UTF-7."""
    if raw.upper() == b"INBOX":
        return "INBOX"
    try:
        return decode_mutf7(raw.decode("ascii"))
    except (UnicodeDecodeError, FolderNameError):
        raise MailboxNameError("Mailbox name is not valid mUTF-7", cursor.tag) from None


def _list_pattern(cursor: _Cursor) -> str:
    raw = cursor.astring("a mailbox pattern", _LIST_ATOM)
    try:
        return decode_mutf7(raw.decode("ascii"))
    except (UnicodeDecodeError, FolderNameError):
        raise MailboxNameError("Mailbox pattern is not valid mUTF-7", cursor.tag) from None


def _sequence_set(cursor: _Cursor) -> SequenceSet:
    text = cursor.word(_SEQUENCE_SET, "a sequence set")
    try:
        return SequenceSet.parse(text.decode("ascii"))
    except SequenceSetError as error:
        raise cursor.error(str(error)[:100]) from None


def _flag(cursor: _Cursor) -> str:
    """A flag for STORE or APPEND: a system flag (spelled canonically) or a keyword."""
    if cursor.take(b"\\"):
        name = cursor.atom("a flag name")
        for flag in SYSTEM_FLAGS:
            if flag[1:].upper() == name.upper():
                return flag
        raise cursor.error(f"Invalid system flag \\{name.upper()[:40]}")
    return cursor.atom("a flag")


def _flag_list(cursor: _Cursor) -> tuple[str, ...]:
    return tuple(cursor.list_items("flag", lambda: _flag(cursor)))


def _parenthesised_atoms(cursor: _Cursor, wanted: str, allow_empty: bool) -> list[str]:
    names = cursor.list_items(wanted, lambda: cursor.atom(wanted).upper())
    if not names and not allow_empty:
        raise cursor.error(f"Empty {wanted} list")
    return names


def _known(cursor: _Cursor, names: list[str], known: tuple[str, ...], wanted: str) -> tuple[str, ...]:
    for name in names:
        if name not in known:
            raise cursor.error(f"Unknown {wanted} {name[:40]}")
    return tuple(names)


def _date_time(cursor: _Cursor) -> datetime:
    """RFC 3501 ``date-time``: ``"dd-Mon-yyyy hh:mm:ss +zzzz"``."""
    text = cursor.string("the date-time")
    found = _DATE_TIME.fullmatch(text)
    if found is None or found.group(2).upper().decode("ascii") not in _MONTHS:
        raise cursor.error(f"Invalid date-time {text[:40].decode('ascii', 'replace')!r}")
    day, month, year, hour, minute, second, sign, zone_hours, zone_minutes = found.groups()
    offset = timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
    try:
        zone = timezone(-offset if sign == b"-" else offset)
        return datetime(
            int(year),
            _MONTHS.index(month.upper().decode("ascii")) + 1,
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=zone,
        )
    except ValueError:
        raise cursor.error(f"Invalid date-time {text.decode('ascii')!r}") from None


# -- commands without arguments and the simple ones ---------------------------------------------------


def _no_arguments(kind: type[Command]) -> _Handler:
    def parse(cursor: _Cursor, tag: str) -> Command:
        return kind(tag)

    return parse


def _one_mailbox(kind: type[Select | Examine | Create | Delete | Subscribe | Unsubscribe]) -> _Handler:
    def parse(cursor: _Cursor, tag: str) -> Command:
        cursor.space("a mailbox name")
        return kind(tag, _mailbox(cursor))

    return parse


def _authenticate(cursor: _Cursor, tag: str) -> Authenticate:
    cursor.space("an authentication mechanism")
    mechanism = cursor.atom("an authentication mechanism").upper()
    if cursor.at_end():
        return Authenticate(tag, mechanism)
    cursor.space("an initial response")
    if cursor.take(b"="):
        return Authenticate(tag, mechanism, b"")
    encoded = cursor.word(_UP_TO_SPACE, "an initial response")
    if not _BASE64.fullmatch(encoded):
        raise cursor.error("Initial response is not valid base64")
    try:
        return Authenticate(tag, mechanism, base64.b64decode(encoded, validate=True))
    except binascii.Error:
        raise cursor.error("Initial response is not valid base64") from None


def _login(cursor: _Cursor, tag: str) -> Login:
    cursor.space("a user name")
    username = _utf8(cursor, cursor.astring("a user name"), "user name")
    cursor.space("a password")
    password = _utf8(cursor, cursor.astring("a password"), "password")
    return Login(tag, username, password)


def _rename(cursor: _Cursor, tag: str) -> Rename:
    cursor.space("the mailbox to rename")
    source = _mailbox(cursor, "the mailbox to rename")
    cursor.space("the new mailbox name")
    return Rename(tag, source, _mailbox(cursor, "the new mailbox name"))


def _list(cursor: _Cursor, tag: str) -> List:
    cursor.space("a reference name")
    selection: tuple[str, ...] = ()
    if cursor.peek() == b"(":
        names = _parenthesised_atoms(cursor, "selection option", allow_empty=True)
        selection = _known(cursor, names, LIST_SELECTION_OPTIONS, "LIST selection option")
        if selection == ("RECURSIVEMATCH",):
            raise cursor.error("RECURSIVEMATCH needs another selection option")
        cursor.space("a reference name")
    reference = _decode_mailbox(cursor, cursor.astring("a reference name"))
    cursor.space("a mailbox pattern")
    patterns = _list_patterns(cursor)
    if cursor.at_end():
        return List(tag, reference, patterns, selection)
    cursor.space("RETURN")
    if cursor.atom("RETURN").upper() != "RETURN":
        raise cursor.error("Expected RETURN after the mailbox patterns")
    cursor.space("the return options")
    return_options, status_items = _list_return_options(cursor)
    return List(tag, reference, patterns, selection, return_options, status_items)


def _list_patterns(cursor: _Cursor) -> tuple[str, ...]:
    if cursor.peek() != b"(":
        return (_list_pattern(cursor),)
    patterns = cursor.list_items("mailbox pattern", lambda: _list_pattern(cursor))
    if not patterns:
        raise cursor.error("Empty mailbox pattern list")
    return tuple(patterns)


def _list_return_options(cursor: _Cursor) -> tuple[tuple[str, ...], tuple[str, ...]]:
    status_items: list[tuple[str, ...]] = []

    def option() -> str:
        name = cursor.atom("a return option").upper()
        if name not in LIST_RETURN_OPTIONS:
            raise cursor.error(f"Unknown LIST return option {name[:40]}")
        if name == "STATUS":
            cursor.space("the status items")
            status_items.append(_status_items(cursor))
        return name

    options = cursor.list_items("return option", option)
    return tuple(options), status_items[-1] if status_items else ()


def _lsub(cursor: _Cursor, tag: str) -> Lsub:
    cursor.space("a reference name")
    reference = _decode_mailbox(cursor, cursor.astring("a reference name"))
    cursor.space("a mailbox pattern")
    return Lsub(tag, reference, _list_pattern(cursor))


def _status_items(cursor: _Cursor) -> tuple[str, ...]:
    names = _parenthesised_atoms(cursor, "status item", allow_empty=False)
    return _known(cursor, names, STATUS_ITEMS, "status item")


def _status(cursor: _Cursor, tag: str) -> Status:
    cursor.space("a mailbox name")
    mailbox = _mailbox(cursor)
    cursor.space("the status items")
    return Status(tag, mailbox, _status_items(cursor))


def _append(cursor: _Cursor, tag: str) -> Append:
    cursor.space("a mailbox name")
    mailbox = _mailbox(cursor)
    cursor.space("the message")
    flags: tuple[str, ...] = ()
    if cursor.peek() == b"(":
        flags = _flag_list(cursor)
        cursor.space("the message")
    internal_date = None
    if cursor.peek() == b'"':
        internal_date = _date_time(cursor)
        cursor.space("the message")
    if not cursor.literal_here():
        raise cursor.error("Expected the message as a literal")
    return Append(tag, mailbox, flags, internal_date, cursor.literal())


def _enable(cursor: _Cursor, tag: str) -> Enable:
    capabilities: list[str] = []
    while not cursor.at_end() or not capabilities:
        cursor.space("a capability to enable")
        capabilities.append(cursor.atom("a capability").upper())
    return Enable(tag, tuple(capabilities))


def _id(cursor: _Cursor, tag: str) -> Id:
    cursor.space("the ID parameters")
    if cursor.match(_NIL) is not None:
        return Id(tag, None)
    if cursor.peek() != b"(":
        raise cursor.error(f"Expected '(' or NIL{cursor.found()}")

    def pair() -> tuple[str, str | None]:
        name = cursor.string("an ID field name").decode("utf-8", "replace")
        cursor.space("an ID value")
        value = cursor.nstring("an ID value")
        return name, None if value is None else value.decode("utf-8", "replace")

    pairs = _id_pairs(cursor, pair)
    if len(pairs) > MAX_ID_PAIRS:
        raise cursor.error(f"More than {MAX_ID_PAIRS} ID field-value pairs")
    return Id(tag, tuple(pairs))


def _id_pairs(cursor: _Cursor, pair: Callable[[], tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """The ID list, also with a space just inside its parentheses: aioimaplib writes
    ``( "name" "value" )``, and Dovecot takes it."""
    cursor.expect(b"(", "'(' to open the ID field list")
    cursor.take(b" ")
    pairs: list[tuple[str, str | None]] = []
    while not cursor.take(b")"):
        if not cursor.peek():
            raise cursor.error("Missing ')' to close the ID field list")
        if pairs:
            cursor.space("the next ID field")
            if cursor.take(b")"):
                break
        pairs.append(pair())
    return pairs


# -- the message commands ----------------------------------------------------------------------------


def _search(cursor: _Cursor, tag: str, uid: bool) -> Search:
    cursor.space("the search criteria")
    charset = None
    if cursor.match(_CHARSET) is not None:
        name = cursor.astring("a charset name")
        charset = name.decode("ascii", "replace")
        cursor.space("the search criteria")
    tokens = _search_tokens(cursor)
    try:
        criteria = parse_criteria(tokens, charset)
    except UnknownCharsetError:
        raise BadCharsetError(f"Unknown charset {charset!r}"[:80], tag) from None
    except SearchSyntaxError as error:
        raise cursor.error(str(error)) from None
    return Search(tag, uid, charset, criteria)


def _search_tokens(cursor: _Cursor) -> list[Token]:
    """The rest of the command cut into SEARCH tokens: words, strings, parentheses; one space between
    neighbours, none just inside parentheses."""
    tokens: list[Token] = []
    while not cursor.at_end():
        if cursor.take(b")"):
            tokens.append(Token(TokenKind.CLOSE))
            continue
        if tokens and tokens[-1].kind is not TokenKind.OPEN:
            cursor.space("the next search key")
        if cursor.take(b"("):
            tokens.append(Token(TokenKind.OPEN))
        elif cursor.peek() == b'"' or cursor.literal_here():
            tokens.append(Token(TokenKind.STRING, cursor.string("a search string")))
        else:
            tokens.append(Token(TokenKind.WORD, cursor.word(_SEARCH_WORD, "a search key")))
    return tokens


def _fetch(cursor: _Cursor, tag: str, uid: bool) -> Fetch:
    cursor.space("a sequence set")
    sequence_set = _sequence_set(cursor)
    cursor.space("the items to fetch")
    if cursor.peek() != b"(":
        name = cursor.word(_FETCH_NAME, "a FETCH item").upper().decode("ascii")
        if name in FETCH_MACROS:
            return Fetch(tag, uid, sequence_set, FETCH_MACROS[name])
        return Fetch(tag, uid, sequence_set, (_fetch_attribute(cursor, name),))

    def item() -> FetchAttribute:
        return _fetch_attribute(cursor, cursor.word(_FETCH_NAME, "a FETCH item").upper().decode("ascii"))

    items = cursor.list_items("FETCH item", item)
    if not items:
        raise cursor.error("Empty list of FETCH items")
    return Fetch(tag, uid, sequence_set, tuple(items))


def _fetch_attribute(cursor: _Cursor, name: str) -> FetchAttribute:
    if name in ("BODY", "BODY.PEEK") and cursor.peek() == b"[":
        section = _section(cursor)
        return BodySection(section, _partial(cursor), peek=name == "BODY.PEEK")
    if name not in FETCH_ATTRIBUTES:
        raise cursor.error(f"Unknown FETCH item {name[:40]}")
    return name


def _section(cursor: _Cursor) -> Section:
    cursor.expect(b"[", "'['")
    if cursor.take(b"]"):
        return Section()
    part: tuple[int, ...] = ()
    numbers = cursor.match(_SECTION_PART)
    if numbers is not None:
        part = tuple(_part_number(cursor, number) for number in numbers.split(b"."))
        if cursor.take(b"]"):
            return Section(part)
        cursor.expect(b".", "'.' or ']' after the part number")
    kind = cursor.word(_SECTION_TEXT, "a section name").upper().decode("ascii")
    fields: tuple[str, ...] = ()
    if kind in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        cursor.space("the header field names")
        fields = _header_fields(cursor)
    elif kind not in ("HEADER", "TEXT", "MIME") or (kind == "MIME" and not part):
        raise cursor.error(f"Invalid BODY[..] section {kind[:40]}")
    cursor.expect(b"]", "']' to close the section")
    return Section(part, kind, fields)


def _part_number(cursor: _Cursor, digits: bytes) -> int:
    if len(digits) > _NUMBER_DIGITS or not 1 <= int(digits) <= MAX_NUMBER:
        raise cursor.error(f"Invalid part number {digits[:20].decode('ascii')}")
    return int(digits)


def _header_fields(cursor: _Cursor) -> tuple[str, ...]:
    def field_name() -> str:
        name = cursor.astring("a header field name")
        if not name or not name.isascii():
            raise cursor.error("Invalid header field name")
        return name.decode("ascii").upper()

    fields = cursor.list_items("header field", field_name)
    if not fields:
        raise cursor.error("Empty header field list")
    return tuple(fields)


def _partial(cursor: _Cursor) -> tuple[int, int] | None:
    if not cursor.take(b"<"):
        return None
    origin = cursor.number("partial origin")
    cursor.expect(b".", "'.' in the partial range")
    count = cursor.number("partial octet count", nonzero=True)
    cursor.expect(b">", "'>' to close the partial range")
    return origin, count


def _store(cursor: _Cursor, tag: str, uid: bool) -> Store:
    cursor.space("a sequence set")
    sequence_set = _sequence_set(cursor)
    cursor.space("FLAGS, +FLAGS or -FLAGS")
    item = _STORE_ITEM.fullmatch(cursor.word(_UP_TO_SPACE, "FLAGS, +FLAGS or -FLAGS"))
    if item is None:
        raise cursor.error("Expected FLAGS, +FLAGS or -FLAGS (optionally .SILENT)")
    mode = {b"": StoreMode.REPLACE, b"+": StoreMode.ADD, b"-": StoreMode.REMOVE}[item.group(1)]
    cursor.space("the flags")
    if cursor.peek() == b"(":
        flags = _flag_list(cursor)
    else:
        flags_found = [_flag(cursor)]
        while not cursor.at_end():
            cursor.space("the next flag")
            flags_found.append(_flag(cursor))
        flags = tuple(flags_found)
    return Store(tag, uid, sequence_set, mode, item.group(2) is not None, flags)


def _copy_or_move(kind: type[Copy | Move]) -> _UidHandler:
    def parse(cursor: _Cursor, tag: str, uid: bool) -> Command:
        cursor.space("a sequence set")
        sequence_set = _sequence_set(cursor)
        cursor.space("the destination mailbox")
        return kind(tag, uid, sequence_set, _mailbox(cursor, "the destination mailbox"))

    return parse


def _uid_expunge(cursor: _Cursor, tag: str, uid: bool) -> Command:
    cursor.space("a UID set")
    return UidExpunge(tag, _sequence_set(cursor))


# -- dispatch ----------------------------------------------------------------------------------------


def _without_uid(handler: _UidHandler) -> _Handler:
    def parse(cursor: _Cursor, tag: str) -> Command:
        return handler(cursor, tag, False)

    return parse


_UID_COMMANDS: dict[str, _UidHandler] = {
    "COPY": _copy_or_move(Copy),
    "MOVE": _copy_or_move(Move),
    "FETCH": _fetch,
    "STORE": _store,
    "SEARCH": _search,
    "EXPUNGE": _uid_expunge,
}
_COMMANDS: dict[str, _Handler] = {
    "CAPABILITY": _no_arguments(Capability),
    "NOOP": _no_arguments(Noop),
    "LOGOUT": _no_arguments(Logout),
    "STARTTLS": _no_arguments(StartTls),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "SELECT": _one_mailbox(Select),
    "EXAMINE": _one_mailbox(Examine),
    "CREATE": _one_mailbox(Create),
    "DELETE": _one_mailbox(Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(Subscribe),
    "UNSUBSCRIBE": _one_mailbox(Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "CHECK": _no_arguments(Check),
    "CLOSE": _no_arguments(Close),
    "EXPUNGE": _no_arguments(Expunge),
    "IDLE": _no_arguments(Idle),
    "NAMESPACE": _no_arguments(Namespace),
    "UNSELECT": _no_arguments(Unselect),
    "ENABLE": _enable,
    "ID": _id,
    "COPY": _without_uid(_copy_or_move(Copy)),
    "MOVE": _without_uid(_copy_or_move(Move)),
    "FETCH": _without_uid(_fetch),
    "STORE": _without_uid(_store),
    "SEARCH": _without_uid(_search),
}


def parse_command(raw: RawCommand) -> Command:
    """The command ``raw`` holds; raises :class:`ParseError` when it is not a valid one. Either way the
    caller still owns ``raw`` and closes it (:meth:`RawCommand.close`) once the command is done."""
    if raw.lines == (b"",):
        raise ParseError("Empty command line")
    cursor = _Cursor(raw)
    tag = cursor.match(TAG)
    if tag is None or (not cursor.at_end() and cursor.peek() != b" "):
        raise ParseError("Invalid tag")
    cursor.tag = tag.decode("ascii")
    cursor.space("a command name")
    name = cursor.atom("a command name").upper()
    if name == "UID":
        cursor.space("a command after UID")
        name = cursor.atom("a command after UID").upper()
        uid_handler = _UID_COMMANDS.get(name)
        if uid_handler is None:
            raise cursor.error(f"Unknown command UID {name[:40]}")
        command = uid_handler(cursor, cursor.tag, True)
    else:
        handler = _COMMANDS.get(name)
        if handler is None:
            raise cursor.error(f"Unknown command {name[:40]}")
        command = handler(cursor, cursor.tag)
    cursor.end()
    return command
