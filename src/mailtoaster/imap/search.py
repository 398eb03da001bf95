"""SEARCH (RFC 3501 §6.4.4): the criteria as an AST, and their evaluation against messages.

:func:`parse_criteria` turns the tokens of a SEARCH command (cut by :mod:`.parser`) into a
:data:`SearchKey` tree; :class:`SearchProgram` evaluates one against :class:`MessageView` objects. What
matches follows Dovecot 2.3 without full-text indexes, since clients (and our tests) compare:

* Strings match as substrings under the ``i;unicode-casemap`` comparator (RFC 5051): both sides are
  title-cased and decomposed (NFKD), so ``cafe`` finds ``CAFÉ`` and ``é`` is found as ``e`` + accent.
* Header criteria look at every instance of the field, unfolded, with RFC 2047 encoded words decoded.
  FROM, TO, CC and BCC match the address list rewritten as Dovecot writes it (``"Display Name"
  <box@domain>``, comments dropped, an address-spec's comment as the name, ``MISSING_DOMAIN`` and the
  like for what does not parse); SUBJECT has runs of white space squeezed
  to one space; HEADER matches the value as it is. An empty string matches any message that has the
  field.
* BODY matches the decoded text (Content-Transfer-Encoding undone, charset converted; an unknown
  charset is read as UTF-8) of every part whose type is ``text/*`` or ``message/*`` or not given; HTML
  is searched as it is, tags included. A part with an unknown transfer encoding is not searched. TEXT
  also matches every header block, the MIME parts' included, rendered ``Name: decoded value`` per line.
* Date criteria compare calendar dates only: BEFORE, ON and SINCE the internal date's own date (give it
  in the server's time zone, as Dovecot uses local time), SENT* the date written in the Date: header, in
  its own time zone. A missing or unreadable Date: header counts as 1 January 1970, as in Dovecot.
* LARGER and SMALLER compare RFC822.SIZE; UID and message-set criteria resolve ``*`` against the
  mailbox (:class:`~mailtoaster.imap.sequence.SequenceSet`).

Nothing a message contains makes evaluation fail: undecodable octets become U+FFFD, broken MIME is
read as far as it goes. Only what a criterion needs is read: flag, size, date and set criteria never
call :meth:`MessageView.header_bytes` or :meth:`MessageView.message_bytes`, header criteria read only
the header, and cheaper criteria run first in an AND or OR.
"""

from __future__ import annotations

import binascii
import enum
import functools
import re
import unicodedata
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol

from mailtoaster.imap.rfc822 import Address, AddressParser, Tokens, is_atext
from mailtoaster.imap.sequence import NumberSet, SequenceSet, SequenceSetError

MAX_DEPTH = 64
"""How deeply criteria may nest (parentheses, NOT, OR); deeper is refused rather than recursed into."""
MAX_MIME_DEPTH = 100
MAX_MIME_PARTS = 10000
"""Dovecot's limits on MIME nesting and part count; parts beyond them are read as plain body."""
SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")
"""What ``[BADCHARSET (...)]`` lists; any charset Python can decode is accepted as well."""

# -- the criteria ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class All:
    """ALL: every message."""


@dataclass(frozen=True)
class HasFlag:
    """The message has ``flag``: a system flag (``\\Seen``, ``\\Recent`` ...) or a keyword; compared
    without regard to case, as Dovecot does. UNSEEN and the like are ``Not(HasFlag(...))``."""

    flag: str


@dataclass(frozen=True)
class Not:
    key: SearchKey


@dataclass(frozen=True)
class And:
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True)
class Or:
    left: SearchKey
    right: SearchKey


class HeaderMatch(enum.Enum):
    """How a header field's value is prepared before the substring test (see the module docstring)."""

    PLAIN = "plain"
    ADDRESS = "address"
    SUBJECT = "subject"


@dataclass(frozen=True)
class HeaderContains:
    """FROM/TO/CC/BCC (ADDRESS), SUBJECT, or HEADER ``field`` (PLAIN) contains ``text``."""

    field: str
    text: str
    match: HeaderMatch = HeaderMatch.PLAIN


@dataclass(frozen=True)
class BodyContains:
    text: str


@dataclass(frozen=True)
class TextContains:
    text: str


class DateRelation(enum.Enum):
    BEFORE = "before"
    ON = "on"
    SINCE = "since"


@dataclass(frozen=True)
class InternalDate:
    """BEFORE, ON, SINCE: the internal date's calendar date against ``day``."""

    relation: DateRelation
    day: date


@dataclass(frozen=True)
class SentDate:
    """SENTBEFORE, SENTON, SENTSINCE: the Date: header's calendar date against ``day``."""

    relation: DateRelation
    day: date


@dataclass(frozen=True)
class Larger:
    size: int


@dataclass(frozen=True)
class Smaller:
    size: int


@dataclass(frozen=True)
class SequenceNumbers:
    """A bare sequence set: the message's sequence number is in it."""

    numbers: SequenceSet


@dataclass(frozen=True)
class Uids:
    """UID set: the message's UID is in it."""

    uids: SequenceSet


SearchKey = (
    All
    | HasFlag
    | Not
    | And
    | Or
    | HeaderContains
    | BodyContains
    | TextContains
    | InternalDate
    | SentDate
    | Larger
    | Smaller
    | SequenceNumbers
    | Uids
)

# -- parsing -----------------------------------------------------------------------------------------


class TokenKind(enum.Enum):
    WORD = "word"
    """A run of characters up to a space, parenthesis or quote: keys, atoms, numbers, sets, dates."""
    STRING = "string"
    """A quoted string or literal, its content in ``value``."""
    OPEN = "("
    CLOSE = ")"


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    value: bytes = b""


class SearchSyntaxError(ValueError):
    """The criteria break the grammar (the session answers BAD with this message)."""


