"""The Purported Responsible Address of a message (RFC 4407 section 2), as a pure function.

Sender ID checks the domain of the PRA, so the one thing this module must get right is *which*
header field names the party that most proximately caused the message to be delivered, and
whether that field names exactly one mailbox with a domain in it. No DNS, no I/O.

The algorithm, in the RFC's own numbering (the comments below cite these step numbers):

1. Select the first non-empty Resent-Sender field.  If none, go to step 2.  If a non-empty
   Resent-From precedes it and a Received or Return-Path field lies between the two, go to
   step 2 (the Resent-Sender belongs to an older resent block).  Otherwise go to step 5.
2. Select the first non-empty Resent-From field.  If found, go to step 5; otherwise step 3.
3. Select all non-empty Sender fields: none, go to step 4; exactly one, go to step 5; more than
   one, go to step 6.
4. Select all non-empty From fields: exactly one, go to step 5; otherwise go to step 6.
5. If the selected field is malformed (it appears to contain several mailboxes, the single
   mailbox is hopelessly malformed, or it has no domain name) go to step 6; otherwise its single
   mailbox is the PRA.
6. The message is ill-formed and has no PRA.

"Non-empty" means the field body holds any non-whitespace character; fields made only of white
space are treated as absent.

Address syntax is RFC 2822's (the grammar RFC 4407 refers to) including its obsolete forms, which
a receiver must accept (RFC 2822 section 4), plus UTF-8 addresses (RFC 6532).  It is a
hand-written parser rather than :mod:`email.headerregistry` because that one repairs input
silently (it turns garbage into plausible addresses) and can raise on odd input; here every
deviation must become a step-6 verdict with a reason, and nothing may raise.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from mailtoaster.message import Header, Message

__all__ = [
    "Mailbox",
    "MalformedAddressError",
    "PraError",
    "PraHeaderName",
    "PraResult",
    "find_pra",
    "parse_mailbox_list",
    "single_mailbox",
]

PraHeaderName = Literal["Resent-Sender", "Resent-From", "Sender", "From"]
"""The four fields the PRA can come from, spelled canonically whatever the message's case."""

_TRACE_FIELDS: Final = ("Received", "Return-Path")
_WHITESPACE: Final = b" \t\r\n"


class PraError(enum.Enum):
    """Why a message has no PRA: every member is a road to RFC 4407 step 6."""

    MULTIPLE_SENDER_FIELDS = "multiple-sender-fields"
    """Step 3: more than one non-empty Sender field."""
    NO_FROM_FIELD = "no-from-field"
    """Step 4: no Resent-*, no Sender and no non-empty From field."""
    MULTIPLE_FROM_FIELDS = "multiple-from-fields"
    """Step 4: more than one non-empty From field (and no Sender to disambiguate)."""
    MULTIPLE_MAILBOXES = "multiple-mailboxes"
    """Step 5: the selected field contains several mailboxes."""
    MALFORMED_MAILBOX = "malformed-mailbox"
    """Step 5: the selected field is not a single well-formed mailbox."""
    NO_DOMAIN = "no-domain"
    """Step 5: the single mailbox has no domain name (bare local part or address literal)."""


@dataclass(frozen=True)
class PraResult:
    """Either a PRA (``ok``) or the reason there is none.

    ``header`` is the field the algorithm selected, also on step-5 errors (so a report can say
    *which* field was malformed); it is ``None`` only when no field was selected.  When ``ok``,
    ``address == f"{local_part}@{domain}"``; ``domain`` is ASCII (internationalised labels
    converted to A-labels, IDNA 2003 as Python's ``idna`` codec does it) with ASCII labels' case
    kept as written, so compare it case-insensitively; ``local_part`` is in its simplest
    RFC 2822 form (unquoted when it is a dot-atom, quoted otherwise) and may be UTF-8.
    """

    header: PraHeaderName | None
    address: str | None = None
    local_part: str | None = None
    domain: str | None = None
    display_name: str = ""
    error: PraError | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        has_address = None not in (self.address, self.local_part, self.domain)
        no_address = self.address is None and self.local_part is None and self.domain is None
        if self.error is None and not (has_address and self.header is not None):
            raise ValueError("a PRA needs its header, address, local part and domain")
        if self.error is not None and not no_address:
            raise ValueError("an ill-formed result carries no address")

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def found(cls, header: PraHeaderName, local_part: str, domain: str, display_name: str) -> PraResult:
        return cls(header, f"{local_part}@{domain}", local_part, domain, display_name)

    @classmethod
    def ill_formed(cls, header: PraHeaderName | None, error: PraError, reason: str) -> PraResult:
        return cls(header, error=error, reason=reason)


