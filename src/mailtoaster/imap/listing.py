"""LIST and LSUB (RFC 3501 §6.3.8-9) with LIST-EXTENDED (RFC 5258), SPECIAL-USE (RFC 6154), CHILDREN
(RFC 3348) and LIST-STATUS (RFC 5819), over :class:`~mailtoaster.store.MailStore`'s folder listing.

The hierarchy separator is ``.`` (Maildir++). A pattern is matched against the reference and the
pattern written one after the other, as RFC 3501 says (clients end the reference with the separator
when they mean a level below it); ``*`` matches anything, ``%`` anything but the separator, INBOX
matches in any case. The empty pattern asks for the separator and the reference's root. Names go out
in modified UTF-7. Every LIST line carries ``\\HasChildren``/``\\HasNoChildren`` and the special use,
asked for or not (both extensions allow it, and clients that did not ask ignore them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mailtoaster.imap import response
from mailtoaster.imap.parser import List, Lsub
from mailtoaster.store import FolderListing, MaildirError, MailStore, encode_mutf7
from mailtoaster.store.maildir import FOLDER_SEPARATOR

INBOX = "INBOX"
SEPARATOR_QUOTED = b'"."'
MAX_PATTERN_WILDCARDS = 20
"""Wildcards a pattern may hold: each ``*`` can make the match backtrack, so a pattern of hundreds of
them against long names would be a cheap way to burn CPU."""


class PatternError(ValueError):
    """A pattern the server will not match (too many wildcards)."""


def mailbox_name(name: str) -> bytes:
    """A folder name as it goes on the wire: modified UTF-7, an atom when it can be, else quoted."""
    return response.astring(encode_mutf7(name).encode("ascii") if name != INBOX else b"INBOX")


@dataclass(frozen=True)
class Matcher:
    """A reference and pattern made ready to test names: ``exact`` for folders, ``folded`` (without
    case) for INBOX."""

    exact: re.Pattern[str]
    folded: re.Pattern[str]

    def __call__(self, name: str) -> bool:
        pattern = self.folded if name == INBOX else self.exact
        return pattern.fullmatch(name) is not None


def pattern_matcher(reference: str, pattern: str) -> Matcher:
    """What ``reference`` followed by ``pattern`` matches."""
    full = reference + pattern
    if full.count("*") + full.count("%") > MAX_PATTERN_WILDCARDS:
        raise PatternError(f"More than {MAX_PATTERN_WILDCARDS} wildcards in a mailbox pattern")
    pieces = []
    for char in full:
        if char == "*":
            pieces.append(".*")
        elif char == "%":
            pieces.append(f"[^{re.escape(FOLDER_SEPARATOR)}]*")
        else:
            pieces.append(re.escape(char))
    expression = "".join(pieces)
    return Matcher(re.compile(expression, re.DOTALL), re.compile(expression, re.DOTALL | re.IGNORECASE))


def root_response(reference: str) -> bytes:
    """The answer to an empty pattern: the separator and the reference's root (RFC 3501 §6.3.8)."""
    cut = reference.find(FOLDER_SEPARATOR)
    root = reference[: cut + 1] if cut >= 0 else ""
    name = response.astring(encode_mutf7(root).encode("ascii")) if root else b'""'
    return response.untagged(b"LIST (\\Noselect) " + SEPARATOR_QUOTED + b" " + name)


@dataclass(frozen=True)
class ListLine:
    """One LIST answer before encoding."""

    name: str
    attributes: tuple[str, ...]
    child_info: bool = False
    """RECURSIVEMATCH: listed for a subscribed descendant, not for itself (``CHILDINFO``)."""
    selectable: bool = True


def list_lines(store: MailStore, command: List) -> list[ListLine]:
    """What LIST answers (reads the folders and subscriptions: call it in a worker thread)."""
    matchers = [pattern_matcher(command.reference, pattern) for pattern in command.patterns]
    listings = store.list_folders()
    want_subscribed = "SUBSCRIBED" in command.selection or "SUBSCRIBED" in command.return_options
    subscribed = set(store.subscribed()) if want_subscribed else set()
    if "SUBSCRIBED" in command.selection:
        candidates = _subscribed_candidates(listings, subscribed)
    else:
        candidates = listings
    if "SPECIAL-USE" in command.selection:
        candidates = [listing for listing in candidates if listing.special_use]
    lines = []
    for listing in candidates:
        if not any(matcher(listing.name) for matcher in matchers):
            continue
        lines.append(_line(listing, subscribed if want_subscribed else None))
    if "SUBSCRIBED" in command.selection and "RECURSIVEMATCH" in command.selection:
        lines += _child_info_lines(listings, subscribed, {line.name for line in lines}, matchers)
    return sorted(lines, key=_list_order)


