"""The author of a message: the mailboxes of its RFC 5322 From field and their domains.

ADSP (RFC 5617 §2.3) and DMARC (RFC 7489 §6.6.1, RFC 9989 §5.3.1) both start from the "Author
Domain", the domain of the address in the From field. Both RFCs leave the odd cases to the receiver
(no From field, several of them, several mailboxes, an address without a domain), so this module
does not decide: it reports every mailbox it could read and, separately, what was wrong, and each
protocol applies its own rule. It never raises, whatever the header holds.

The mailbox grammar is the one the PRA parser implements (RFC 5322 with the obsolete forms and
RFC 6532 UTF-8): one parser for every "who sent this" question, so Sender ID and DMARC never
disagree about what an address is. Domains are returned as DNS will be asked for them: A-labels,
lower case (RFC 9989 §5.3.1: "If the domain is a U-label, the domain MUST be converted to an
A-label").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailtoaster.auth.pra import MalformedAddressError, parse_mailbox_list
from mailtoaster.message import Header, Message

__all__ = ["AuthorAddress", "AuthorError", "Authors", "find_authors"]

_WHITESPACE = b" \t\r\n"


class AuthorError(enum.Enum):
    """Why the From field(s) do not yield a clean set of author addresses."""

    NO_FROM_FIELD = "no-from-field"
    """The message has no From field at all (RFC 5322 §3.6 requires exactly one)."""
    MULTIPLE_FROM_FIELDS = "multiple-from-fields"
    """More than one From field; the addresses of all of them are still listed."""
    EMPTY_FROM_FIELD = "empty-from-field"
    """A From field holds no mailbox (only white space, or only commas)."""
    MALFORMED = "malformed"
    """A From field cannot be parsed as a mailbox list (group syntax included)."""
    NO_DOMAIN = "no-domain"
    """A mailbox has no domain name (a bare local part, or an address literal)."""


@dataclass(frozen=True)
class AuthorAddress:
    """One mailbox of a From field."""

    local_part: str
    domain: str
    """A-labels, lower case: the form DNS lookups and alignment comparisons use."""
    display_name: str = ""

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain}"


@dataclass(frozen=True)
class Authors:
    """Every mailbox read from the From field(s), and what (if anything) was wrong."""

    addresses: tuple[AuthorAddress, ...]
    from_fields: int
    """How many From fields the message has (RFC 5322 allows exactly one)."""
    error: AuthorError | None = None
    reason: str = ""
    """Why ``error`` was set, in words; empty when nothing was wrong."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def domains(self) -> tuple[str, ...]:
        """The distinct author domains, in the order they appear."""
        return tuple(dict.fromkeys(a.domain for a in self.addresses))

    @property
    def domain(self) -> str | None:
        """The Author Domain when there is exactly one and nothing was wrong, else None.

        Several mailboxes in the same domain still make one Author Domain (RFC 9989 §5.3.1 counts
        domains, not addresses).
        """
        return self.domains[0] if self.ok and len(self.domains) == 1 else None


def find_authors(message: Message) -> Authors:
    """Read the From field(s) of ``message``; never raises."""
    fields = message.get_all("From")
    if not fields:
        return Authors((), 0, AuthorError.NO_FROM_FIELD, "the message has no From field")
    addresses: list[AuthorAddress] = []
    problems: list[tuple[AuthorError, str]] = []
    for position, field in enumerate(fields, start=1):
        label = "the From field" if len(fields) == 1 else f"From field {position}"
        found, problem = _read_field(field, label)
        addresses.extend(found)
        if problem is not None:
            problems.append(problem)
    if len(fields) > 1:
        problems.insert(
            0, (AuthorError.MULTIPLE_FROM_FIELDS, f"{len(fields)} From fields (RFC 5322 allows one)")
        )
    if not problems:
        return Authors(tuple(addresses), len(fields))
    error, _ = problems[0]
    return Authors(tuple(addresses), len(fields), error, "; ".join(reason for _, reason in problems))


def _read_field(field: Header, label: str) -> tuple[list[AuthorAddress], tuple[AuthorError, str] | None]:
    """The mailboxes of one From field, and the first problem met in it."""
    if field.raw_value.strip(_WHITESPACE) == b"":
        return [], (AuthorError.EMPTY_FROM_FIELD, f"{label} is empty")
    try:
        boxes = parse_mailbox_list(field.value)
    except MalformedAddressError as exc:
        return [], (AuthorError.MALFORMED, f"{label} is malformed: {exc}")
    if not boxes:
        return [], (AuthorError.EMPTY_FROM_FIELD, f"{label} contains no mailbox")
    addresses: list[AuthorAddress] = []
    problem: tuple[AuthorError, str] | None = None
    for box in boxes:
        if box.domain is None or box.domain.startswith("["):
            what = "no domain" if box.domain is None else "an address literal, not a domain name"
            problem = problem or (AuthorError.NO_DOMAIN, f"{label} has a mailbox with {what}")
            continue
        try:
            domain = box.ascii_domain().lower()
        except MalformedAddressError as exc:
            problem = problem or (AuthorError.MALFORMED, f"{label} is malformed: {exc}")
            continue
        addresses.append(AuthorAddress(box.local_part, domain, box.display_name))
    return addresses, problem
