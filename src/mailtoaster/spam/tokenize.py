"""The tokenizer: a message's distinct tokens, the evidence the Bayes classifier counts.

Modelled on SpamBayes' tokenizer, whose choices were each measured on real mail:

* **Body words** are the lower-cased, white-space separated runs of 3 to 12 characters, punctuation
  kept (``free!`` and ``free`` are different evidence); longer runs become a ``skip:`` token that keeps
  only their first character and length class, so a base64 blob or a run-together Chinese sentence
  is one token, not noise. Adjacent words also make a bigram token (``bi:free money``).
* **HTML** is reduced to its text (comments, style and script dropped, so a word split by ``<!-- -->``
  comes back whole); the tag names it used, and every URL in ``href``/``src``, are tokens too.
* **URLs** give their host and its parent domains (``url:example.com``), path pieces and the marks of
  obfuscation (an IP address, ``%`` escapes, a user name before ``@``).
* **Header tokens** carry the field name (``subject:free``, ``from:domain:example.com``,
  ``header:X-Mailer``): the same word means different things in a Subject and in a body.
* **Non-text parts** give their type and file name extension.

Which header fields are left out, and why: delivery fields (``Delivered-To``, ``X-Original-To``)
say how the message reached *this* mailbox, not what it is, and in the SpamAssassin corpus they are
full of the collector's obfuscated addresses, which would make the classifier learn the collection,
not the spam; the recipients (``To``, ``Cc``) likewise give only their structure (how many,
"undisclosed"), never who they are; ``Date`` values date the collection; fields a mail reader writes
into its own storage (``Status``, ``X-Keywords``, ``Delivery-Date``, ...) say nothing about the sender;
and the fields this server adds itself (``X-Spam-*``, ``Authentication-Results``, ``Received-SPF``)
would make the filter learn its own past verdicts — the authentication results count through the
scoring rules instead. ``Received`` gives its relay structure only (:func:`received_tokens`): the
public hops' addresses, names, HELO and protocol, no dates, ids or recipients.

Every message gives at most :data:`MAX_TOKENS` distinct tokens, header tokens first.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from email.header import decode_header, make_header
from functools import lru_cache
from itertools import pairwise
from typing import TypeVar

from mailtoaster.spam.mime import ParsedMessage, parse_message, part_text

MAX_TOKENS = 3000
"""Distinct tokens kept per message (a long newsletter has about this many; scoring reads 150)."""
MIN_WORD = 3
MAX_WORD = 12
MAX_URLS = 100
"""URLs tokenized per message."""
MAX_VALUE = 60
"""Characters of a header value kept in a whole-value token (``x-mailer:...``)."""
MAX_TEXT = 200_000
"""Characters of text tokenized over all the parts."""

IGNORED_FIELDS = frozenset(
    {
        "delivered-to",
        "x-original-to",
        "envelope-to",
        "x-envelope-to",
        "date",
        "delivery-date",
        "x-original-date",
        "status",
        "x-status",
        "x-keywords",
        "x-uid",
        "x-uidl",
        "lines",
        "content-length",
        "x-mozilla-status",
        "x-mozilla-status2",
        "x-evolution",
        "x-imap",
        "x-imapbase",
        "authentication-results",
        "received-spf",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
    }
)
"""Fields that give no token at all (see the module docstring for why)."""

_WORD_SPLIT = re.compile(r"[\s\x00-\x1f]+")
_CONTROL_CHARS = tuple(chr(code) for code in (*range(0x00, 0x09), *range(0x0E, 0x1C)))
"""The characters _WORD_SPLIT splits on that ``str.isspace`` (and so ``str.split``) does not take."""
_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"'()\[\]{}]+")
_HTML_URL = re.compile(r"""(?:href|src|action|background)\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_HTML_URL_LOWER = re.compile(_HTML_URL.pattern)
"""_HTML_URL for text in lower case: five times faster than ignoring case, the costliest step of HTML."""
_EMAIL_DOMAIN = re.compile(r"@([a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+)")
_URL_PIECE = re.compile(r"[/?&=#.;:,_+~!*()-]+")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_HTML_DROP = re.compile(r"<!--.*?-->|<(style|script)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_BREAK = re.compile(
    r"</?(?=[PpBbDdTtLlUuOoHhCc])(?:[Pp]|[Bb](?:[Rr]|[Oo][Dd][Yy]|[Ll][Oo][Cc][Kk\u212a][Qq][Uu][Oo][Tt][Ee])"
    r"|[Dd][Ii\u0131\u0130][Vv]|[Tt](?:[DdHhRr]|[Aa][Bb][Ll][Ee]|[Ii\u0131\u0130][Tt][Ll][Ee])|[Ll][Ii\u0131\u0130]"
    r"|[Uu][Ll]|[Oo](?:[Ll]|[Pp][Tt][Ii\u0131\u0130][Oo][Nn])|[Hh](?:\d|[Rr]|[Ee][Aa][Dd]|[Tt][Mm][Ll])"
    r"|[Cc][Ee][Nn][Tt][Ee][Rr])\b[^>]*>"
)
r"""The line-breaking tags (p, br, div, td, th, tr, li, ul, ol, table, h1-h9, hr, blockquote, title, center,
option, head, body, html), in any case. Written out case by case rather than with re.IGNORECASE, which
compares every letter case-blind at each ``<``, and grouped by first letter behind a look-ahead that
turns away the other tags at once: a third of the cost, the same matches. The classes hold every character
re.IGNORECASE takes for the letter (``ı`` and ``İ`` for i, the Kelvin sign for k); the order of the
names does not matter, as any name is followed by the same ``\b[^>]*>``. The tests hold it to the plain
form, the names as one alternation with re.IGNORECASE."""
_HTML_TAG = re.compile(r"<[^>]{0,2000}>")
_SUBJECT_WORD = re.compile(r"[\w$%'.-]+|[!?*$]{2,}")
_MESSAGE_ID = re.compile(r"<[^<>@\s]+@([^<>@\s]+)>")
_ANGLE_ADDRESS = re.compile(r"<([^<>]*)>")
_BARE_ADDRESS = re.compile(r"[^\s<>\"(),;:]+@[^\s<>\"(),;:]+")
_ENCODED_WORD = "=?"
_RECEIVED = re.compile(r"\s*from\s+(.*?)\s+by\s+(\S+)(.*)", re.DOTALL)
_RECEIVED_IP = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_RECEIVED_HOST = re.compile(r"(?<![\w.-])([a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)+)(?![\w.-])")
_RECEIVED_HELO = re.compile(r"\bhelo[= ]\s*([^\s)\]]+)")
_RECEIVED_WITH = re.compile(r"\bwith\s+([a-z][\w-]*)")
_DYNAMIC_HOST = re.compile(r"dsl|dial|cable|pool|dyn|ppp|dhcp|client|host\d|\d+[-.]\d+[-.]\d+")
_ID_PIECE = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]")
_HEX_WITH_DIGIT = re.compile(
    r"(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{4,}|(?=[0-9A-F]*\d)(?=[0-9A-F]*[A-F])[0-9A-F]{4,}"
)
_BOUNDARY = re.compile(r'boundary\s*=\s*"?([^";]+)', re.IGNORECASE)
_HEX_RUN = re.compile(r"[0-9A-Fa-f]*\d[0-9A-Fa-f]*")
MAX_HOPS = 10
"""Received fields read per message (the earliest hops of a long trace are the sender's own claims)."""