def find_pra(message: Message) -> PraResult:
    """Run RFC 4407 section 2 on ``message``; never raises, whatever the message holds."""
    selected = _select_field(message.headers)
    if isinstance(selected, PraResult):
        return selected
    name, field = selected
    return single_mailbox(name, field.value)


# --- Steps 1 to 4: choosing the field ------------------------------------------------------------


def _is_non_empty(field: Header) -> bool:
    """RFC 4407 §2: a field is non-empty iff its body has any non-whitespace character."""
    return field.raw_value.strip(_WHITESPACE) != b""


def _non_empty_indexes(headers: Sequence[Header], name: str) -> list[int]:
    return [i for i, h in enumerate(headers) if h.is_named(name) and _is_non_empty(h)]


def _select_field(headers: Sequence[Header]) -> tuple[PraHeaderName, Header] | PraResult:
    """Steps 1 to 4: the one field step 5 will read, or the step-6 verdict reached on the way."""
    resent_senders = _non_empty_indexes(headers, "Resent-Sender")
    if resent_senders and not _in_older_resent_block(headers, resent_senders[0]):
        return "Resent-Sender", headers[resent_senders[0]]  # step 1 -> step 5
    resent_froms = _non_empty_indexes(headers, "Resent-From")
    if resent_froms:
        return "Resent-From", headers[resent_froms[0]]  # step 2 -> step 5
    senders = _non_empty_indexes(headers, "Sender")
    if len(senders) > 1:  # step 3 -> step 6
        return PraResult.ill_formed(
            "Sender",
            PraError.MULTIPLE_SENDER_FIELDS,
            f"RFC 4407 step 3: {len(senders)} non-empty Sender fields",
        )
    if senders:
        return "Sender", headers[senders[0]]  # step 3 -> step 5
    froms = _non_empty_indexes(headers, "From")
    if len(froms) == 1:
        return "From", headers[froms[0]]  # step 4 -> step 5
    if not froms:  # step 4 -> step 6
        return PraResult.ill_formed(
            None, PraError.NO_FROM_FIELD, "RFC 4407 step 4: no Resent-*, Sender or non-empty From field"
        )
    return PraResult.ill_formed(
        "From", PraError.MULTIPLE_FROM_FIELDS, f"RFC 4407 step 4: {len(froms)} non-empty From fields"
    )


def _in_older_resent_block(headers: Sequence[Header], resent_sender: int) -> bool:
    """Step 1's exception: a trace field between a preceding Resent-From and the Resent-Sender.

    Resent blocks are prepended (RFC 2822 §3.6.6) and every relay prepends a Received field, so
    a Received or Return-Path field between them means the Resent-Sender was added by an earlier
    resender than the Resent-From.  Checking the *first* non-empty Resent-From is enough: if any
    preceding Resent-From has a trace field after it, so does every Resent-From above it.
    """
    resent_froms = [i for i in _non_empty_indexes(headers, "Resent-From") if i < resent_sender]
    if not resent_froms:
        return False
    between = headers[resent_froms[0] + 1 : resent_sender]
    return any(h.is_named(name) for h in between for name in _TRACE_FIELDS)


# --- Step 5: the selected field must hold exactly one mailbox with a domain -----------------------


