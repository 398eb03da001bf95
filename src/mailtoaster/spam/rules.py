"""Header rules that read what a mailer and the relays wrote: forged Outlook fingerprints, relays without
reverse DNS, dates that disagree with the trace.

Each is a rule SpamAssassin has (same name, same idea), written again here from its description in
SpamAssassin's rule files, with only what this server can know: no trusted-network configuration, no
DNS. They read the parsed header fields only (:class:`~mailtoaster.spam.mime.ParsedMessage.headers`)
and never raise; a field that is missing or unreadable makes its rule not hit.

Every rule runs on live mail. There the newest (topmost) ``Received`` field is the one this server
wrote when it accepted the message: it holds the time of arrival and the client that connected, the
first external relay. The Date is compared with it for a Date in the future (a sender's clock cannot
be hours ahead of the moment the message arrived), and with the *earliest* time of the trace for a
Date in the past: mail that sat in a queue, or was fetched later from another mailbox (the corpus's
topmost fields are such a re-delivery, days after the mail came in), arrives long after its Date
while its first hop does not.

The body rules (:data:`BODY_RULES`) read the leaf parts of the parsed message: a quoted-printable line
longer than the standard allows, 8-bit text declared 7-bit, a "Dear Sir"-style salutation, a run of
blank lines that pushes the rest of the message out of sight, and links to a bare IP address. Each
reads at most :data:`MAX_RULE_TEXT` characters (or octets) of at most :data:`MAX_RULE_PARTS` parts,
with patterns that run in linear time, so hostile input costs bounded time.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_tz
from functools import cached_property, lru_cache

from mailtoaster.spam.mime import ParsedMessage, Part, part_text
from mailtoaster.spam.tokenize import html_text, registered_domain

HOUR = 3600.0

# --- the fields a rule reads ----------------------------------------------------------------------


@dataclass(frozen=True)
class Fields:
    """The first value of each field by lower-case name, and every Received."""

    first: dict[str, str]
    received: list[str]

    @classmethod
    def of(cls, headers: list[tuple[str, str]]) -> Fields:
        first: dict[str, str] = {}
        received = []
        for name, value in headers:
            lower = name.lower()
            first.setdefault(lower, value)
            if lower == "received":
                received.append(value)
        return cls(first, received)

    def get(self, name: str) -> str:
        return self.first.get(name, "")

    @cached_property
    def date_time(self) -> float | None:
        """The Date field as a POSIX time (None when missing or unreadable), parsed once for the
        several rules that read it."""
        date = self.get("date")
        return _timestamp(date) if date else None

    @cached_property
    def arrival_time(self) -> float | None:
        """The newest Received field's time, parsed once likewise."""
        return _received_time(self.received[0]) if self.received else None

    @cached_property
    def external_client(self) -> str | None:
        """:func:`first_external_client` of the trace, found once for the rules that read it."""
        return first_external_client(self.received)


# --- Outlook fingerprints -------------------------------------------------------------------------

_OE_MAILER = re.compile(r"\bOutlook Express [456]\.")
_OUTLOOK_MAILER = re.compile(r"^Microsoft Outlook(?: 8| CWS, Build 9|, Build 10)\.")
_OE_MSGID_HOTMAIL = re.compile(r"^<[A-Za-z0-9-]{7}[A-Za-z0-9]{20}@hotmail\.com>$")
_OUTLOOK_MSGID = re.compile(r"^<(?:[0-9a-f]{8}|[0-9a-f]{12})\$[0-9a-f]{8}\$[0-9a-f]{8}@\S+>$")
_VISTA_MSGID = re.compile(r"^<[A-F0-9]{32}@\S+>$")
_MAILING_LIST_UNSUBSCRIBE = re.compile(r"<mailto:(?:leave-\S+|\S+-unsubscribe)@\S+>$", re.IGNORECASE)
_OUTLOOK_TIME_MSGID = re.compile(r"^<[0-9a-f]{4}([0-9a-f]{8})\$[0-9a-f]{8}\$[0-9a-f]{8}@")
_MS_HASH_MSGID = re.compile(r"<[0-9a-f]{4,}\$[0-9a-f]{4,}\$[0-9a-f]{4,}@\S+>")