def tokenize(data: bytes) -> list[str]:
    """The message's distinct tokens, header tokens first, at most :data:`MAX_TOKENS`. Never raises
    for any input: a message that cannot be read as mail still gives its words."""
    return tokenize_parsed(parse_message(data))


def tokenize_parsed(message: ParsedMessage) -> list[str]:
    """:func:`tokenize` for a message already parsed. The order is the message's own (header tokens,
    then the relations, then the body in reading order), so the same message always gives the same
    list, and the cap keeps the same tokens: forgetting a message takes away exactly what learning
    it added."""
    tokens = header_tokens(message.headers)
    body, url_domains = body_tokens(message)
    tokens += relation_tokens(message.headers, url_domains)
    tokens += body
    # One dictionary keeps each token's first place in all three: the parts are not deduplicated
    # on their own (the body's words least of all), as a second pass over them would cost as much.
    listed = list(dict.fromkeys(tokens))
    return listed[:MAX_TOKENS] if len(listed) > MAX_TOKENS else listed


# Header fields ------------------------------------------------------------------------------------


def header_tokens(headers: list[tuple[str, str]]) -> list[str]:
    """``header:Name`` for each field whose name is spelled other than the usual way (``Message-ID``,
    ``X-MimeOLE``: the spelling is a mailer's fingerprint), and the tokens of the values worth reading.

    A field's mere presence gives no token: cross-validation on the corpus (docs/spam.md) showed
    presence tokens costing accuracy, mailing-list fields above all, which spam sent through a list
    carries as much as the list's own mail does."""
    tokens: list[str] = []
    seen: set[str] = set()
    received: list[str] = []
    for name, value in headers:
        field = _FIELDS.get(name)
        if field is None:
            field = _remembered(_FIELDS, name, _field(name))
        lower, read, mark, handler = field
        if lower == "received":
            received.append(value)
        if not read or lower in seen:
            continue
        seen.add(lower)
        if mark:
            tokens.append(mark)
        if handler is not None:
            tokens.extend(handler(lower, _decoded(value)))
    tokens.extend("noheader:" + wanted for wanted in _EXPECTED_FIELDS if wanted not in seen)
    tokens.extend(received_tokens(received))
    return tokens


