"""SPF record syntax (RFC 7208 §4.6, §12): a record is parsed whole before any term is evaluated,
because a syntax error anywhere makes the whole record a ``permerror`` (§4.6)."""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
from dataclasses import dataclass

from mailtoaster.auth.spf.macro import MacroSyntaxError, parse_domain_spec, parse_macro_string


class SpfSyntaxError(ValueError):
    """The record does not follow the RFC 7208 grammar; the message says where."""


class Qualifier(enum.Enum):
    PASS = "+"
    FAIL = "-"
    SOFTFAIL = "~"
    NEUTRAL = "?"


class Mechanism(enum.StrEnum):
    ALL = "all"
    INCLUDE = "include"
    A = "a"
    MX = "mx"
    PTR = "ptr"
    IP4 = "ip4"
    IP6 = "ip6"
    EXISTS = "exists"


DNS_MECHANISMS = frozenset({Mechanism.INCLUDE, Mechanism.A, Mechanism.MX, Mechanism.PTR, Mechanism.EXISTS})
"""Mechanisms that count towards the 10-lookup limit of §4.6.4 (with the ``redirect`` modifier)."""


@dataclass(frozen=True)
class Directive:
    qualifier: Qualifier
    mechanism: Mechanism
    domain_spec: str | None = None
    """Unexpanded domain-spec for include/a/mx/ptr/exists; None means "the current domain"."""
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    """For ip4/ip6."""
    cidr4: int = 32
    cidr6: int = 128
    text: str = ""
    """The term as written, for reports and the Received-SPF ``mechanism`` key."""


@dataclass(frozen=True)
class SpfRecord:
    text: str
    directives: tuple[Directive, ...]
    redirect: str | None = None
    explanation: str | None = None
    unknown_modifiers: tuple[tuple[str, str], ...] = ()


_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9\-_.]*)=(.*)$", re.S)
_MECHANISM = re.compile(r"^([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)$", re.S)
_CIDR4 = r"(?:0|[1-9][0-9]?)"
_CIDR6 = r"(?:0|[1-9][0-9]{0,2})"
_DUAL_CIDR = re.compile(rf"^(?P<spec>.*?)(?:/(?P<c4>{_CIDR4}))?(?://(?P<c6>{_CIDR6}))?$", re.S)
_QNUM = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])"
_IP4_NETWORK = re.compile(rf"^(?P<ip>{_QNUM}(?:\.{_QNUM}){{3}})(?:/(?P<len>{_CIDR4}))?$")
_IP6_NETWORK = re.compile(rf"^(?P<ip>[0-9A-Fa-f:.]+)(?:/(?P<len>{_CIDR6}))?$")
_VERSION = re.compile(r"^v=spf1(?: |$)", re.I)


def is_spf1_record(text: str) -> bool:
    """RFC 7208 §4.5: the version section is exactly ``v=spf1`` followed by a space or the end."""
    return _VERSION.match(text) is not None


@functools.lru_cache(maxsize=1024)
def parse_record(text: str, version_prefix_length: int = 6) -> SpfRecord:
    """Parse a record whose version section (``v=spf1`` or a Sender ID ``spf2.0/<scopes>``) is
    ``version_prefix_length`` characters long. Raises :class:`SpfSyntaxError`.

    Cached: a server sees the same few records over and over (every message from a domain checks
    its record, SPF and Sender ID alike), parsing one showed in profiles, and the result is frozen."""
    if not text.isascii() or any(not (0x20 <= ord(ch) <= 0x7E) for ch in text):
        raise SpfSyntaxError("record contains characters outside printable US-ASCII")
    directives: list[Directive] = []
    redirect: str | None = None
    explanation: str | None = None
    unknown: list[tuple[str, str]] = []
    for term in text[version_prefix_length:].split(" "):
        if not term:
            continue
        modifier = _MODIFIER.match(term)
        if modifier:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp"):
                if (redirect if name == "redirect" else explanation) is not None:
                    raise SpfSyntaxError(f"the {name}= modifier appears more than once")
                _check_domain_spec(value, term)
                if name == "redirect":
                    redirect = value
                else:
                    explanation = value
            else:
                _check_macro_string(value, term, exp_letters=True)
                unknown.append((name, value))
            continue
        directives.append(_parse_directive(term))
    return SpfRecord(text, tuple(directives), redirect, explanation, tuple(unknown))