class UnknownCharsetError(ValueError):
    """CHARSET names a charset we cannot decode (the session answers ``NO [BADCHARSET ...]``)."""

    def __init__(self, charset: str) -> None:
        super().__init__(f"Unknown charset {charset[:40]!r}")
        self.charset = charset


def resolve_charset(name: str) -> str:
    """The Python codec for a SEARCH CHARSET; US-ASCII is read as UTF-8, a superset (as Dovecot does).
    Raises :class:`UnknownCharsetError` for anything that is not a text encoding Python knows."""
    codec = _text_codec(name)
    if codec is None:
        raise UnknownCharsetError(name)
    return codec


@functools.lru_cache(maxsize=256)
def _text_codec(charset: str) -> str | None:
    """The Python codec that decodes ``charset`` to text (US-ASCII as UTF-8), None when there is none.
    (Decoding a real octet: Python skips the codec lookup for empty input.)"""
    name = charset.strip().lower()
    if name in ("us-ascii", "ascii"):
        return "utf-8"
    try:
        b"x".decode(name, "ignore")
    except (LookupError, ValueError):
        return None
    return name


def parse_criteria(tokens: Sequence[Token], charset: str | None = None) -> SearchKey:
    """The criteria ``tokens`` spell (several keys at the top level are ANDed); strings are decoded with
    ``charset`` (UTF-8 when None). Raises :class:`SearchSyntaxError` or :class:`UnknownCharsetError`."""
    parser = _CriteriaParser(tokens, resolve_charset(charset) if charset else "utf-8")
    keys = parser.keys_until(None, depth=0)
    if not keys:
        raise SearchSyntaxError("Missing search criteria")
    return keys[0] if len(keys) == 1 else And(tuple(keys))


_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_FLAG_KEYWORD = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]+")
_SET_CHARACTERS = re.compile(rb"[0-9:,*]+")
_MAX_NUMBER_DIGITS = 19
_MAX_SIZE = (1 << 63) - 1
_SYSTEM_FLAG_KEYS = {
    "ANSWERED": "\\Answered",
    "DELETED": "\\Deleted",
    "DRAFT": "\\Draft",
    "FLAGGED": "\\Flagged",
    "SEEN": "\\Seen",
    "RECENT": "\\Recent",
}
_UNSET_FLAG_KEYS = {f"UN{name}": flag for name, flag in _SYSTEM_FLAG_KEYS.items() if name != "RECENT"}
_ADDRESS_KEYS = {"FROM": "From", "TO": "To", "CC": "Cc", "BCC": "Bcc"}
_DATE_KEYS: dict[str, tuple[type[InternalDate] | type[SentDate], DateRelation]] = {
    "BEFORE": (InternalDate, DateRelation.BEFORE),
    "ON": (InternalDate, DateRelation.ON),
    "SINCE": (InternalDate, DateRelation.SINCE),
    "SENTBEFORE": (SentDate, DateRelation.BEFORE),
    "SENTON": (SentDate, DateRelation.ON),
    "SENTSINCE": (SentDate, DateRelation.SINCE),
}