_FieldTokens = Callable[[str, str], list[str]]
_Field = tuple[str, bool, str, _FieldTokens | None]


def _field(name: str) -> _Field:
    """What a field name means to :func:`header_tokens`: (the name in lower case, whether the field is
    read at all, its ``header:`` token or ``""`` when the name is spelled the usual way, the handler
    of its value)."""
    lower = name.lower()
    read = lower not in IGNORED_FIELDS and not lower.startswith("x-spam-")
    mark = "header:" + name if name != _usual_spelling(name) else ""
    return lower, read, mark, _FIELD_TOKENS.get(lower)


_FIELDS: dict[str, _Field] = {}
""":func:`_field` of the names seen, remembered: a few dozen names make up nearly every header, and
working a name out each time was a third of the header's cost."""


def _usual_spelling(name: str) -> str:
    """``Message-Id`` for ``message-id``: each hyphenated word capitalised."""
    return "-".join(word.capitalize() for word in name.split("-"))


# The relays -----------------------------------------------------------------------------------------


def received_tokens(values: list[str]) -> list[str]:
    """The relay structure of the ``Received`` fields (newest first, as they stand in the header):
    for every hop whose client connected from a public address (or gave none), the client's IP
    address and its /24 and /16 (``rcvd:ip:203.0.113.7``, ``rcvd:ip:203.0.113``, ``rcvd:ip:203.0``),
    its host names and their parent domains (``rcvd:host:``), the HELO name (``rcvd:helo:``, or
    ``rcvd:helo-ip`` / ``rcvd:helo-nodot``), the receiving host (``rcvd:by:``), the protocol
    (``rcvd:with:esmtp``), and marks: a client without reverse DNS (``rcvd:unknown``), a dynamic-
    looking host name (``rcvd:dynamic``), a HELO in the reverse name's domain or not
    (``rcvd:helo-matches`` / ``rcvd:helo-differs``); and the number of hops (``rcvd:hops:N``).

    Dates, queue ids and recipients are left out (they date and address the collection, not the
    sender), and so are hops from loopback and private addresses: a site's own internal hand-offs
    (the local delivery agent, a fetchmail, a content filter) are the same for ham and spam."""
    if not values:
        return []
    tokens = [f"rcvd:hops:{min(len(values), MAX_HOPS)}"]
    for value in values[:MAX_HOPS]:
        tokens.extend(_relay_tokens(value))
    return tokens


