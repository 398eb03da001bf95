"""What the doctor reports, as plain data: findings with a severity, and the records that fix them.

Every check returns :class:`Finding` values and nothing else, so the text report, the JSON document
and the exit status are all read off the same list. A suggested record is carried already written
in both publishing forms (BIND master file and tinydns-data), by the ``dns records`` writers, so what
``check`` tells you to publish is exactly what ``dns records`` would print.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from mailtoaster.dns.types import MX, IPAddress, RRType
from mailtoaster.records import DEFAULT_TTL, DnsRecord, bind_line, tinydns_escape, tinydns_line


class Severity(enum.IntEnum):
    """Ordered so that the worst finding is the largest, and its value is the exit status."""

    OK = 0
    WARNING = 1
    ERROR = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Suggestion:
    """One record to publish, in both forms a zone is kept in."""

    name: str
    rrtype: str
    ttl: int
    data: str
    """The record data as text: the TXT text (unquoted), ``10 mail.example.com``, an address, a name."""
    bind: str
    tinydns: str
    purpose: str = ""


@dataclass(frozen=True)
class Finding:
    check: str
    """A stable identifier, ``<area>.<what>`` (``spf.lookups``, ``dkim.match``, ...)."""
    severity: Severity
    message: str
    suggestions: tuple[Suggestion, ...] = ()
    hint: str = ""
    """What to do when the fix is not (only) a record: a command to run, a record to delete."""


@dataclass(frozen=True)
class DoctorReport:
    domain: str
    findings: tuple[Finding, ...]

    @property
    def worst(self) -> Severity:
        return max((finding.severity for finding in self.findings), default=Severity.OK)

    @property
    def exit_code(self) -> int:
        """0 all good, 1 warnings, 2 errors."""
        return int(self.worst)

    def count(self, severity: Severity) -> int:
        return sum(1 for finding in self.findings if finding.severity is severity)


def ok(check: str, message: str) -> Finding:
    return Finding(check, Severity.OK, message)


def warning(check: str, message: str, suggestions: Iterable[Suggestion] = (), hint: str = "") -> Finding:
    return Finding(check, Severity.WARNING, message, tuple(suggestions), hint)


def error(check: str, message: str, suggestions: Iterable[Suggestion] = (), hint: str = "") -> Finding:
    return Finding(check, Severity.ERROR, message, tuple(suggestions), hint)


def suggest(record: DnsRecord) -> Suggestion:
    """A record computed by :mod:`mailtoaster.records`, written by its BIND and tinydns writers."""
    return Suggestion(
        record.name,
        str(record.rrtype),
        record.ttl,
        _data_text(record.data),
        bind_line(record),
        tinydns_line(record),
        record.purpose,
    )


def suggest_txt(name: str, text: str, purpose: str, ttl: int = DEFAULT_TTL) -> Suggestion:
    return suggest(DnsRecord(name, RRType.TXT, ttl, text, purpose))


def suggest_ptr(ip: IPAddress, host: str, ttl: int = DEFAULT_TTL) -> Suggestion:
    """A PTR record, which :mod:`mailtoaster.records` does not make (a domain's own zone never holds
    it: the owner of the address block publishes it). tinydns writes it as ``^fqdn:host:ttl``."""
    name = ip.reverse_pointer
    host = host.rstrip(".")
    tinydns = f"^{_tinydns_name(name)}:{_tinydns_name(host)}:{ttl}"
    return Suggestion(
        name,
        "PTR",
        ttl,
        host,
        f"{name}. {ttl} IN PTR {host}.",
        tinydns,
        f"reverse DNS of {ip}, set by whoever holds the address block",
    )


def _tinydns_name(name: str) -> str:
    return tinydns_escape(name.encode("ascii", errors="replace"))


def _data_text(data: str | MX | IPAddress) -> str:
    if isinstance(data, MX):
        return f"{data.preference} {data.exchange or '.'}"
    return str(data)


def printable(text: str, limit: int = 160) -> str:
    """Record text as it may be shown on a terminal: octets outside printable ASCII as ``\\xNN`` (a
    TXT record may hold any octet, and garbage must not garble the report), long text cut short."""
    shown = "".join(char if " " <= char <= "~" else _escaped(char) for char in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def without_controls(text: str) -> str:
    """``text`` with control characters escaped, other characters kept: for whole messages, which may
    quote record text through a parser's error message."""
    return "".join(_escaped(char) if char < " " or "\x7f" <= char <= "\x9f" else char for char in text)