def _message_id(fields: Fields) -> str:
    return fields.get("message-id").strip()


def _list_rewrote_msgid(fields: Fields) -> bool:
    """A list manager (Lyris, ezmlm) that writes its own Message-ID: the mailer's is gone."""
    return bool(_MAILING_LIST_UNSUBSCRIBE.search(fields.get("list-unsubscribe")))


def forged_mua_outlook(fields: Fields) -> bool:
    """FORGED_MUA_OUTLOOK: X-Mailer says Outlook Express 4-6 or Outlook 98-2002, but the Message-ID is
    not the ``<hex$hex$hex@host>`` those write (nor Outlook Express's on Hotmail, nor the later
    ``<32 hex@host>``); or X-Mailer is just ``Outlook``, which no Outlook writes."""
    mailer = fields.get("x-mailer").strip()
    msgid = _message_id(fields)
    if not mailer or _VISTA_MSGID.match(msgid) or _list_rewrote_msgid(fields):
        return False
    if mailer == "Outlook":
        return True
    if _OE_MAILER.search(mailer):
        return not (_OUTLOOK_MSGID.match(msgid) or _OE_MSGID_HOTMAIL.match(msgid))
    if _OUTLOOK_MAILER.match(mailer):
        return not (_OUTLOOK_MSGID.match(msgid) or msgid.startswith("<!~!"))
    return False


def msgid_outlook_invalid(fields: Fields) -> bool:
    """MSGID_OUTLOOK_INVALID: an Outlook Message-ID carries the time it was made (the high half of a
    Windows FILETIME, in its 5th-12th hex digits); spamware copies the form with another time. Hits
    when that time is far (over 250 units, about 30 minutes) from both the Date and the newest
    Received's time (SpamAssassin's check_outlook_message_id)."""
    match = _OUTLOOK_TIME_MSGID.match(_message_id(fields))
    if match is None:
        return False
    token = int(match.group(1), 16)
    times = [fields.date_time, fields.arrival_time]
    return all(
        when is None or abs(token - int(when * 0.0023283064365387 + 27111902.8329849)) >= 250
        for when in times
    )


def ratware_ms_hash(fields: Fields) -> bool:
    """RATWARE_MS_HASH: an Outlook-shaped Message-ID without the X-MimeOLE field Outlook writes with
    it, and not through an Exchange server (which writes such ids too)."""
    if not _MS_HASH_MSGID.search(_message_id(fields)):
        return False
    if fields.get("x-mimeole").startswith("Produced By Microsoft MimeOLE"):
        return False
    return not any("with Microsoft Exchange Server" in value for value in fields.received)


# --- relays ---------------------------------------------------------------------------------------

_RECEIVED_FROM = re.compile(r"\s*from\s+(.*?)\s+by\s+", re.DOTALL | re.IGNORECASE)
_IPV4 = re.compile(r"(\d(?<![\d.]\d)\d{0,2})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")
r"""A dotted IPv4 address not inside a longer run of digits and dots. The same matches as the plain
``(?<![\d.])(\d{1,3})\.(\d{1,3})...`` (the tests hold it to that), whose look-behind opens the pattern and
so makes the search try every position: this one opens with a digit, which the re module scans for in C,
and looks behind once it has one (``\d{1,3}`` and ``\d\d{0,2}`` try the same lengths in the same order).
Half the cost."""
_NAME_WITH_IP = re.compile(r"\(\s*(?:[\w-]+\.)+[a-z][\w-]*\.?\s*\[", re.IGNORECASE)
_UNKNOWN_PAREN = re.compile(r"\(\s*(?:unknown\s*)?\[?\d{1,3}(?:\.\d{1,3}){3}\]?\s*\)", re.IGNORECASE)
_UNKNOWN_BRACKET = re.compile(r"\bunknown\s*\[", re.IGNORECASE)
r"""A client named by its address alone, as ``(1.2.3.4)``, ``(unknown [1.2.3.4])`` or
``unknown [1.2.3.4]``: two patterns rather than one alternation (the tests hold them to it). The first
opens with a literal, which the re module finds fast, where the alternation (its second branch opening
with ``\b``) tries every position; the second only runs on a client that holds ``unknown`` in any case (no
character but the ASCII letters and the Kelvin sign, which lower-cases to ``k``, is case-equivalent to
those letters for the re module)."""