def _relay_tokens(value: str) -> list[str]:
    value = value.partition(";")[0].lower()
    match = _RECEIVED.match(value)
    if match is None:
        return ["rcvd:nofrom"]
    client, by, rest = match.groups()
    client_tokens = _CLIENTS.get(client)
    if client_tokens is None:
        client_tokens = _remembered(_CLIENTS, client, _client_tokens(client))
    if not client_tokens:
        return []  # a private or loopback hop
    before, after = client_tokens
    by_tokens = _BYS.get(by)
    if by_tokens is None:
        by_tokens = _remembered(_BYS, by, _by_tokens(by))
    # The literal first: the search of a pattern that opens with \b tries every place of the text.
    start = rest.find("with")
    protocol = _RECEIVED_WITH.search(rest, start) if start >= 0 else None
    return [*before, *by_tokens, "rcvd:with:" + (protocol.group(1)[:20] if protocol else "none"), *after]


_T = TypeVar("_T")
_ClientTokens = tuple[tuple[str, ...], tuple[str, ...]] | tuple[()]
_CLIENTS: dict[str, _ClientTokens] = {}
"""The tokens of the client parts seen, remembered: a site's relays send many messages each (in the
corpus five in six clients have been seen before), and reading the client is the costliest step."""
_BYS: dict[str, tuple[str, ...]] = {}
"""The ``rcvd:by:`` tokens of the receiving hosts seen, remembered: a mailbox has few of them."""


def _remembered(cache: dict[str, _T], key: str, value: _T) -> _T:
    """``value``, remembered in ``cache`` under ``key``; the cache starts afresh when full, and long keys
    (rare, and hostile) are not kept, so no input can make it grow without bound."""
    if len(key) <= _MAX_REMEMBERED_KEY:
        if len(cache) >= _MAX_REMEMBERED:
            cache.clear()
        cache[key] = value
    return value


_MAX_REMEMBERED = 4096
"""Entries per cache of :func:`_remembered`."""
_MAX_REMEMBERED_KEY = 300
"""Characters of the longest key :func:`_remembered` keeps (a mailbox's names and relays are shorter)."""


def _client_tokens(client: str) -> _ClientTokens:
    """The tokens of a relay's client part (``from ...``): those that come before the receiving host's
    and those that come after the protocol; ``()`` for a hop from a private or loopback address."""
    address = _RECEIVED_IP.search(client)
    if address is not None and _private(address.groups()):
        return ()
    hosts = [host for host in _RECEIVED_HOST.findall(client) if not _RECEIVED_IP.fullmatch(host)][:3]
    words = client.split(None, 1)
    helo_given = _RECEIVED_HELO.search(client) if "helo" in client else None
    helo = (helo_given.group(1) if helo_given else words[0] if words else "").strip("[]()")
    before = []
    if address is not None:
        octets = address.groups()
        before.append("rcvd:ip:" + ".".join(octets))
        before.append("rcvd:ip:" + ".".join(octets[:3]))
        before.append("rcvd:ip:" + ".".join(octets[:2]))
    for host in hosts:
        before.append("rcvd:host:" + host[:MAX_VALUE])
        before.extend("rcvd:host:" + parent for parent in _parent_domains(host))
    if _RECEIVED_IP.fullmatch(helo):
        before.append("rcvd:helo-ip")
    elif "." not in helo:
        before.append("rcvd:helo-nodot")
        before.append("rcvd:helo:" + helo[:40])
    else:
        before.append("rcvd:helo:" + helo[:MAX_VALUE])
    after = []
    if address is None:
        after.append("rcvd:no-ip")
    if "unknown" in client:
        after.append("rcvd:unknown")
    if address is not None and any(_DYNAMIC_HOST.search(host) for host in hosts):
        after.append("rcvd:dynamic")
    if hosts and "." in helo:
        same = registered_domain(helo) == registered_domain(hosts[-1])
        after.append("rcvd:helo-matches" if same else "rcvd:helo-differs")
    return tuple(before), tuple(after)


def _by_tokens(by: str) -> tuple[str, ...]:
    return ("rcvd:by:" + by[:MAX_VALUE], *("rcvd:by:" + parent for parent in _parent_domains(by)))