class _CriteriaParser:
    def __init__(self, tokens: Sequence[Token], codec: str) -> None:
        self._tokens = tokens
        self._position = 0
        self._codec = codec

    def keys_until(self, closing: TokenKind | None, depth: int) -> list[SearchKey]:
        keys: list[SearchKey] = []
        while True:
            token = self._peek()
            if token is None:
                if closing is not None:
                    raise SearchSyntaxError("Missing ')' in search criteria")
                return keys
            if token.kind is TokenKind.CLOSE and closing is TokenKind.CLOSE:
                self._position += 1
                return keys
            keys.append(self.key(depth))

    def key(self, depth: int) -> SearchKey:
        if depth >= MAX_DEPTH:
            raise SearchSyntaxError("Search criteria nested too deeply")
        token = self._next("a search key")
        if token.kind is TokenKind.OPEN:
            keys = self.keys_until(TokenKind.CLOSE, depth + 1)
            if not keys:
                raise SearchSyntaxError("Empty parenthesised search criteria")
            return keys[0] if len(keys) == 1 else And(tuple(keys))
        if token.kind is not TokenKind.WORD:
            raise SearchSyntaxError(f"Expected a search key, got {_describe(token)}")
        return self._keyword(token.value, depth)

    def _keyword(self, word: bytes, depth: int) -> SearchKey:
        name = word.decode("ascii", "replace").upper()
        simple = self._simple_key(name)
        if simple is not None:
            return simple
        if name in _SYSTEM_FLAG_KEYS:
            return HasFlag(_SYSTEM_FLAG_KEYS[name])
        if name in _UNSET_FLAG_KEYS:
            return Not(HasFlag(_UNSET_FLAG_KEYS[name]))
        if name in _ADDRESS_KEYS:
            return HeaderContains(_ADDRESS_KEYS[name], self._astring(), HeaderMatch.ADDRESS)
        if name in _DATE_KEYS:
            kind, relation = _DATE_KEYS[name]
            return kind(relation, self._date())
        return self._keyword_with_arguments(name, word, depth)

    def _simple_key(self, name: str) -> SearchKey | None:
        if name == "ALL":
            return All()
        if name == "NEW":
            return And((HasFlag("\\Recent"), Not(HasFlag("\\Seen"))))
        if name == "OLD":
            return Not(HasFlag("\\Recent"))
        return None

    def _keyword_with_arguments(self, name: str, word: bytes, depth: int) -> SearchKey:
        if name in ("KEYWORD", "UNKEYWORD"):
            flag = HasFlag(self._flag_keyword())
            return flag if name == "KEYWORD" else Not(flag)
        if name == "SUBJECT":
            return HeaderContains("Subject", self._astring(), HeaderMatch.SUBJECT)
        if name == "HEADER":
            field_name = self._astring()
            return HeaderContains(field_name, self._astring(), HeaderMatch.PLAIN)
        if name in ("BODY", "TEXT"):
            text = self._astring()
            return BodyContains(text) if name == "BODY" else TextContains(text)
        if name in ("LARGER", "SMALLER"):
            size = self._number()
            return Larger(size) if name == "LARGER" else Smaller(size)
        if name == "NOT":
            return Not(self.key(depth + 1))
        if name == "OR":
            return Or(self.key(depth + 1), self.key(depth + 1))
        if name == "UID":
            return Uids(self._sequence_set(self._word("a UID set")))
        if _SET_CHARACTERS.fullmatch(word):
            return SequenceNumbers(self._sequence_set(word))
        if word == b"$":
            raise SearchSyntaxError("Search result variable $ is not supported")
        raise SearchSyntaxError(f"Unknown search key {name[:40]!r}")

    def _peek(self) -> Token | None:
        return self._tokens[self._position] if self._position < len(self._tokens) else None

    def _next(self, wanted: str) -> Token:
        token = self._peek()
        if token is None:
            raise SearchSyntaxError(f"Missing {wanted} in search criteria")
        self._position += 1
        return token

    def _word(self, wanted: str) -> bytes:
        token = self._next(wanted)
        if token.kind is not TokenKind.WORD:
            raise SearchSyntaxError(f"Expected {wanted}, got {_describe(token)}")
        return token.value

    def _astring(self) -> str:
        token = self._next("a string argument")
        if token.kind not in (TokenKind.WORD, TokenKind.STRING):
            raise SearchSyntaxError(f"Expected a string, got {_describe(token)}")
        try:
            return token.value.decode(self._codec)
        except UnicodeDecodeError:
            raise SearchSyntaxError(f"Search string is not valid {self._codec}") from None

    def _flag_keyword(self) -> str:
        word = self._word("a keyword")
        if not _FLAG_KEYWORD.fullmatch(word):
            raise SearchSyntaxError(f"Invalid keyword {_shorten(word)}")
        return word.decode("ascii")

    def _number(self) -> int:
        word = self._word("a number")
        if not word.isdigit() or len(word) > _MAX_NUMBER_DIGITS or int(word) > _MAX_SIZE:
            raise SearchSyntaxError(f"Invalid number {_shorten(word)}")
        return int(word)

    def _date(self) -> date:
        token = self._next("a date")
        found = _DATE.fullmatch(token.value) if token.kind in (TokenKind.WORD, TokenKind.STRING) else None
        month = found.group(2).decode("ascii").lower() if found else ""
        if found is None or month not in _MONTHS:
            raise SearchSyntaxError(f"Invalid search date {_describe(token)}")
        try:
            return date(int(found.group(3)), _MONTHS.index(month) + 1, int(found.group(1)))
        except ValueError:
            raise SearchSyntaxError(f"Invalid search date {_describe(token)}") from None

    @staticmethod
    def _sequence_set(word: bytes) -> SequenceSet:
        try:
            return SequenceSet.parse(word.decode("ascii"))
        except (SequenceSetError, UnicodeDecodeError) as error:
            raise SearchSyntaxError(
                str(error) if isinstance(error, SequenceSetError) else "Bad set"
            ) from None


def _describe(token: Token) -> str:
    if token.kind in (TokenKind.OPEN, TokenKind.CLOSE):
        return f"'{token.kind.value}'"
    return _shorten(token.value)


def _shorten(value: bytes) -> str:
    text = value[:40].decode("ascii", "replace")
    return repr(text + ("..." if len(value) > 40 else ""))


# -- evaluation --------------------------------------------------------------------------------------


class MessageView(Protocol):
    """One message as a search sees it. The two methods may be expensive (they read the file); they
    are called only when a criterion needs them, at most once each per :meth:`SearchProgram.matches`."""

    @property
    def seq(self) -> int: ...

    @property
    def uid(self) -> int: ...

    @property
    def flags(self) -> AbstractSet[str]:
        """System flags as written in IMAP (``\\Seen``), ``\\Recent`` when the message is recent in
        this session, and keywords."""
        ...

    @property
    def internal_date(self) -> datetime:
        """In the server's local time zone (its date is what BEFORE/ON/SINCE compare)."""
        ...

    @property
    def size(self) -> int:
        """RFC822.SIZE: octets with CRLF line endings."""
        ...

    def header_bytes(self) -> bytes:
        """The header section (up to and including the empty line)."""
        ...

    # A view may also have ``field_values(lower_name) -> list[bytes] | None``: the unfolded values of
    # every field of that name, as a header cache keeps them (None: read them from the header).

    def message_bytes(self) -> bytes:
        """The whole message (LF or CRLF line endings alike)."""
        ...


class SearchProgram:
    """Criteria made ready to evaluate in one mailbox: ``*`` in sets resolves to ``message_count``
    (sequence numbers) and ``max_uid`` (UIDs), and siblings are ordered so cheap tests run first."""

    def __init__(self, criteria: SearchKey, *, message_count: int, max_uid: int) -> None:
        self.criteria = _cheap_first(criteria)
        self._message_count = message_count
        self._max_uid = max_uid
        self._resolved: dict[SequenceSet, tuple[NumberSet, NumberSet]] = {}

    def matches(self, message: MessageView) -> bool:
        return self._matches(self.criteria, _Message(message))

    def _matches(self, key: SearchKey, message: _Message) -> bool:
        match key:
            case All():
                return True
            case HasFlag(flag):
                return flag.lower() in message.flags()
            case Not(inner):
                return not self._matches(inner, message)
            case And(keys):
                return all(self._matches(inner, message) for inner in keys)
            case Or(left, right):
                return self._matches(left, message) or self._matches(right, message)
            case Larger(size):
                return message.view.size > size
            case Smaller(size):
                return message.view.size < size
            case SequenceNumbers(numbers):
                return message.view.seq in self._resolve(numbers)[0]
            case Uids(uids):
                return message.view.uid in self._resolve(uids)[1]
            case InternalDate(relation, day):
                return _compare_dates(message.view.internal_date.date(), relation, day)
            case SentDate(relation, day):
                return _compare_dates(message.sent_date, relation, day)
            case _:
                return _matches_text(key, message)

    def _resolve(self, numbers: SequenceSet) -> tuple[NumberSet, NumberSet]:
        """The set as sequence numbers and as UIDs, worked out once per program."""
        resolved = self._resolved.get(numbers)
        if resolved is None:
            resolved = (numbers.resolve(self._message_count), numbers.resolve(self._max_uid))
            self._resolved[numbers] = resolved
        return resolved