def _unknown_client(client: str) -> bool:
    """Whether ``client`` is named by its address alone (:data:`_UNKNOWN_PAREN`, :data:`_UNKNOWN_BRACKET`)."""
    if _UNKNOWN_PAREN.search(client) is not None:
        return True
    return "unknown" in client.lower() and _UNKNOWN_BRACKET.search(client) is not None


def _private(octets: tuple[str, ...]) -> bool:
    first, second = int(octets[0]), int(octets[1])
    return first in (0, 10, 127) or (first == 192 and second == 168) or (first == 172 and 16 <= second <= 31)


def first_external_client(received: list[str]) -> str | None:
    """The client part (between ``from`` and ``by``) of the newest Received whose client connected
    from a public IPv4 address: the relay that handed the message to the recipient's site (on live
    mail, the client of the Received this server wrote). None when no hop shows one."""
    for value in received[:10]:
        match = _RECEIVED_FROM.match(value.partition(";")[0])
        if match is None:
            continue
        client = match.group(1)
        address = _IPV4.search(client)
        if address is None or _private(address.groups()):
            continue
        return client
    return None


_QMAIL_HELO = re.compile(r"^(\S+)\s+\(HELO\s", re.IGNORECASE)


def rdns_none(fields: Fields) -> bool:
    """RDNS_NONE: the first external relay had no reverse DNS name. Sendmail, Postfix and this server
    write ``from HELO (NAME [IP])``, and without a name ``(unknown [IP])`` or ``([IP])``; qmail writes
    ``from NAME (HELO helo) (IP)``, ``unknown`` for NAME when there is none."""
    client = fields.external_client
    if client is None:
        return False
    qmail = _QMAIL_HELO.match(client)
    if qmail is not None:
        return qmail.group(1).lower() == "unknown"
    return _unknown_client(client) and not _NAME_WITH_IP.search(client)


# --- dates ----------------------------------------------------------------------------------------