def _private(octets: tuple[str, ...]) -> bool:
    """Loopback, RFC 1918 (and 0.0.0.0/8): a hop inside a site, not the sender's."""
    first, second = int(octets[0]), int(octets[1])
    return first in (0, 10, 127) or (first == 192 and second == 168) or (first == 172 and 16 <= second <= 31)


_EXPECTED_FIELDS = ("subject", "from", "message-id", "mime-version")


def _decoded(value: str) -> str:
    """RFC 2047 encoded words decoded (``=?utf-8?b?...?=``); the raw value when they are broken."""
    if _ENCODED_WORD not in value:
        return value
    try:
        return str(make_header(decode_header(value[:2000])))
    except (UnicodeError, LookupError, ValueError, TypeError, AssertionError):
        return value


def split_address(value: str) -> tuple[str, str]:
    """(display name, address in lower case) of the first mailbox in a From-like field; ``""`` for
    what is missing. Lenient and fast: a regular expression, not RFC 5322's grammar (the tokens only
    need the parts, and broken addresses are evidence, not errors)."""
    angle = _ANGLE_ADDRESS.search(value)
    if angle is not None:
        display = value[: angle.start()].strip().strip('"').strip()
        return display, angle.group(1).strip().lower()
    bare = _BARE_ADDRESS.search(value)
    if bare is None:
        return value.strip(), ""
    display = (value[: bare.start()] + value[bare.end() :]).strip().strip("()").strip('"').strip()
    return display, bare.group(0).lower()


def _subject_tokens(name: str, value: str) -> list[str]:
    words = [word.lower() for word in _SUBJECT_WORD.findall(value)]
    tokens = ["subject:" + word for word in words if len(word) <= 20]
    tokens.extend(f"subject:bi:{a} {b}" for a, b in pairwise(words))
    letters = [char for char in value if char.isalpha()]
    if len(letters) >= 8 and sum(char.isupper() for char in letters) > 0.8 * len(letters):
        tokens.append("subject:ALLCAPS")
    if not value.strip():
        tokens.append("subject:empty")
    return tokens


def _address_tokens(name: str, value: str) -> list[str]:
    display, address = split_address(value)
    local, at, domain = address.rpartition("@")
    tokens = []
    if at:
        tokens.append(f"{name}:addr:{address[:MAX_VALUE]}")
        tokens.append(f"{name}:domain:{domain[:MAX_VALUE]}")
        tokens.extend(f"{name}:domain:{parent}" for parent in _parent_domains(domain))
        if sum(char.isdigit() for char in local) >= 3:
            tokens.append(f"{name}:local-digits")
    else:
        tokens.append(f"{name}:no-address")
    if display:
        tokens.extend(f"{name}:name:{word}" for word in display.lower().split()[:8])
        if "@" in display:
            tokens.append(f"{name}:name-has-address")
    else:
        tokens.append(f"{name}:no-name")
    return tokens


def _domain_only_tokens(name: str, value: str) -> list[str]:
    domain = split_address(value)[1].rpartition("@")[2]
    return [f"{name}:domain:{domain[:MAX_VALUE]}" if domain else f"{name}:no-address"]


def _message_id_tokens(name: str, value: str) -> list[str]:
    match = _MESSAGE_ID.search(value)
    if match is None:
        return ["message-id:invalid"]
    left = match.group(0)[1:].partition("@")[0]
    return ["message-id:@" + match.group(1).lower()[:MAX_VALUE], "message-id:shape:" + id_shape(left)]


def id_shape(text: str) -> str:
    """The shape of a generated identifier (a Message-ID's left side): digit runs become ``9``,
    hexadecimal runs ``H``, letters ``a``/``A``/``Aa`` by case, punctuation stays. Every mailer,
    and every piece of spamware, writes its own (``H$H$H`` is Outlook's, ``9.9.a`` many a Unix
    mailer's), while the values themselves are all different."""
    out = []
    for piece in _ID_PIECE.findall(text[:200]):
        if piece.isdigit():
            out.append("9")
        elif _HEX_WITH_DIGIT.fullmatch(piece):
            out.append("H")
        elif piece.isalpha():
            out.append("a" if piece.islower() else "A" if piece.isupper() else "Aa")
        elif piece.isalnum():
            out.append("x")
        else:
            out.append(piece)
    return "".join(out)[:40]