def _matches_text(key: SearchKey, message: _Message) -> bool:
    match key:
        case HeaderContains(field_name, text, kind):
            values = message.header_values(field_name, kind)
            if not text:
                return bool(values)
            needle = _folded_needle(text)
            return any(needle in value for value in values)
        case BodyContains(text):
            needle = _folded_needle(text)
            return any(needle in part.body for part in message.parts())
        case TextContains(text):
            needle = _folded_needle(text)
            return any(part.contains(needle) for part in message.parts())
    raise AssertionError(f"unhandled search key {key!r}")


def header_contains(key: HeaderContains, raw_values: Sequence[bytes]) -> bool:
    """Whether ``key`` matches a message whose ``key.field`` fields have ``raw_values`` (unfolded, as
    :func:`header_field_values` gives them): what :class:`SearchProgram` decides for a
    :class:`HeaderContains` alone, without a :class:`MessageView`."""
    if not key.text:
        return bool(raw_values)
    needle = _folded_needle(key.text)
    return any(needle in fold(_prepare_value(value, key.match)) for value in raw_values)


def _compare_dates(value: date, relation: DateRelation, day: date) -> bool:
    if relation is DateRelation.BEFORE:
        return value < day
    if relation is DateRelation.ON:
        return value == day
    return value >= day


def _cost(key: SearchKey) -> int:
    """0: index data only; 1: needs the header; 2: needs the whole message."""
    match key:
        case HeaderContains() | SentDate():
            return 1
        case BodyContains() | TextContains():
            return 2
        case Not(inner):
            return _cost(inner)
        case And(keys):
            return max((_cost(inner) for inner in keys), default=0)
        case Or(left, right):
            return max(_cost(left), _cost(right))
    return 0


def header_fields(key: SearchKey) -> frozenset[str]:
    """The header fields (lower case) the criteria read, for a cache to supply (see
    :meth:`_Message.raw_values`); only names :func:`is_simple_field_name` accepts."""
    match key:
        case HeaderContains(field=name):
            lower = name.lower()
            return frozenset({lower}) if is_simple_field_name(lower) else frozenset()
        case SentDate():
            return frozenset({"date"})
        case Not(inner):
            return header_fields(inner)
        case And(keys):
            return frozenset().union(*(header_fields(inner) for inner in keys))
        case Or(left, right):
            return header_fields(left) | header_fields(right)
    return frozenset()


def _cheap_first(key: SearchKey) -> SearchKey:
    match key:
        case And(keys):
            return And(tuple(sorted((_cheap_first(inner) for inner in keys), key=_cost)))
        case Or(left, right):
            ordered = sorted((_cheap_first(left), _cheap_first(right)), key=_cost)
            return Or(ordered[0], ordered[1])
        case Not(inner):
            return Not(_cheap_first(inner))
    return key


# -- case folding (i;unicode-casemap) -----------------------------------------------------------------


@functools.cache
def _titlecase_table() -> dict[int, str]:
    """Each cased character's simple title-case mapping (one character; a character whose mapping
    would expand keeps itself, as the simple mapping does)."""
    table: dict[int, str] = {}
    for code in range(0x1F000):
        char = chr(code)
        title = char.title()
        if title != char and len(title) == 1:
            table[code] = title
    return table


def fold(text: str) -> str:
    """``text`` title-cased and decomposed (RFC 5051), the form both sides of a match are compared in."""
    if text.isascii():
        return text.upper()
    return unicodedata.normalize("NFKD", text.translate(_titlecase_table()))


@functools.lru_cache(maxsize=256)
def _folded_needle(text: str) -> str:
    """A search string folded once, not once per message."""
    return fold(text)


# -- one message, parsed as far as a criterion needs ---------------------------------------------------


class _Message:
    def __init__(self, view: MessageView) -> None:
        self.view = view
        self._flags: frozenset[str] | None = None
        self._header: list[_HeaderLine] | None = None
        self._header_data: bytes | None = None
        self._field_source: Callable[[str], list[bytes] | None] | None = getattr(view, "field_values", None)
        self._values: dict[tuple[str, HeaderMatch], list[str]] = {}
        self._parts: list[_PartText] | None = None

    def flags(self) -> frozenset[str]:
        if self._flags is None:
            self._flags = frozenset(flag.lower() for flag in self.view.flags)
        return self._flags

    def header(self) -> list[_HeaderLine]:
        if self._header is None:
            self._header = _parse_header_block(self.header_data(), 0, _NO_BOUNDARIES)[0]
        return self._header

    def header_data(self) -> bytes:
        if self._header_data is None:
            self._header_data = self.view.header_bytes()
        return self._header_data

    def raw_values(self, lower_name: str) -> list[bytes]:
        """The unfolded values of every field named ``lower_name`` (lower case), in header order: from
        the view's :meth:`FieldSource.field_values` when it has them, else from the header bytes."""
        source = self._field_source
        if source is not None:
            found = source(lower_name)
            if found is not None:
                return found
        if self._header is None and is_simple_field_name(lower_name):
            return header_field_values(self.header_data(), lower_name)
        return [line.value for line in self.header() if line.lower_name == lower_name]

    def header_values(self, field_name: str, kind: HeaderMatch) -> list[str]:
        """The folded values of every ``field_name`` field, prepared for ``kind``."""
        cache_key = (field_name.lower(), kind)
        values = self._values.get(cache_key)
        if values is None:
            values = [fold(_prepare_value(value, kind)) for value in self.raw_values(cache_key[0])]
            self._values[cache_key] = values
        return values

    @functools.cached_property
    def sent_date(self) -> date:
        dates = self.raw_values("date")
        parsed = parse_date_header(dates[0]) if dates else None
        return parsed or _EPOCH

    def parts(self) -> list[_PartText]:
        if self._parts is None:
            self._parts = [_PartText.of(part) for part in _MimeParser(self.view.message_bytes()).parse()]
        return self._parts