def _list_order(line: ListLine) -> tuple[bool, str]:
    return line.name != INBOX, line.name


def _subscribed_candidates(listings: list[FolderListing], subscribed: set[str]) -> list[FolderListing]:
    """The subscribed names: existing folders as listed, the others ``\\NonExistent``."""
    known = {listing.name: listing for listing in listings}
    candidates = []
    for name in subscribed:
        listing = known.get(name)
        candidates.append(listing or FolderListing(name, selectable=False, has_children=False))
    return candidates


def _line(listing: FolderListing, subscribed: set[str] | None) -> ListLine:
    attributes = list(listing.attributes)
    if not listing.selectable and not listing.has_children and "\\Noselect" in attributes:
        attributes[attributes.index("\\Noselect")] = "\\NonExistent"
    if subscribed is not None and listing.name in subscribed:
        attributes.append("\\Subscribed")
    return ListLine(listing.name, tuple(attributes), selectable=listing.selectable)


def _child_info_lines(
    listings: list[FolderListing], subscribed: set[str], listed: set[str], matchers: list[Matcher]
) -> list[ListLine]:
    """RECURSIVEMATCH: names that match but are not subscribed themselves, with a subscribed child."""
    lines = []
    for listing in listings:
        if listing.name in listed or not any(matcher(listing.name) for matcher in matchers):
            continue
        prefix = listing.name + FOLDER_SEPARATOR
        if any(name.startswith(prefix) for name in subscribed):
            line = _line(listing, subscribed)
            lines.append(ListLine(line.name, line.attributes, child_info=True, selectable=line.selectable))
    return lines


def encode_list_line(line: ListLine, verb: bytes = b"LIST") -> bytes:
    attributes = response.paren_list(attribute.encode("ascii") for attribute in line.attributes)
    text = verb + b" " + attributes + b" " + SEPARATOR_QUOTED + b" " + mailbox_name(line.name)
    if line.child_info:
        text += b' ("CHILDINFO" ("SUBSCRIBED"))'
    return response.untagged(text)


def lsub_lines(store: MailStore, command: Lsub) -> list[ListLine]:
    """What LSUB answers: subscribed names that match, and for a ``%`` that stops above a subscribed
    name, that parent as ``\\Noselect`` (RFC 3501 §6.3.9)."""
    matcher = pattern_matcher(command.reference, command.pattern)
    subscribed = store.subscribed()
    lines: dict[str, ListLine] = {}
    for name in subscribed:
        if matcher(name):
            lines[name] = ListLine(name, ())
    for name in subscribed:
        for parent in _parents(name):
            if parent not in lines and parent not in subscribed and matcher(parent):
                lines[parent] = ListLine(parent, ("\\Noselect",), selectable=False)
    return sorted(lines.values(), key=_list_order)


def _parents(name: str) -> Iterable[str]:
    levels = name.split(FOLDER_SEPARATOR)
    for count in range(1, len(levels)):
        yield FOLDER_SEPARATOR.join(levels[:count])


def status_line(store: MailStore, name: str, items: tuple[str, ...]) -> bytes | None:
    """``* STATUS name (...)`` for LIST-STATUS and STATUS; None when the folder cannot be read."""
    try:
        status = store.status(name)
    except MaildirError:
        return None
    values = {
        "MESSAGES": status.messages,
        "RECENT": status.recent,
        "UIDNEXT": status.uidnext,
        "UIDVALIDITY": status.uidvalidity,
        "UNSEEN": status.unseen,
    }
    pairs = b" ".join(b"%s %d" % (item.encode("ascii"), values[item]) for item in items)
    return response.untagged(b"STATUS " + mailbox_name(name) + b" (" + pairs + b")")