def _recipient_tokens(name: str, value: str) -> list[str]:
    """How many addresses, none, or "undisclosed": the recipients' structure, never who they are."""
    count = value.count("@")
    tokens = [f"{name}:count:{min(count, 5)}"]
    if count == 0:
        tokens.append(f"{name}:no-address")
    if "undisclosed" in value.lower():
        tokens.append(f"{name}:undisclosed")
    return tokens


def _whole_value_tokens(name: str, value: str) -> list[str]:
    lowered = value.lower()
    tokens = [f"{name}:{lowered[:MAX_VALUE]}"]
    first = lowered.split(None, 1)
    if first and first[0] != lowered:
        tokens.append(f"{name}:{first[0][:MAX_VALUE]}")
    return tokens


def _content_type_tokens(name: str, value: str) -> list[str]:
    main = value.partition(";")[0].strip().lower()
    tokens = [f"content-type:{main[:MAX_VALUE]}"]
    boundary = _BOUNDARY.search(value)
    if boundary is not None:  # its shape is the mailer's: ----=_NextPart_H_H_H.H
        tokens.append("boundary:" + _HEX_RUN.sub("H", boundary.group(1))[:40])
    return tokens


def _word_tokens(name: str, value: str) -> list[str]:
    return [f"{name}:{word}" for word in value.lower().split()[:10] if len(word) <= 20]


_FIELD_TOKENS: dict[str, _FieldTokens] = {
    "subject": _subject_tokens,
    "from": _address_tokens,
    "reply-to": _address_tokens,
    "sender": _domain_only_tokens,
    "return-path": _domain_only_tokens,
    "errors-to": _domain_only_tokens,
    "message-id": _message_id_tokens,
    "x-mailer": _whole_value_tokens,
    "user-agent": _whole_value_tokens,
    "x-mimeole": _whole_value_tokens,
    "x-priority": _whole_value_tokens,
    "x-msmail-priority": _whole_value_tokens,
    "importance": _whole_value_tokens,
    "precedence": _whole_value_tokens,
    "list-id": _whole_value_tokens,
    "content-transfer-encoding": _whole_value_tokens,
    "mime-version": _whole_value_tokens,
    "content-type": _content_type_tokens,
    "organization": _word_tokens,
    "to": _recipient_tokens,
    "cc": _recipient_tokens,
}
"""Fields whose values give tokens; any other field counts by its presence only (``To`` and ``Cc``
among them: see the module docstring)."""


# How the sender's names relate ----------------------------------------------------------------------


def registered_domain(host: str) -> str:
    """The domain a host belongs to, near enough: the last two labels, three under a two-letter
    country code's ``co``/``com``/``ac``/... (``www.example.co.uk`` -> ``example.co.uk``). Good enough
    to compare a sender's domain with the domains its links go to, without a public suffix list."""
    labels = host.strip(".").split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go"})


def relation_tokens(headers: list[tuple[str, str]], url_domains: set[str]) -> list[str]:
    """How the sender's names agree with each other and with the links: a newsletter the reader
    asked for links to its sender's own site and is sent from it, spam mostly points elsewhere. One
    token per relation, so the classifier learns what agreement means, not only who agrees."""
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name.lower(), value)
    from_domain = registered_domain(split_address(first.get("from", ""))[1].rpartition("@")[2])
    tokens = []
    if url_domains:
        tokens.append("rel:url-from" if from_domain in url_domains else "rel:url-elsewhere")
        if len(url_domains) == 1:
            tokens.append("rel:url-one-domain")
    match = _MESSAGE_ID.search(first.get("message-id", ""))
    if match is not None:
        aligned = registered_domain(match.group(1).lower()) == from_domain
        tokens.append("rel:msgid-from" if aligned else "rel:msgid-elsewhere")
    for field in ("return-path", "reply-to"):
        if field in first:
            domain = registered_domain(split_address(first[field])[1].rpartition("@")[2])
            tokens.append(f"rel:{field}-" + ("from" if domain == from_domain else "elsewhere"))
    return tokens