def _check_domain_spec(spec: str, term: str) -> None:
    try:
        parse_domain_spec(spec)
    except MacroSyntaxError as exc:
        raise SpfSyntaxError(f"invalid domain-spec in {term!r}: {exc}") from exc


def _check_macro_string(value: str, term: str, exp_letters: bool) -> None:
    try:
        parse_macro_string(value, exp_letters=exp_letters)
    except MacroSyntaxError as exc:
        raise SpfSyntaxError(f"invalid macro-string in {term!r}: {exc}") from exc


def _parse_directive(term: str) -> Directive:
    match = _MECHANISM.match(term)
    if match is None:
        raise SpfSyntaxError(f"unknown term {term!r}")
    qualifier = Qualifier(match.group(1) or "+")
    try:
        mechanism = Mechanism(match.group(2).lower())
    except ValueError:
        raise SpfSyntaxError(f"unknown mechanism {match.group(2)!r} in {term!r}") from None
    rest = match.group(3)
    if mechanism is Mechanism.ALL:
        if rest:
            raise SpfSyntaxError(f"'all' takes no argument: {term!r}")
        return Directive(qualifier, mechanism, text=term)
    if mechanism in (Mechanism.IP4, Mechanism.IP6):
        return _parse_ip_directive(qualifier, mechanism, rest, term)
    if mechanism in (Mechanism.A, Mechanism.MX):
        cidr = _DUAL_CIDR.match(rest)
        assert cidr is not None  # every string matches: the groups are optional
        spec = _optional_domain_spec(cidr.group("spec"), term)
        cidr4 = int(cidr.group("c4")) if cidr.group("c4") else 32
        cidr6 = int(cidr.group("c6")) if cidr.group("c6") else 128
        if cidr4 > 32 or cidr6 > 128:
            raise SpfSyntaxError(f"CIDR length out of range in {term!r}")
        return Directive(qualifier, mechanism, spec, cidr4=cidr4, cidr6=cidr6, text=term)
    if mechanism is Mechanism.PTR:
        return Directive(qualifier, mechanism, _optional_domain_spec(rest, term), text=term)
    if not rest.startswith(":"):
        raise SpfSyntaxError(f"{mechanism} requires ':domain-spec' in {term!r}")
    spec = rest[1:]
    _check_domain_spec(spec, term)
    return Directive(qualifier, mechanism, spec, text=term)


def _optional_domain_spec(rest: str, term: str) -> str | None:
    if not rest:
        return None
    if not rest.startswith(":"):
        raise SpfSyntaxError(f"unexpected {rest!r} in {term!r}")
    _check_domain_spec(rest[1:], term)
    return rest[1:]


def _parse_ip_directive(qualifier: Qualifier, mechanism: Mechanism, rest: str, term: str) -> Directive:
    if not rest.startswith(":"):
        raise SpfSyntaxError(f"{mechanism} requires an address in {term!r}")
    pattern = _IP4_NETWORK if mechanism is Mechanism.IP4 else _IP6_NETWORK
    found = pattern.match(rest[1:])
    if found is None:
        raise SpfSyntaxError(f"invalid {mechanism} network in {term!r}")
    try:
        address = ipaddress.ip_address(found.group("ip"))
    except ValueError:
        raise SpfSyntaxError(f"invalid {mechanism} address in {term!r}") from None
    if (mechanism is Mechanism.IP4) != (address.version == 4):
        raise SpfSyntaxError(f"{mechanism} with an address of the wrong family in {term!r}")
    length = int(found.group("len")) if found.group("len") else address.max_prefixlen
    if length > address.max_prefixlen:
        raise SpfSyntaxError(f"CIDR length out of range in {term!r}")
    network = ipaddress.ip_network(f"{address}/{length}", strict=False)
    return Directive(qualifier, mechanism, network=network, text=term)