def single_mailbox(name: PraHeaderName, value: str) -> PraResult:
    """Step 5: parse the field as a mailbox list and insist on one mailbox with a domain name.

    Sender and Resent-Sender are ``mailbox`` and From and Resent-From ``mailbox-list`` in
    RFC 2822; all four are parsed as lists so that "Sender: a@x, b@y" is reported as the
    several mailboxes it appears to contain rather than as mere garbage.  Never raises.
    """
    prefix = f"RFC 4407 step 5: {name}"
    try:
        boxes = parse_mailbox_list(value)
    except MalformedAddressError as exc:
        return PraResult.ill_formed(name, PraError.MALFORMED_MAILBOX, f"{prefix} is malformed: {exc}")
    if not boxes:
        return PraResult.ill_formed(name, PraError.MALFORMED_MAILBOX, f"{prefix} contains no mailbox")
    if len(boxes) > 1:
        return PraResult.ill_formed(
            name, PraError.MULTIPLE_MAILBOXES, f"{prefix} contains {len(boxes)} mailboxes"
        )
    box = boxes[0]
    if box.domain is None:
        return PraResult.ill_formed(name, PraError.NO_DOMAIN, f"{prefix} mailbox has no domain")
    if box.domain.startswith("["):
        return PraResult.ill_formed(
            name, PraError.NO_DOMAIN, f"{prefix} mailbox has an address literal, not a domain name"
        )
    try:
        domain = box.ascii_domain()
    except MalformedAddressError as exc:
        return PraResult.ill_formed(name, PraError.MALFORMED_MAILBOX, f"{prefix} is malformed: {exc}")
    return PraResult.found(name, box.local_part, domain, box.display_name)


def _check_text(text: str, what: str) -> None:
    """Reject what cannot be a real address: undecodable octets (U+FFFD) and control characters."""
    if "\ufffd" in text:
        raise MalformedAddressError(f"{what} contains octets that are not UTF-8")
    if any(ch not in " \t" and (ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0) for ch in text):
        raise MalformedAddressError(f"{what} contains a control character")


def _ascii_domain(domain: str) -> str:
    """The domain as DNS will be asked for it: A-labels for internationalised labels, RFC 1035 lengths."""
    _check_text(domain, "domain")
    labels: list[str] = []
    for label in domain.split("."):
        try:
            labels.append(label if label.isascii() else label.encode("idna").decode("ascii"))
        except UnicodeError as exc:
            raise MalformedAddressError(f"invalid internationalised domain label {label!r}") from exc
    ascii_domain = ".".join(labels)
    if any(not 1 <= len(label) <= 63 for label in ascii_domain.split(".")):
        raise MalformedAddressError("domain label empty or longer than 63 octets")
    if len(ascii_domain) > 253:
        raise MalformedAddressError("domain longer than 253 octets")
    return ascii_domain


# --- Lexing RFC 2822 structured field bodies ------------------------------------------------------


class MalformedAddressError(Exception):
    """The field or mailbox is hopelessly malformed; the message says where."""


_ATEXT: Final = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
_SPECIALS: Final = frozenset("<>:;@,.")
_FORBIDDEN_IN_QUOTES: Final = frozenset("\r\n\x00")

_TokenKind = Literal["atom", "quoted", "literal", "special"]


@dataclass(frozen=True)
class _Token:
    kind: _TokenKind
    text: str
    """atom: as written; quoted: the content, escapes resolved; literal: ``[...]``; special: the char."""
    spaced: bool
    """White space or a comment came right before it (only display names care)."""

    def is_special(self, char: str) -> bool:
        return self.kind == "special" and self.text == char

    @property
    def is_word(self) -> bool:
        return self.kind in ("atom", "quoted")


def _is_atext(char: str) -> bool:
    """RFC 2822 atext, widened by RFC 6532 to every non-ASCII character."""
    return char in _ATEXT or ord(char) >= 0x80


def _tokenize(text: str) -> list[_Token]:
    """Split a structured field body into tokens; comments and folding white space are dropped.

    Dropping CFWS everywhere is exactly what the obsolete grammar allows (CFWS around the dots of
    local parts and domains, RFC 2822 §4.4), so the parser need not think about it again.
    """
    tokens: list[_Token] = []
    pos = 0
    spaced = False
    while pos < len(text):
        char = text[pos]
        if char in " \t":
            pos, spaced = pos + 1, True
            continue
        if char == "(":
            pos, spaced = _skip_comment(text, pos), True
            continue
        if char == '"':
            content, pos = _read_quoted(text, pos)
            tokens.append(_Token("quoted", content, spaced))
        elif char == "[":
            content, pos = _read_literal(text, pos)
            tokens.append(_Token("literal", content, spaced))
        elif char in _SPECIALS:
            tokens.append(_Token("special", char, spaced))
            pos += 1
        elif _is_atext(char):
            end = pos
            while end < len(text) and _is_atext(text[end]):
                end += 1
            tokens.append(_Token("atom", text[pos:end], spaced))
            pos = end
        else:
            raise MalformedAddressError(f"unexpected character {char!r} at offset {pos}")
        spaced = False
    return tokens