# Body ---------------------------------------------------------------------------------------------


def body_tokens(message: ParsedMessage) -> tuple[list[str], set[str]]:
    """The body's tokens, and the registered domains its URLs point to."""
    tokens: list[str] = []
    texts: list[str] = []
    urls: list[str] = []
    html_seen = plain_seen = False
    budget = MAX_TEXT
    for part in message.parts:
        tokens.append("part:" + part.content_type)
        if part.charset:
            tokens.append("charset:" + part.charset[:40])
        if part.encoding:
            tokens.append("cte:" + part.encoding[:40])
        if part.filename:
            tokens.extend(_filename_tokens(part.filename))
        if budget <= 0:
            continue
        text = part_text(part)[:budget]
        if not text:
            continue
        if part.content_type == "text/html" or text.lstrip()[:200].lower().startswith(("<html", "<!doc")):
            html_seen = True
            text = html_text(text, urls)
        elif part.content_type.startswith("text/"):
            plain_seen = True
        budget -= len(text)
        texts.append(text)
    if html_seen and not plain_seen:
        tokens.append("html:only")
    if message.truncated:
        tokens.append("body:truncated")
    text = "\n".join(texts).lower()
    if not text or text.isspace():
        tokens.append("body:empty")
        return tokens, set()
    if "://" in text or "www." in text:
        urls.extend(_URL.findall(text))
    url_domains: set[str] = set()
    for url in urls[:MAX_URLS]:
        reading = _URLS.get(url)
        if reading is None:
            reading = _remembered(_URLS, url, _url_reading(url))
        tokens += reading[1]
        url_domains.add(reading[0])
    if "@" in text:
        tokens.extend("email:" + domain for domain in _EMAIL_DOMAIN.findall(text))
    tokens += _word_list(text)
    tokens.append(_eight_bit_token(text))
    return tokens, url_domains


def _filename_tokens(filename: str) -> list[str]:
    _base, dot, extension = filename.lower().rpartition(".")
    tokens = ["part:filename"]
    if dot and 0 < len(extension) <= 8:
        tokens.append("part:ext:" + extension)
    return tokens


def html_text(markup: str, urls: list[str]) -> str:
    """The text of an HTML part; the URLs of its links and images go to ``urls``."""
    text, found = _html_reading(markup)
    urls.extend(found)
    return text


@lru_cache(maxsize=8)
def _html_reading(markup: str) -> tuple[str, tuple[str, ...]]:
    """(text, URLs) of some HTML; the URLs in lower case, as :func:`url_tokens` reads them. Remembered
    for the last few texts: the tokenizer and the body rules read the same part's HTML, and its regular
    expressions are the costliest step of either."""
    urls = tuple(_html_urls(markup))
    text = _HTML_DROP.sub("", markup)
    text = _HTML_BREAK.sub(" ", text)
    text = _HTML_TAG.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    return text, urls


def _html_urls(markup: str) -> list[str]:
    """The URLs of the links and images, in lower case. The markup is searched in lower case (the same
    matches, in a fifth of the time) unless it holds one of :data:`_CASE_TRAPS`; such text with the
    pattern that ignores case, whose Unicode case folding (``ſ`` matches ``s``, the Kelvin sign ``k``)
    lower-casing the text would not give."""
    if markup.isascii() or not _holds_any(markup, _CASE_TRAPS):
        return _HTML_URL_LOWER.findall(markup.lower())
    return [url.lower() for url in _HTML_URL.findall(markup)]


_CASE_TRAPS = ("\u017f", "\u212a", "\u0130", "\u0131", "\u03a3")
"""The characters that make :func:`_html_urls` on lower-cased text differ from the case-blind search: ``ſ``
and ``ı`` that re.IGNORECASE takes for ``s`` and ``i`` and lower-casing keeps, the Kelvin sign and ``İ``
that lower-case to ``k`` and ``i`` (``İ`` to two characters), and ``Σ``, whose lower case depends on the
letters around it. For every other character ``c``, re.IGNORECASE matches ``c`` in :data:`_HTML_URL`
exactly where ``c.lower()`` matches in :data:`_HTML_URL_LOWER`, and one character stays one: so the
lower-cased text gives the same URLs, in lower case, at a quarter of the cost."""