_EPOCH = date(1970, 1, 1)
_LWSP_RUN = re.compile(rb"[ \t]+")


def _prepare_value(value: bytes, kind: HeaderMatch) -> str:
    if kind is HeaderMatch.ADDRESS:
        return decode_header_value(format_addresses(value))
    if kind is HeaderMatch.SUBJECT:
        return decode_header_value(_LWSP_RUN.sub(b" ", value).removeprefix(b" "))
    return decode_header_value(value)


@dataclass(frozen=True)
class _PartText:
    """One MIME part as TEXT and BODY see it, folded: its header block and its searchable body."""

    header: str
    body: str

    @classmethod
    def of(cls, part: _MimePart) -> _PartText:
        return cls(fold(_render_header(part.header, part.header_complete)), fold(_body_text(part)))

    def contains(self, needle: str) -> bool:
        """Whether the header block followed by the body holds ``needle`` (also across the two)."""
        if needle in self.header or needle in self.body:
            return True
        reach = len(needle) - 1
        return reach > 0 and needle in self.header[-reach:] + self.body[:reach]


def _render_header(lines: Sequence[_HeaderLine], complete: bool) -> str:
    """A header block as Dovecot's search sees it: ``name`` + separator + decoded value + CRLF per
    field, and a CRLF for the empty line that ends the block."""
    rendered = [
        line.name.decode("utf-8", "replace") + line.middle.decode("latin-1") + decode_header_value(line.value)
        for line in lines
    ]
    return "".join(text + "\r\n" for text in rendered) + ("\r\n" if complete else "")


# -- header section ----------------------------------------------------------------------------------


_SIMPLE_FIELD_NAME = re.compile(r"[!-9;-~]+")
_HEADER_END = re.compile(rb"\n\r?(?:\n|\Z)")
_FIELD_START = re.compile(rb"\n(?![ \t])")


def is_simple_field_name(lower_name: str) -> bool:
    """Whether :func:`header_field_values` can look for ``lower_name``: printable ASCII without
    colon or space, in lower case."""
    return bool(_SIMPLE_FIELD_NAME.fullmatch(lower_name)) and lower_name == lower_name.lower()


def header_field_values(data: bytes, lower_name: str) -> list[bytes]:
    """The values of every field named ``lower_name`` in the header block at the start of ``data``,
    exactly as :func:`_parse_header_block` reads them (unfolded, in order), without cutting up the
    other fields: only lines that start with the name (in any case) are looked at. ``lower_name``
    must pass :func:`is_simple_field_name`."""
    name = lower_name.encode("ascii")
    if data.startswith((b"\n", b"\r\n")) or data == b"\r":
        return []
    found_end = _HEADER_END.search(data)
    end = len(data) if found_end is None else found_end.start() + 1
    block = data[:end]
    lowered = block.lower()
    values: list[bytes] = []
    start = 0 if lowered.startswith(name) else _line_starting(lowered, name, 0)
    while 0 <= start < end:
        following = _FIELD_START.search(block, start)
        stop = end if following is None else following.start() + 1
        lines = block[start:stop].split(b"\n")
        if len(lines) > 1 and not lines[-1]:
            lines.pop()
        lines = [line.removesuffix(b"\r") for line in lines]
        unfolded = lines[0] + b"".join(b" " + line[1:] if line[:1] == b"\t" else line for line in lines[1:])
        field_line = _split_field(unfolded)
        if field_line.lower_name == lower_name:
            values.append(field_line.value)
        start = _line_starting(lowered, name, stop - 1)
    return values


def _line_starting(lowered: bytes, name: bytes, start: int) -> int:
    """Where the next line that starts with ``name`` starts, from ``start`` on (-1: none)."""
    found = lowered.find(b"\n" + name, start)
    return -1 if found < 0 else found + 1


# Not bodystructure.HeaderField: SEARCH unfolds otherwise (CRLF dropped, tab as space, one blank kept).
@dataclass(frozen=True)
class _HeaderLine:
    """One header field as Dovecot's parser cuts it: the name (white space before the colon dropped),
    the separator (colon and one following blank), and the value unfolded (CRLF before a continuation
    removed, a continuation's leading tab turned into a space)."""

    name: bytes
    middle: bytes
    value: bytes
    lower_name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lower_name", self.name.decode("latin-1").lower())


_NO_BOUNDARIES: tuple[bytes, ...] = ()


def _parse_header_block(
    data: bytes, start: int, boundaries: Sequence[bytes]
) -> tuple[list[_HeaderLine], int, bool]:
    """The fields from ``start`` to the empty line: (fields, where the body starts, whether the block
    ended with an empty line). A line that is a MIME boundary also ends it (the body is then empty)."""
    fields: list[list[bytes]] = []
    """Each field's first line and its continuation lines."""
    position = start
    complete = False
    while position < len(data):
        end = data.find(b"\n", position)
        next_position = len(data) if end < 0 else end + 1
        line = data[position : len(data) if end < 0 else end].removesuffix(b"\r")
        if not line:
            position, complete = next_position, True
            break
        if boundaries and _boundary_at(data, position, boundaries) is not None:
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(b" " + line[1:] if line[:1] == b"\t" else line)
        else:
            fields.append([line])
        position = next_position
    return [_split_field(b"".join(lines)) for lines in fields], position, complete