def _skip_comment(text: str, start: int) -> int:
    """Skip a (possibly nested) comment starting at ``start``; return the offset after it."""
    depth = 0
    pos = start
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    raise MalformedAddressError(f"unterminated comment at offset {start}")


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string starting at ``start``: its content (quoted pairs resolved), next offset."""
    content: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(content), pos + 1
        if char == "\\" and pos + 1 < len(text):
            pos += 1
            char = text[pos]
        if char in _FORBIDDEN_IN_QUOTES:
            raise MalformedAddressError(f"control character {char!r} in quoted string")
        content.append(char)
        pos += 1
    raise MalformedAddressError(f"unterminated quoted string at offset {start}")


def _read_literal(text: str, start: int) -> tuple[str, int]:
    """Read a domain literal ``[...]`` starting at ``start``; folding white space inside is dropped."""
    end = text.find("]", start + 1)
    if end < 0:
        raise MalformedAddressError(f"unterminated domain literal at offset {start}")
    inner = text[start + 1 : end]
    if "[" in inner or "\\" in inner:
        raise MalformedAddressError(f"malformed domain literal at offset {start}")
    return "[" + re.sub(r"[ \t]+", "", inner) + "]", end + 1


# --- Parsing a mailbox list ----------------------------------------------------------------------


def parse_mailbox_list(text: str) -> list[Mailbox]:
    """The mailboxes of an RFC 2822 mailbox-list field body, obsolete forms included.

    Empty list elements are skipped, so the list may be empty.  Raises
    :class:`MalformedAddressError` when ``text`` is not a mailbox list (group syntax included).
    """
    return list(_mailboxes(text))


@functools.lru_cache(maxsize=256)
def _mailboxes(text: str) -> tuple[Mailbox, ...]:
    """Cached: one message's From field is read by Sender ID, DomainKeys, ADSP and DMARC alike, and
    parsing it showed in profiles; mailboxes are frozen."""
    return tuple(_Parser(_tokenize(text)).mailbox_list())


@dataclass(frozen=True)
class Mailbox:
    """One mailbox as written; its text is checked only by :meth:`ascii_domain`."""

    display_name: str
    local_part: str
    """In its simplest RFC 2822 form (unquoted when it is a dot-atom, quoted otherwise)."""
    domain: str | None
    """As written (labels joined by dots), a ``[literal]``, or None when there was no ``@``."""

    def ascii_domain(self) -> str:
        """The domain as DNS will be asked for it, once the local part and domain are checked.

        A-labels for internationalised labels, ASCII labels' case kept.  Raises
        :class:`MalformedAddressError` for undecodable octets or control characters in the local
        part or domain, for an invalid domain name, and for a mailbox with no domain name (no
        ``@``, or an address literal): callers that report that case differently check it first.
        """
        if self.domain is None or self.domain.startswith("["):
            raise MalformedAddressError("mailbox has no domain name")
        _check_text(self.local_part, "local part")
        return _ascii_domain(self.domain)


class _Parser:
    """Recursive descent over tokens for RFC 2822 mailbox-list, with the obsolete forms.

    Accepted beyond the modern grammar, because RFC 2822 §4 says receivers must: empty list
    elements (obs-mbox-list), dots in display names (obs-phrase), source routes in angle addresses
    (obs-route), and white space or comments around the dots of addresses (obs-local-part,
    obs-domain).  Not accepted: group syntax, which RFC 2822 does not allow in originator fields
    (only RFC 6854, seven years after RFC 4407, does, and only in From) and which names a set of
    recipients rather than one responsible mailbox.
    """

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._pos = 0

    def mailbox_list(self) -> list[Mailbox]:
        boxes: list[Mailbox] = []
        while True:
            while self._accept(","):
                pass
            if self._peek() is None:
                return boxes
            boxes.append(self._mailbox())
            if self._peek() is not None:
                self._expect(",")

    def _peek(self) -> _Token | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _accept(self, special: str) -> bool:
        token = self._peek()
        if token is not None and token.is_special(special):
            self._pos += 1
            return True
        return False

    def _expect(self, special: str) -> None:
        if not self._accept(special):
            token = self._peek()
            found = "end of field" if token is None else repr(token.text)
            raise MalformedAddressError(f"expected {special!r}, found {found}")

    def _phrase(self) -> list[_Token]:
        """Words and dots: a display name, or a local part if an ``@`` follows."""
        start = self._pos
        while (token := self._peek()) is not None and (token.is_word or token.is_special(".")):
            self._pos += 1
        return self._tokens[start : self._pos]

    def _mailbox(self) -> Mailbox:
        words = self._phrase()
        if self._accept("<"):
            return self._angle_addr(_display_name(words))
        if self._accept(":"):
            raise MalformedAddressError("group syntax is not allowed in an originator field")
        if self._accept("@"):
            return Mailbox("", _local_part(words), self._domain())
        token = self._peek()
        if token is None or token.is_special(","):
            return Mailbox("", _local_part(words), None)
        raise MalformedAddressError(f"unexpected {token.text!r}")

    def _angle_addr(self, display_name: str) -> Mailbox:
        if (token := self._peek()) is not None and token.is_special("@"):
            self._obs_route()
        words = self._phrase()
        domain = self._domain() if self._accept("@") else None
        self._expect(">")
        return Mailbox(display_name, _local_part(words), domain)

    def _obs_route(self) -> None:
        """Skip an obsolete source route (``<@relay1,@relay2:user@host>``): only the last hop counts."""
        self._expect("@")
        self._domain()
        while self._accept(","):
            if self._accept("@"):
                self._domain()
        self._expect(":")

    def _domain(self) -> str:
        token = self._peek()
        if token is not None and token.kind == "literal":
            self._pos += 1
            return token.text
        labels = [self._atom("domain")]
        while self._accept("."):
            labels.append(self._atom("domain label after '.'"))
        return ".".join(labels)

    def _atom(self, what: str) -> str:
        token = self._peek()
        if token is None or token.kind != "atom":
            raise MalformedAddressError(f"expected a {what}")
        self._pos += 1
        return token.text


def _local_part(words: list[_Token]) -> str:
    """Validate ``word *("." word)`` and return it in its simplest form.

    A quoted local part whose content is a valid dot-atom means the same as the unquoted one
    (RFC 5321 §4.1.2), so ``"john.doe"`` becomes ``john.doe``; anything else stays quoted, with
    only ``"`` and ``\\`` escaped.
    """
    if not words:
        raise MalformedAddressError("missing local part")
    if any(token.is_word != (i % 2 == 0) for i, token in enumerate(words)) or len(words) % 2 == 0:
        raise MalformedAddressError("local part is not a dot-separated sequence of words")
    content = "".join(token.text for token in words)
    if all(token.kind != "quoted" for token in words) or _is_dot_atom(content):
        return content
    return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_dot_atom(text: str) -> bool:
    return all(part and all(_is_atext(char) for char in part) for part in text.split("."))


# --- Display names (informational only; never affects the verdict) ------------------------------

_ENCODED_WORD: Final = re.compile(r"=\?([!->@-~]+?)\?([bBqQ])\?([!->@-~]*?)\?=")


def _display_name(words: list[_Token]) -> str:
    """The phrase before ``<``, with RFC 2047 encoded words decoded.

    White space between two adjacent encoded words is dropped (RFC 2047 §6.2); encoded words inside
    quoted strings are left alone, as RFC 2047 §5 says they are not encoded words there.
    """
    parts: list[str] = []
    previous_encoded = False
    for token in words:
        decoded = _decode_encoded_word(token.text) if token.kind == "atom" else None
        if parts and token.spaced and not (previous_encoded and decoded is not None):
            parts.append(" ")
        parts.append(token.text if decoded is None else decoded)
        previous_encoded = decoded is not None
    return "".join(parts)


def _decode_encoded_word(atom: str) -> str | None:
    """Decode ``=?charset?B|Q?text?=``; None when ``atom`` is not one or cannot be decoded."""
    match = _ENCODED_WORD.fullmatch(atom)
    if match is None:
        return None
    charset, encoding, text = match.group(1).split("*", 1)[0], match.group(2).upper(), match.group(3)
    try:
        if encoding == "B":
            data = base64.b64decode(text + "=" * (-len(text) % 4))
        else:
            data = binascii.a2b_qp(text.encode("ascii"), header=True)
        return data.decode(charset, errors="replace")
    except (binascii.Error, LookupError, ValueError):
        return None