def word_tokens(text: str) -> list[str]:
    """Words of 3 to 12 characters, ``skip:`` tokens for longer runs, and ``bi:`` bigrams of adjacent
    words, in reading order, each once. ``text`` is already in lower case."""
    return list(dict.fromkeys(_word_list(text)))


def _word_list(text: str) -> list[str]:
    """:func:`word_tokens` with the repeats left in: :func:`tokenize_parsed` removes them once, over
    the whole message, which keeps the same first places."""
    # str.split() splits on exactly the white space _WORD_SPLIT does, but for the control characters
    # that are not white space: the regular expression only when one is there (rare), as it is slower.
    words = _WORD_SPLIT.split(text) if _holds_any(text, _CONTROL_CHARS) else text.split()
    tokens = [word if len(word) <= MAX_WORD else _skip_token(word) for word in words if len(word) >= MIN_WORD]
    kept = [word if MIN_WORD <= len(word) <= MAX_WORD else None for word in words]
    tokens += [f"bi:{a} {b}" for a, b in pairwise(kept) if a and b]
    return tokens


def _holds_any(text: str, characters: tuple[str, ...]) -> bool:
    """Whether ``text`` holds one of ``characters`` (:data:`_CONTROL_CHARS`, :data:`_CASE_TRAPS`): a
    substring test per character, in C, is ten times faster than a regular expression's search, which
    reads the text a character at a time."""
    return any(map(text.__contains__, characters))


def _skip_token(word: str) -> str:
    return f"skip:{word[0]} {len(word) // 10 * 10}"


def _url_reading(url: str) -> tuple[str, tuple[str, ...]]:
    """(registered domain, tokens) of a URL."""
    host, tokens = url_tokens(url)
    return registered_domain(host), tuple(tokens)


_URLS: dict[str, tuple[str, tuple[str, ...]]] = {}
""":func:`_url_reading` of the URLs seen, remembered: a mailing list's footer, a sender's links and
images come back in message after message (more than half the URLs of the corpus)."""


def url_tokens(url: str) -> tuple[str, list[str]]:
    """A URL's host, and its tokens: the host, its parent domains, path pieces and the marks of
    obfuscation (an IP address, ``%`` escapes, a user name before ``@``, a port)."""
    lowered = url.lower()
    _scheme, separator, rest = lowered.partition("://")
    if not separator:
        rest = lowered
    host, _slash, path = rest.partition("/")
    host = host.split("?", 1)[0].split("#", 1)[0]
    tokens = []
    if "@" in host:
        tokens.append("url:userinfo")
        host = host.rpartition("@")[2]
    if ":" in host:
        tokens.append("url:port")
        host = host.partition(":")[0]
    if "%" in lowered:
        tokens.append("url:%escape")
    if _IPV4.fullmatch(host):
        tokens.append("url:ip")
    host = host[:MAX_VALUE]
    tokens.append("url:" + host)
    tokens.extend("url:" + parent for parent in _parent_domains(host))
    tokens.extend("url:" + piece for piece in _URL_PIECE.split(path)[:8] if 3 <= len(piece) <= 15)
    return host, tokens


def _parent_domains(domain: str) -> Iterable[str]:
    labels = domain.split(".")
    if len(labels) > 2 and not _IPV4.fullmatch(domain):
        yield ".".join(labels[-2:])
        if len(labels) > 3:
            yield ".".join(labels[-3:])


def _eight_bit_token(text: str) -> str:
    """The share of non-ASCII characters, in tenths: foreign-language spam in one token."""
    if text.isascii():
        return "8bit%:0"
    sample = text[:20_000]
    foreign = len(sample) - len(sample.encode("ascii", "ignore"))
    return f"8bit%:{foreign * 10 // len(sample)}"