def _split_field(line: bytes) -> _HeaderLine:
    colon = line.find(b":")
    if colon < 0:
        return _HeaderLine(line, b"", b"")
    name = line[:colon].rstrip(b" \t")
    value = line[colon + 1 :]
    skip = 1 if value[:1] in (b" ", b"\t") else 0
    return _HeaderLine(name, line[len(name) : colon + 1 + skip], value[skip:])


# -- RFC 2047 ------------------------------------------------------------------------------------------


def decode_header_value(value: bytes) -> str:
    """A header value with RFC 2047 encoded words decoded, the rest read as UTF-8 (invalid octets become
    U+FFFD), white space between adjacent encoded words dropped: Dovecot's ``message_header_decode``."""
    if b"=?" not in value:
        return value.decode("utf-8", "replace")
    pieces: list[str] = []
    start = position = 0
    while position + 1 < len(value):
        if value[position : position + 2] != b"=?":
            position += 1
            continue
        if position != start and value[start:position].strip(b" \t\r\n"):
            pieces.append(value[start:position].decode("utf-8", "replace"))
        decoded = _decode_encoded_word(value, position + 2)
        if decoded is None:
            start = position
            position += 2
            continue
        text, position = decoded
        pieces.append(text)
        start = position
    pieces.append(value[start:].decode("utf-8", "replace"))
    return "".join(pieces)


def _decode_encoded_word(value: bytes, start: int) -> tuple[str, int] | None:
    """``charset?encoding?text?=`` at ``start``: (decoded text, position after it), or None."""
    marks: list[int] = []
    position = start
    while position < len(value) and len(marks) < 3:
        if value[position] == 0x3F:  # '?'
            marks.append(position)
        position += 1
    if len(marks) < 3 or value[marks[2] + 1 : marks[2] + 2] != b"=":
        return None
    charset = value[start : marks[0]].decode("latin-1")
    encoding = value[marks[0] + 1 : marks[0] + 2].upper()
    payload = value[marks[1] + 1 : marks[2]]
    if encoding == b"Q":
        raw = _decode_q(payload)
    elif encoding == b"B":
        raw = _decode_base64(payload)
    else:
        return None
    return _decode_charset(raw, charset), marks[2] + 2


_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]*")


def _decode_q(payload: bytes) -> bytes:
    return binascii.a2b_qp(payload, header=True)


def _decode_base64(data: bytes) -> bytes:
    """Base64 as far as it is valid: white space skipped, decoding stops at the first foreign octet."""
    cleaned = re.sub(rb"[ \t\r\n]+", b"", data)
    usable = _BASE64_RUN.match(cleaned).group(0)  # type: ignore[union-attr]  # matches the empty string
    remainder = len(usable) % 4
    usable = usable[:-1] if remainder == 1 else usable + b"=" * ((4 - remainder) % 4)
    try:
        return binascii.a2b_base64(usable)
    except binascii.Error:
        return b""


def _decode_charset(raw: bytes, charset: str) -> str:
    """``raw`` in ``charset``; a charset Python does not know is read as UTF-8 (as Dovecot does with
    one iconv does not know)."""
    try:
        return raw.decode(_text_codec(charset) or "utf-8", "replace")
    except (UnicodeError, LookupError):  # a codec that fails even in "replace" mode (idna does)
        return raw.decode("utf-8", "replace")


# -- addresses (Dovecot 2.3's message_address_write; parsing is .rfc822's) ------------------------


_MAX_ADDRESSES = 10000
"""SEARCH reads at most this many addresses of one field."""


def _maybe_quoted(text: bytes, escape_dot: bool) -> bytes:
    """``text`` as is when it is all atext (and dots, unless ``escape_dot``), else quoted with
    backslashes before ``\\``, ``"`` and ``'`` (Dovecot's str_append_maybe_escape)."""
    if all(is_atext(char) or (char == 0x2E and not escape_dot) for char in text):
        return text
    return b'"' + re.sub(rb"([\\\"'])", rb"\\\1", text) + b'"'


def format_addresses(value: bytes) -> bytes:
    """An address header's value rewritten the way Dovecot 2.3 matches FROM/TO/CC/BCC against it:
    ``"Display Name" <box@domain>`` joined by ``, ``, groups as ``name: ...;``."""
    # NULs are kept and a local part is a strict dot-atom, as this matching has always read them
    addresses = AddressParser(
        value, nul_replacement=None, strict_dots=True, max_addresses=_MAX_ADDRESSES
    ).parse()
    if not addresses:
        return b""
    written = bytearray()
    in_group = False
    first = True
    for address in addresses:
        if not first:
            written += b", "
        first = False
        if address.domain is None:
            if not in_group:
                written += _group_name(address.mailbox) + b": "
                first = True
            else:
                del written[-2 if written.endswith(b", ") else -1 :]
                written += b";"
            in_group = not in_group
        else:
            written += _written_address(address)
    return bytes(written)


def _group_name(name: bytes | None) -> bytes:
    if not name:
        return b'""'
    return name if b"=?" in name else _maybe_quoted(name, escape_dot=True)


def _written_address(address: Address) -> bytes:
    written = bytearray()
    if address.name is not None:
        written += address.name if b"=?" in address.name else _maybe_quoted(address.name, escape_dot=True)
    mailbox = address.mailbox or b""
    domain = address.domain or b""
    if address.route is None and not mailbox and not domain:
        return bytes(written)
    if address.name:
        written += b" "
    written += b"<"
    if address.route is not None:
        written += address.route + b":"
    written += _maybe_quoted(mailbox, escape_dot=False) if mailbox else b'""'
    if domain:
        written += b"@" + domain
    return bytes(written + b">")