_INVALID_DATE = re.compile(
    r"^\s*(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),\s)?\s*(?:[12]\d|3[01]|0?[1-9])\s+"
    r"(?:Jan|Feb|Ma[ry]|Apr|Ju[nl]|Aug|Sep|Oct|Nov|Dec)\s+(?:19[7-9]\d|2\d{3})\s+"
    r"(?:[01]?\d|2[0-3]):[0-5]\d(?::(?:[0-5]\d|60))?(?:\s+[AP]M)?"
    r"(?:\s+(?:[+-]\d{4}|UT|[A-Z]{2,3}T|0000 GMT|\"GMT\"))?(?:\s*\(.*\))?\s*$",
    re.IGNORECASE,
)


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_COMMON_DATE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),  ?)?([0-9]{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"([12][0-9]{3}) ([0-9]{1,2}):([0-9]{2}):([0-9]{2}) "
    r"(?:([+-])([0-9]{2})([0-9]{2})|(UTC?|GMT|Z|[AECMP][SD]T))(?: .*)?",
    re.DOTALL,
)
"""The form nearly every Date and Received of real mail has (``Tue, 3 Sep 2002 10:00:00 +0000``, one
or two spaces after the comma, anything after a space behind the zone ignored, as
:func:`email.utils.parsedate_tz` ignores it): read by this one match instead of parsedate_tz's string
handling, which was the costliest step of the trace rules. The zone is ``+hhmm`` or one of the names
parsedate_tz knows (:data:`_ZONES`, in capitals as mail writes them: one message in twenty has ``GMT``,
``UT`` or ``EDT``). Anything else goes to parsedate_tz, so every input gets the same time as before."""

_ZONES = {
    name: -hours * 3600
    for name, hours in {
        **{"UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "AST": 4, "ADT": 3, "EST": 5, "EDT": 4},
        **{"CST": 6, "CDT": 5, "MST": 7, "MDT": 6, "PST": 8, "PDT": 7},
    }.items()
}
"""The zone names of :data:`_COMMON_DATE`, in seconds east of UTC, as parsedate_tz reads them."""


def _timestamp(text: str) -> float | None:
    """The POSIX time of a date as :func:`_parsed_timestamp` reads it, the common form read faster."""
    match = _COMMON_DATE.fullmatch(text)
    if match is None:
        return _parsed_timestamp(text)
    day, month, year, hour, minute, second, sign, zone_hours, zone_minutes, zone = match.groups()
    moment = (int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))
    if zone is not None:
        return _posix_time(moment, _ZONES[zone])
    # parsedate_tz reads "+hhmm" as the number hhmm: hh hours and mm minutes, even past 59.
    offset = int(zone_hours) * 3600 + int(zone_minutes) * 60
    return _posix_time(moment, -offset if sign == "-" else offset)


def _parsed_timestamp(text: str) -> float | None:
    """The POSIX time of a date in any form :func:`email.utils.parsedate_tz` reads."""
    try:
        parsed = parsedate_tz(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    return _posix_time(parsed[:6], parsed[9] or 0)


def _posix_time(moment: tuple[int, int, int, int, int, int], offset: int) -> float | None:
    """The time of (year, month, day, hour, minute, second) at ``offset`` seconds east of UTC, or
    None when a field is out of range (years outside 1970-2200 included)."""
    year, month, day, hour, minute, second = moment
    if not (
        1970 <= year <= 2200
        and 1 <= month <= 12
        and 1 <= day <= 31
        and 0 <= hour <= 24
        and 0 <= minute <= 59
        and 0 <= second <= 61
    ):
        return None
    days = _month_start(year, month) + day - 1
    return float(((days * 24 + hour) * 60 + minute) * 60 + second - offset)


@lru_cache(maxsize=512)
def _month_start(year: int, month: int) -> int:
    """Days from 1970-01-01 to the first of the month: :func:`calendar.timegm`'s own arithmetic (which
    builds a date for every call), remembered, as mail's dates fall in few months."""
    return datetime.date(year, month, 1).toordinal() - _EPOCH_ORDINAL


_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def _received_time(value: str) -> float | None:
    _head, semicolon, date = value.rpartition(";")
    return _timestamp(date.strip()) if semicolon else None


def invalid_date(fields: Fields) -> bool:
    """INVALID_DATE: a Date field that is not RFC 5322's form (``[Mon, ]1 Jan 2024 00:00[:00] +0000``,
    with the obsolete zone names)."""
    date = fields.get("date")
    return bool(date) and not _INVALID_DATE.match(date)


def date_shift(fields: Fields) -> float | None:
    """Date minus the newest Received's time, in seconds (positive: the Date is in the future of the
    arrival); None when either is missing or unreadable."""
    date, arrival = fields.date_time, fields.arrival_time
    return None if date is None or arrival is None else date - arrival


def date_in_future(fields: Fields) -> bool:
    """DATE_IN_FUTURE_03_XX: the Date is 3 hours or more after the message arrived."""
    shift = date_shift(fields)
    return shift is not None and shift >= 3 * HOUR


def date_in_past(fields: Fields) -> bool:
    """DATE_IN_PAST_96_XX: the Date is 96 hours or more before the earliest time in the trace (four
    days before its first hop: spamware reusing an old Date, or a clock years off)."""
    date = fields.date_time
    if date is None:
        return False
    # The earliest time is 96 hours after the Date exactly when every time is: stop at the first that
    # is not, which on most mail is the first one read (most Received dates are costly to parse).
    seen = False
    for index, value in enumerate(fields.received[:20]):
        when = fields.arrival_time if index == 0 else _received_time(value)
        if when is None:
            continue
        if date - when > -96 * HOUR:
            return False
        seen = True
    return seen


# --- senders --------------------------------------------------------------------------------------

_ADDRESS_DOMAIN = re.compile(r"@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")


def _domain(value: str) -> str:
    angle = value.rfind("<")
    match = _ADDRESS_DOMAIN.search(value, max(angle, 0))
    return match.group(1).lower().rstrip(".") if match else ""


FREEMAIL = {
    "hotmail.com": ("hotmail.com", "msn.com", "outlook.com"),
    "msn.com": ("hotmail.com", "msn.com", "outlook.com"),
    "yahoo.com": ("yahoo.com", "yahoo.net"),
    "aol.com": ("aol.com",),
    "excite.com": ("excite.com",),
    "lycos.com": ("lycos.com",),
    "juno.com": ("juno.com",),
    "netscape.net": ("aol.com", "netscape.net", "netscape.com"),
    "gmail.com": ("google.com", "gmail.com"),
    "mail.com": ("mail.com",),
    "usa.net": ("usa.net",),
    "earthlink.net": ("earthlink.net",),
}
"""Large free mail providers, and the domains their own relays' names are in."""


def freemail_from(fields: Fields) -> str:
    domain = _domain(fields.get("from"))
    return domain if domain in FREEMAIL else ""


def forged_freemail_rcvd(fields: Fields) -> bool:
    """FORGED_FREEMAIL_RCVD (SpamAssassin's FORGED_HOTMAIL_RCVD2, FORGED_YAHOO_RCVD): a From at a large
    free mail provider, but no Received names one of the provider's hosts."""
    domain = freemail_from(fields)
    if not domain or not fields.received:
        return False
    own = FREEMAIL[domain]
    return not any(name in value.lower() for value in fields.received for name in own)


def freemail_no_rdns(fields: Fields) -> bool:
    """FREEMAIL_NO_RDNS (SpamAssassin's SPOOFED_FREEMAIL_NO_RDNS): a From at a large free mail provider,
    handed over by a relay without reverse DNS (the providers' relays all have names)."""
    return bool(freemail_from(fields)) and rdns_none(fields)


FREEMAIL_REPLY = frozenset(
    {
        *FREEMAIL,
        *("hotmail.co.uk", "yahoo.co.uk", "aol.co.uk", "lycos.co.uk", "excite.co.uk", "netscape.com"),
        *("mail.ru", "bk.ru", "yandex.ru", "gmx.net", "gmx.de", "web.de", "163.com", "sina.com"),
        *("rediffmail.com", "walla.com", "email.com", "latinmail.com", "caramail.com", "eudoramail.com"),
        *("terra.es", "tiscali.it", "libero.it", "virgilio.it", "wanadoo.fr", "compuserve.com"),
        *("att.net", "prodigy.net", "mindspring.com", "ureach.com", "fastmail.fm", "postmark.net"),
    }
)
"""Free mail providers anyone can take an address at, for the Reply-To rule."""


def freemail_replyto(fields: Fields) -> bool:
    """FREEMAIL_REPLYTO: replies go to an address at a free mail provider, in another domain than the
    From: spam sent from anywhere collects its answers at a mailbox it can keep."""
    reply = _domain(fields.get("reply-to"))
    if reply not in FREEMAIL_REPLY:
        return False
    sender = _domain(fields.get("from"))
    return not sender or registered_domain(sender) != registered_domain(reply)


def xprio_high(fields: Fields) -> bool:
    """XPRIO_HIGH: X-Priority 1 or 2 (bulk mailers mark their mail urgent; few people do)."""
    return fields.get("x-priority").strip()[:1] in ("1", "2")


TRACE_RULES: dict[str, Callable[[Fields], bool]] = {
    "FORGED_MUA_OUTLOOK": forged_mua_outlook,
    "MSGID_OUTLOOK_INVALID": msgid_outlook_invalid,
    "RATWARE_MS_HASH": ratware_ms_hash,
    "RDNS_NONE": rdns_none,
    "INVALID_DATE": invalid_date,
    "DATE_IN_FUTURE_03_XX": date_in_future,
    "DATE_IN_PAST_96_XX": date_in_past,
    "FORGED_FREEMAIL_RCVD": forged_freemail_rcvd,
    "FREEMAIL_NO_RDNS": freemail_no_rdns,
    "FREEMAIL_REPLYTO": freemail_replyto,
    "XPRIO_HIGH": xprio_high,
}
"""Every rule of this module by name, in the order they are reported."""


def trace_rules(headers: list[tuple[str, str]]) -> list[str]:
    """The names of the rules of this module that a message's header fields hit."""
    return trace_hits(Fields.of(headers))


def trace_hits(fields: Fields) -> list[str]:
    """:func:`trace_rules` on fields already gathered (the scoring's other header checks read them
    too)."""
    return [name for name, check in TRACE_RULES.items() if check(fields)]


# --- body -----------------------------------------------------------------------------------------

MAX_RULE_PARTS = 16
"""Leaf parts the body rules look at."""
MAX_RULE_TEXT = 100_000
"""Characters (octets for the raw rules) of each part the body rules read."""


@dataclass(frozen=True)
class Body:
    """What the body rules read: the leaf parts (at most :data:`MAX_RULE_PARTS`), the decoded
    text/plain and text/html parts and the text of the HTML, each cut at :data:`MAX_RULE_TEXT`."""

    message: ParsedMessage
    plain: list[str]
    html: list[str]
    html_text: list[str]

    @classmethod
    def of(cls, message: ParsedMessage) -> Body:
        plain: list[str] = []
        markup: list[str] = []
        for part in message.parts[:MAX_RULE_PARTS]:
            if part.content_type == "text/plain":
                plain.append(part_text(part)[:MAX_RULE_TEXT])
            elif part.content_type == "text/html":
                markup.append(part_text(part)[:MAX_RULE_TEXT])
        return cls(message, plain, markup, [html_text(text, [])[:MAX_RULE_TEXT] for text in markup])

    @property
    def parts(self) -> list[Part]:
        return self.message.parts[:MAX_RULE_PARTS]


def mime_qp_long_line(body: Body) -> bool:
    """MIME_QP_LONG_LINE: a quoted-printable part with a line over 76 characters, which the encoding
    forbids (RFC 2045): bulk mailers that write the field and not the encoding."""
    for part in body.parts:
        if part.encoding != "quoted-printable":
            continue
        for line in part.payload[:MAX_RULE_TEXT].split(b"\n"):
            if len(line) > 77 or (len(line) == 77 and not line.endswith(b"\r")):
                return True
    return False


def cte_8bit_mismatch(body: Body) -> bool:
    """CTE_8BIT_MISMATCH: a text/plain part that declares no transfer encoding, or 7bit, and has
    8-bit octets."""
    # bytes.isascii() says the same as searching for an octet of 0x80 or more, several times faster.
    return any(
        part.content_type == "text/plain"
        and part.encoding in ("", "7bit")
        and not part.payload[:MAX_RULE_TEXT].isascii()
        for part in body.parts
    )


_DEAR = re.compile(
    r"\bDear (?:IT\W|Internet|candidate|sirs?|madam|investor|travell?er|car shopper|web|friends?|"
    r"homeowner|valued|member|customer|user|subscriber|account)\b",
    re.IGNORECASE,
)


def dear_something(body: Body) -> bool:
    """DEAR_SOMETHING: a salutation to nobody in particular ("Dear Friend", "Dear Sir/Madam",
    "Dear Investor"): SpamAssassin's DEAR_SOMETHING and DEAR_FRIEND, and a few more of the kind."""
    # The pattern can only match where "dear " is, in any case: no character but the ASCII letters
    # is case-equivalent to d, e, a or r for the re module, and none lower-cases to them. So looking
    # for it in the lower-cased text first (in C, fast) skips the costly case-blind search on
    # nearly all mail without changing any result.
    return any(_has_dear(text) for text in (*body.plain, *body.html_text))


def _has_dear(text: str) -> bool:
    r"""Whether :data:`_DEAR` matches somewhere in ``text``. A match starts where the lower-cased text has
    ``dear ``; where lower-casing keeps every character one character (all text but that with ``İ``), the
    positions are the same, and matching there alone spares the search of the rest (``\b`` still sees
    the character before the position)."""
    lowered = text.lower()
    start = lowered.find("dear ")
    if start < 0:
        return False
    if len(lowered) != len(text):
        return _DEAR.search(text) is not None
    while start >= 0:
        if _DEAR.match(text, start) is not None:
            return True
        start = lowered.find("dear ", start + 1)
    return False


BLANK_RUN = 25
"""Blank lines in a row that MANY_BLANK_LINES hits at."""


def many_blank_lines(body: Body) -> bool:
    """MANY_BLANK_LINES: a text/plain part with 25 or more blank lines in a row, which pushes what
    follows (the opt-out line, the real content) below the first screen."""
    for text in body.plain:
        run = 0
        for line in text.splitlines():
            if line.strip():
                run = 0
                continue
            run += 1
            if run >= BLANK_RUN:
                return True
    return False


_HTTP_TO_IP = re.compile(
    r"https?://(?:[^\s/@\"'<>]{0,100}@)?(\d{1,3})\.(\d{1,3})\.\d{1,3}\.\d{1,3}(?![\w.-])", re.IGNORECASE
)
_HTTP_TO_IP_HINT = re.compile(r"://(?:[^\s/@\"'<>]{0,100}@)?\d", re.IGNORECASE)
"""The middle of :data:`_HTTP_TO_IP`, with the same flags: wherever that matches, this does too. It
starts with a literal, which the re module finds fast, where the case-blind ``h`` forces a try at
every position: a text without it is skipped at a fraction of the cost."""


def normal_http_to_ip(body: Body) -> bool:
    """NORMAL_HTTP_TO_IP: a link to a public dotted IPv4 address instead of a host name (a server
    that has none, or hides it), in the text or the HTML of the message."""
    return any(_public_ip_link(text) for text in (*body.plain, *body.html))


def _public_ip_link(text: str) -> bool:
    """Whether a match of :data:`_HTTP_TO_IP` in ``text`` is a public address. Every match has its
    ``://`` where :data:`_HTTP_TO_IP_HINT` matches, 4 or 5 characters (``http``, ``https``) after its
    start; no match can hold another's ``://`` (the user part takes no ``/``), so the matches that
    ``finditer`` gives are exactly those found at the hint's places, and the case-blind pattern, which
    tries every position of the text, runs at those few alone."""
    for hint in _HTTP_TO_IP_HINT.finditer(text):
        start = hint.start()
        match = _HTTP_TO_IP.match(text, start - 5) if start >= 5 else None
        if match is None and start >= 4:
            match = _HTTP_TO_IP.match(text, start - 4)
        if match is not None and not _private(match.groups()):
            return True
    return False


BODY_RULES: dict[str, Callable[[Body], bool]] = {
    "MIME_QP_LONG_LINE": mime_qp_long_line,
    "CTE_8BIT_MISMATCH": cte_8bit_mismatch,
    "DEAR_SOMETHING": dear_something,
    "MANY_BLANK_LINES": many_blank_lines,
    "NORMAL_HTTP_TO_IP": normal_http_to_ip,
}
"""The body rules by name, in the order they are reported."""


def body_rules(message: ParsedMessage) -> list[str]:
    """The names of the body rules a message hits."""
    body = Body.of(message)
    return [name for name, check in BODY_RULES.items() if check(body)]