# -- the Date: header (Dovecot's message_date_parse) --------------------------------------------------


def parse_date_header(value: bytes) -> date | None:
    """The calendar date a Date: header gives, in its own time zone; None when Dovecot could not read
    it either: ``[weekday ","] day month year hh:mm[:ss] [zone]``, two-digit years 1970-2069."""
    cursor = Tokens(value)
    cursor.skip_lwsp()
    token = _date_token(cursor)
    if token is not None and len(token) == 3:
        if cursor.peek() != 0x2C:
            return None
        cursor.pos += 1
        cursor.skip_lwsp()
        token = _date_token(cursor)
    if token is None or not 1 <= len(token) <= 2 or not token.isdigit():
        return None
    day = int(token)
    month = _month_number(_date_token(cursor))
    year_token = _date_token(cursor)
    if not month or year_token is None or len(year_token) not in (2, 4) or not year_token.isdigit():
        return None
    year = int(year_token)
    if len(year_token) == 2:
        year += 2000 if year < 70 else 1900
    elif year < 1900:
        return None
    if not _valid_time(cursor):
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _month_number(token: bytes | None) -> int:
    """1 to 12 when ``token`` starts with an English month abbreviation, else 0."""
    name = token[:3].decode("latin-1").lower() if token is not None and len(token) >= 3 else ""
    return _MONTHS.index(name) + 1 if name in _MONTHS else 0


def _date_token(cursor: Tokens) -> bytes | None:
    """The next atom; None at the end or at something that is not one."""
    out = bytearray()
    if cursor.at_end() or cursor.atom(out) < 0 or not out:
        return None
    return bytes(out)


def _valid_time(cursor: Tokens) -> bool:
    """``hh:mm[:ss] [zone]`` follows, with values Dovecot's utc_mktime takes (a leap second included)."""
    hour = _date_token(cursor)
    if hour is None or not 1 <= len(hour) <= 2 or not hour.isdigit() or cursor.peek() not in (0x3A, 0x2E):
        return False
    cursor.pos += 1
    cursor.skip_lwsp()
    minute = _date_token(cursor)
    if minute is None or len(minute) != 2 or not minute.isdigit():
        return False
    second = b"00"
    if cursor.peek() in (0x3A, 0x2E):
        cursor.pos += 1
        cursor.skip_lwsp()
        found = _date_token(cursor)
        if found is None or len(found) != 2 or not found.isdigit():
            return False
        second = found
    if not cursor.at_end() and not is_atext(cursor.peek()):
        return False  # a zone that is not an atom
    return int(hour) <= 23 and int(minute) <= 59 and int(second) <= 60


# -- MIME structure (after Dovecot's message-parser) ---------------------------------------------------


# Not bodystructure.parse_message: SEARCH reads Content-Type without MIME-Version, boundaries untruncated.
@dataclass
class _MimePart:
    header: list[_HeaderLine]
    header_complete: bool
    body: bytes = b""
    searchable: bool = False
    """Whether the body is searched: a text/*, message/* or untyped leaf with a known encoding."""
    transfer_encoding: str = "7bit"
    charset: str | None = None


@dataclass(frozen=True)
class _BoundaryHit:
    index: int
    """Which boundary of the stack the line matched."""
    content_end: int
    """Where the content before it ends (the line break before the boundary line belongs to it)."""
    after: int
    """Where the line after the boundary line starts."""
    closing: bool
    """``--boundary--``."""


def _boundary_at(data: bytes, position: int, boundaries: Sequence[bytes]) -> int | None:
    """Which of ``boundaries`` the line at ``position`` opens with (``--`` + boundary, prefix match,
    the longest and then the innermost winning), or None."""
    if data[position : position + 2] != b"--":
        return None
    best: int | None = None
    for index, boundary in enumerate(boundaries):
        if data.startswith(boundary, position + 2) and (
            best is None or len(boundary) >= len(boundaries[best])
        ):
            best = index
    return best


class _MimeParser:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.boundaries: list[bytes] = []
        self.parts: list[_MimePart] = []

    def parse(self) -> list[_MimePart]:
        self._entity(0, digest_child=False, depth=0)
        return self.parts

    def _next_boundary(self, start: int) -> _BoundaryHit | None:
        """The first boundary line at or after ``start`` (a line start)."""
        if not self.boundaries:
            return None
        position = start
        while position < len(self.data):
            index = _boundary_at(self.data, position, self.boundaries)
            if index is not None:
                return self._hit(index, start, position)
            newline = self.data.find(b"\n--", position)
            if newline < 0:
                return None
            position = newline + 1
        return None

    def _hit(self, index: int, start: int, line_start: int) -> _BoundaryHit:
        content_end = line_start
        if line_start > start:
            content_end -= 2 if self.data[line_start - 2 : line_start] == b"\r\n" else 1
        end = self.data.find(b"\n", line_start)
        after = len(self.data) if end < 0 else end + 1
        marker_end = line_start + 2 + len(self.boundaries[index])
        return _BoundaryHit(index, content_end, after, self.data[marker_end : marker_end + 2] == b"--")

    def _entity(self, start: int, digest_child: bool, depth: int) -> _BoundaryHit | None:
        header, body_start, complete = _parse_header_block(self.data, start, self.boundaries)
        part = _MimePart(header, complete)
        self.parts.append(part)
        if not complete and body_start < len(self.data):
            return self._next_boundary(body_start)
        content_type, params = _content_type(header, first=True)
        if content_type is None:
            content_type = "message/rfc822" if digest_child else "text/plain"
        nested = depth < MAX_MIME_DEPTH and len(self.parts) < MAX_MIME_PARTS
        if nested and content_type.startswith("multipart/") and params.get("boundary"):
            return self._multipart(body_start, params["boundary"], content_type == "multipart/digest", depth)
        if nested and content_type == "message/rfc822":
            return self._entity(body_start, digest_child=False, depth=depth + 1)
        hit = self._next_boundary(body_start)
        part.body = self.data[body_start : hit.content_end if hit else len(self.data)]
        _describe_leaf(part, digest_child)
        return hit

    def _multipart(self, body_start: int, boundary: bytes, digest: bool, depth: int) -> _BoundaryHit | None:
        own = len(self.boundaries)
        self.boundaries.append(boundary)
        hit = self._next_boundary(body_start)
        while hit is not None and hit.index == own and not hit.closing:
            hit = self._entity(hit.after, digest_child=digest, depth=depth + 1)
        del self.boundaries[own:]
        if hit is not None and hit.index == own:
            return self._next_boundary(hit.after)  # the epilogue runs to an outer boundary or the end
        return hit


def _describe_leaf(part: _MimePart, digest_child: bool) -> None:
    """Which body a search reads and how to decode it: the last Content-Type decides whether it is
    text, the first gives the charset, the last Content-Transfer-Encoding the decoding."""
    last_type, _ = _content_type(part.header, first=False)
    _, params = _content_type(part.header, first=True)
    encodings = [line.value for line in part.header if line.lower_name == "content-transfer-encoding"]
    part.transfer_encoding = _transfer_encoding(encodings[-1]) if encodings else "7bit"
    charset = params.get("charset", b"").decode("latin-1")
    part.charset = charset or None
    text_like = last_type is None or last_type.startswith(("text/", "message/"))
    part.searchable = text_like and part.transfer_encoding != "unknown"


def _content_type(header: Sequence[_HeaderLine], first: bool) -> tuple[str | None, dict[str, bytes]]:
    """``type/subtype`` in lower case and its parameters, from the first or last Content-Type field:
    None without the field, "" when it does not parse, which (as in Dovecot 2.3) includes anything but
    ``;`` or the end after the subtype, e.g. ``text/plain charset=x``."""
    values = [line.value for line in header if line.lower_name == "content-type"]
    if not values:
        return None, {}
    cursor = Tokens(values[0] if first else values[-1])
    out = bytearray()
    if cursor.content_type(out) < 0:
        return "", {}
    return out.decode("latin-1").lower(), _content_params(cursor)


# Not bodystructure's RFC 2231 reader: SEARCH keeps the first value of a name and skips a broken one to ";".
def _content_params(cursor: Tokens) -> dict[str, bytes]:
    """``*(";" name "=" value)``, the first value of each name kept; a broken parameter is skipped up to
    the next ``;`` (RFC 2231 continuations and charsets are not decoded: boundary and charset do
    without them in practice)."""
    params: dict[str, bytes] = {}
    while not cursor.at_end():
        name = bytearray()
        value = bytearray()
        if cursor.peek() != 0x3B or not _content_param(cursor, name, value):
            while not cursor.at_end() and cursor.peek() != 0x3B:
                cursor.pos += 1
            if cursor.at_end():
                break
            continue
        params.setdefault(name.decode("latin-1").lower(), bytes(value))
    return params


def _content_param(cursor: Tokens, name: bytearray, value: bytearray) -> bool:
    cursor.pos += 1  # ';'
    if cursor.skip_lwsp() <= 0 or cursor.mime_token(name) <= 0 or not name or cursor.peek() != 0x3D:
        return False
    cursor.pos += 1
    result = cursor.skip_lwsp()
    if result <= 0:
        return result == 0
    if cursor.peek() == 0x22:
        return cursor.quoted_string(value) >= 0
    if cursor.peek() == 0x3D:  # broken input like name==?utf-8?b?...?=
        cursor.unquoted_run(value)
        return True
    return cursor.mime_token(value) >= 0


# Not bodystructure's: SEARCH takes the first token whatever follows, and folds unknown names to "unknown".
def _transfer_encoding(value: bytes) -> str:
    cursor = Tokens(value)
    cursor.skip_lwsp()
    token = bytearray()
    cursor.mime_token(token)
    name = token.decode("latin-1").lower()
    if name in ("7bit", "8bit", "binary", "base64", "quoted-printable"):
        return name
    return "unknown"


_QP_TOKEN = re.compile(
    rb"=([0-9A-Fa-f]{2})"  # an encoded octet
    rb"|(=[ \t]*\r?\n)"  # a soft line break
    rb"|[ \t]*\r?\n"  # a line break, trailing white space dropped
    rb"|(=[ \t]*\Z|=[0-9A-Fa-f]?\Z|[ \t]+\Z|\r\Z)"  # unfinished at the end: dropped
    rb"|([ \t]{78,})"  # a white space run too long to be kept whole
)


def decode_quoted_printable(data: bytes) -> bytes:
    """Quoted-printable decoded as Dovecot's qp-decoder does: line breaks become CRLF, white space at a
    line end is dropped, an ``=`` that starts no valid sequence is kept as it is, and what is left
    unfinished at the very end is dropped."""

    def replace(found: re.Match[bytes]) -> bytes:
        octet, soft_break, unfinished, long_run = found.groups()
        if octet is not None:
            return bytes.fromhex(octet.decode("ascii"))
        if soft_break is not None or unfinished is not None:
            return b""
        if long_run is not None:
            return long_run[:77]
        return b"\r\n"

    return _QP_TOKEN.sub(replace, data)


def _body_text(part: _MimePart) -> str:
    if not part.searchable:
        return ""
    raw = part.body
    if part.transfer_encoding == "base64":
        raw = _decode_base64(raw)
    elif part.transfer_encoding == "quoted-printable":
        raw = decode_quoted_printable(raw)
    return _decode_charset(raw, part.charset or "utf-8")
