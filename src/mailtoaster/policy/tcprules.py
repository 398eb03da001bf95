"""tcpserver's client rules: the ``tcprules`` source format (``/etc/tcprules.d/tcp.smtp``) and its lookup.

A rule is one line, ``address:instructions``::

    127.:allow,RELAYCLIENT="",DKSIGN="/var/qmail/control/domainkeys/%/default"
    1.2.3.37-53:deny
    =.example.net:allow,CHKUSER_RCPTLIMIT="5"
    2001:db8::/32:allow
    :allow,SPFBEHAVIOR="3"

The syntax is ucspi-tcp 0.88's ``tcprules.c``; the IPv6 and CIDR forms are ucspi-tcp6's (Erwin
Hoffmann's fork, which carries Felix von Leitner's IPv6 patch). Where tcprules would store a key that
tcpserver can never look up (``01.2.3.4``, ``1.2.3.4.``, an address with a space in it), or would
silently store nothing (``1.2.3.9-5``), this parser refuses the line instead: a rule that can never
match is almost always a typo in the postmaster's file, and the place to say so is at load time.

Lookup is tcpserver's ``rules.c`` (ucspi-tcp6 order); see :func:`lookup_keys`. The first line in the
file wins for a key, because ``tcprules`` adds records in file order and ``cdb_find`` returns the first.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_RULES_FILE_BYTES = 16 * 1024 * 1024
"""A tcp.smtp with a million rules is about 40 MB of cdb; a source file this large is not a rules file."""

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_DECIMAL = re.compile(r"[0-9]+", re.ASCII)
_HOST_NAME = re.compile(r"\.?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?", re.ASCII)
_IPV4_TEXT = re.compile(r"[0-9.-]+", re.ASCII)
_IPV6_TEXT = re.compile(r"[0-9A-Fa-f:.]+", re.ASCII)
_DECISIONS = (("allow", True), ("deny", False))


class RulesError(ValueError):
    """The rules text is not valid; the message names the source and the line."""


@dataclass(frozen=True)
class Rule:
    """One line of the rules file."""

    key: str
    """The address as written on the line (``127.``, ``1.2.3.37-53``, ``=.example.net``, ``""``)."""
    allow: bool
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    """The variables the line sets, in file order (read-only). When a name is set twice the last value
    wins, as tcpserver sets them one after another."""
    line: int = 0
    source: str = "<rules>"


class RuleSet:
    """Parsed rules, looked up as tcpserver does; made by :func:`parse_rules` or :func:`load_rules`."""

    def __init__(self, source: str, rules: tuple[Rule, ...], table: Mapping[str, Rule]) -> None:
        self.source = source
        self.rules = rules
        """Every rule, in file order."""
        self._table = table
        self._v4_prefixes, self._v6_prefixes = _cidr_lengths(table)
        keyed = {id(rule) for rule in table.values()}
        self.shadowed = tuple(rule for rule in rules if id(rule) not in keyed)
        """Rules that can never match: every key they define was taken by an earlier line."""

    def __len__(self) -> int:
        return len(self.rules)

    def match(
        self, ip: str | IPAddress, hostname: str | None = None, *, info: str | None = None
    ) -> Rule | None:
        """The rule tcpserver would follow for a client, or None when no rule applies (tcpserver then
        allows the connection and sets nothing).

        ``hostname`` is the client's verified reverse name (``=`` forms match only when it is given);
        ``info`` is its RFC 1413 ident answer (``info@`` forms match only when it is given).
        """
        keys = lookup_keys(
            ip, hostname, info=info, v4_prefixes=self._v4_prefixes, v6_prefixes=self._v6_prefixes
        )
        for key in keys:
            rule = self._table.get(key)
            if rule is not None:
                return rule
        return None


def _cidr_lengths(table: Mapping[str, Rule]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The IPv4 and IPv6 prefix lengths the rules use, longest first, so a lookup tries only those.
    Only network keys hold a ``/`` (host names and ident forms cannot)."""
    networks = [ipaddress.ip_network(key) for key in table if "/" in key]
    v4 = {network.prefixlen for network in networks if network.version == 4}
    v6 = {network.prefixlen for network in networks if network.version == 6}
    return tuple(sorted(v4, reverse=True)), tuple(sorted(v6, reverse=True))


def lookup_keys(
    ip: str | IPAddress,
    hostname: str | None = None,
    *,
    info: str | None = None,
    v4_prefixes: tuple[int, ...] = tuple(range(32, 0, -1)),
    v6_prefixes: tuple[int, ...] = tuple(range(128, 0, -1)),
) -> tuple[str, ...]:
    """The keys tcpserver tries for a client, most specific first (ucspi-tcp6 ``rules.c``):

    1. ``info@ip`` and 2. ``info@=host`` (only with an ident answer);
    3. the address; 4. ``=host``;
    5. IPv4 only: shorter and shorter prefixes ending in a dot (``1.2.3.``, ``1.2.``, ``1.``);
    6. CIDR networks containing the address, longest prefix first (``1.2.3.0/24`` ... ``0.0.0.0/1``);
    7. shorter and shorter host suffixes starting with a dot (``=.example.com``, ``=.com``);
    8. ``=`` (any client with a host name); 9. the empty key, the default.

    An IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) is looked up as the IPv4 address, as ucspi-tcp6's
    tcpserver does.
    """
    address = client_address(ip)
    host = _normal_host(hostname)
    text = str(address)  # dotted decimal, or RFC 5952 compressed IPv6
    keys: list[str] = []
    if info:
        keys.append(f"{info}@{text}")
        if host:
            keys.append(f"{info}@={host}")
    keys.append(text)
    if host:
        keys.append(f"={host}")
    if isinstance(address, ipaddress.IPv4Address):
        keys.extend(text[: index + 1] for index in range(len(text) - 1, -1, -1) if text[index] == ".")
    lengths = v4_prefixes if isinstance(address, ipaddress.IPv4Address) else v6_prefixes
    keys.extend(str(ipaddress.ip_network((address, length), strict=False)) for length in lengths)
    if host:
        keys.extend(f"={host[index:]}" for index in range(len(host)) if host[index] == ".")
        keys.append("=")
    keys.append("")
    return tuple(keys)


def client_address(ip: str | IPAddress) -> IPAddress:
    """The address a rule lookup uses: scope (``%eth0``) dropped, IPv4-mapped IPv6 made IPv4."""
    if isinstance(ip, str):
        try:
            address: IPAddress = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            raise ValueError(f"not an IP address: {ip[:60]!r}") from None
    else:
        address = ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def _normal_host(hostname: str | None) -> str:
    """Host names compare case-insensitively, without the root's trailing dot."""
    if not hostname:
        return ""
    host = hostname.lower()
    return host[:-1] if host.endswith(".") else host


# ------------------------------------------------------------------------------------------- parsing


def load_rules(path: str | Path) -> RuleSet:
    """Read and parse a tcprules source file (UTF-8; in practice ASCII)."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            # Bounded by the file's size first: read(limit) would reserve the whole limit up front.
            size = os.fstat(stream.fileno()).st_size
            data = stream.read(min(size, MAX_RULES_FILE_BYTES) + 1)
            if len(data) > size:  # a file that says less than it holds (growing, or a pipe)
                data += stream.read(MAX_RULES_FILE_BYTES + 1 - len(data))
    except OSError as exc:
        raise RulesError(f"cannot read rules {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_RULES_FILE_BYTES:
        raise RulesError(f"{path}: larger than {MAX_RULES_FILE_BYTES} bytes; not a rules file")
    return parse_rules(_decode(data, str(path)), source=str(path))


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RulesError(f"{source} line {line}: not UTF-8 text") from None


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Parse tcprules source text. Blank lines and lines starting with ``#`` are skipped."""
    rules: list[Rule] = []
    table: dict[str, Rule] = {}
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.rstrip(" \t")
        if not line.strip() or line.lstrip(" \t").startswith("#"):
            continue
        try:
            rule, keys = _parse_line(line, number, source)
        except _LineError as error:
            raise RulesError(f"{source} line {number}: {error}") from None
        rules.append(rule)
        for key in keys:
            table.setdefault(key, rule)
    return RuleSet(source, tuple(rules), MappingProxyType(table))


class _LineError(Exception):
    """What is wrong with one line; :func:`parse_rules` adds the source and line number."""


def _parse_line(line: str, number: int, source: str) -> tuple[Rule, list[str]]:
    if "\r" in line:
        raise _LineError("carriage return in the line (DOS line endings?): tcprules refuses it too")
    if "\0" in line:
        raise _LineError("NUL character in the line")
    address, allow, instructions = _split_line(line)
    env = _parse_instructions(instructions)
    keys = list(_address_keys(address))
    return Rule(address, allow, MappingProxyType(env), number, source), keys


def _split_line(line: str) -> tuple[str, bool, str]:
    """(address, allow, rest after allow/deny): the first ``:`` followed by ``allow`` or ``deny``.

    ucspi-tcp 0.88 splits at the first colon; the IPv6 patch (and so ucspi-tcp6) at the first colon
    followed by ``allow`` or ``deny``, so that IPv6 addresses can hold colons. Both read IPv4 lines
    the same way.
    """
    if ":" not in line:
        raise _LineError("no ':' between the address and the instructions")
    start = 0
    while (colon := line.find(":", start)) != -1:
        rest = line[colon + 1 :]
        for word, allow in _DECISIONS:
            if rest.startswith(word):
                return line[:colon], allow, rest[len(word) :]
        start = colon + 1
    raise _LineError("the instructions after ':' must start with allow or deny")


def _parse_instructions(text: str) -> dict[str, str]:
    """``,NAME="value"`` settings, tcprules-style: the character after ``=`` is the quote, and the value
    runs to its next occurrence (``NAME="x"``, ``NAME='x'``, ``NAME=/x/`` are all the same)."""
    env: dict[str, str] = {}
    position = 0
    while position < len(text):
        if text[position] != ",":
            raise _LineError(f'unexpected {text[position:][:20]!r}: settings are written ,NAME="value"')
        equals = text.find("=", position)
        if equals == -1:
            raise _LineError(f'setting {text[position + 1 :][:30]!r} has no ="value"')
        name = text[position + 1 : equals]
        if not _VARIABLE_NAME.fullmatch(name):
            raise _LineError(f"{name[:30]!r} is not a variable name (letters, digits and _)")
        value, position = _quoted_value(text, equals + 1, name)
        env[name] = value
    return env


def _quoted_value(text: str, start: int, name: str) -> tuple[str, int]:
    """The value whose opening quote is at ``start``, and the position after its closing quote."""
    if start >= len(text):
        raise _LineError(f'{name}= has no value (write {name}="" for an empty one)')
    quote = text[start]
    if quote.isalnum() or quote.isspace() or quote == "_":
        raise _LineError(
            f'the value of {name} must be quoted ({name}="..."): tcprules reads the character '
            f"after = as the quote"
        )
    end = text.find(quote, start + 1)
    if end == -1:
        raise _LineError(f"the value of {name} has no closing {quote}")
    return text[start + 1 : end], end + 1


# ------------------------------------------------------------------------------------------ addresses


def _address_keys(address: str) -> Iterator[str]:
    """The lookup keys one address stands for (several for a range)."""
    if not address:
        yield ""
    elif any(character.isspace() for character in address):
        raise _LineError(f"white space in the address {address[:40]!r}")
    elif "@" in address:
        yield _info_key(address)
    elif address.startswith("="):
        yield _host_key(address)
    elif ":" in address:
        yield _ipv6_key(address)
    elif "/" in address:
        yield _ipv4_cidr_key(address)
    else:
        yield from _ipv4_keys(address)


def _info_key(address: str) -> str:
    """``info@ip`` or ``info@=host``: tcpserver tries these only with an ident (RFC 1413) answer."""
    info, _, target = address.partition("@")
    if not info:
        raise _LineError(f"{address[:40]!r}: nothing before @ (the ident user name)")
    if target.startswith("="):
        host = _host_key(target)
        if host.startswith("=.") or host == "=":
            raise _LineError(f"{address[:40]!r}: after @ only an exact =host.name is looked up")
        return f"{info}@{host}"
    if "/" in target:
        raise _LineError(f"{address[:40]!r}: after @ only an exact address is looked up")
    key = _ipv6_key(target) if ":" in target else _ipv4_exact(target, address)
    if "/" in key:
        raise _LineError(f"{address[:40]!r}: after @ only an exact address is looked up")
    return f"{info}@{key}"


def _host_key(address: str) -> str:
    """``=host.name`` (exact), ``=.suffix`` (the name ends with it) or ``=`` (any name)."""
    name = address[1:]
    if name and not _HOST_NAME.fullmatch(name):
        raise _LineError(f"{address[:60]!r} is not =host.name or =.domain.suffix")
    return "=" + _normal_host(name)


def _ipv6_key(address: str) -> str:
    """An IPv6 address or network (ucspi-tcp6). IPv4-mapped ones become IPv4 keys: tcpserver looks
    mapped clients up by their IPv4 address, so the mapped form could never match otherwise."""
    text, slash, length = address.partition("/")
    if not _IPV6_TEXT.fullmatch(text) or (slash and not _DECIMAL.fullmatch(length)):
        raise _LineError(f"{address[:60]!r} is not an IPv6 address or network")
    try:
        if slash:
            network = ipaddress.IPv6Network(f"{text}/{_number(length)}", strict=False)
        else:
            return str(client_address(ipaddress.IPv6Address(text)))
    except ValueError:
        if text.endswith(":") and not text.endswith("::"):
            raise _LineError(
                f"{address[:60]!r}: IPv6 prefixes are written as networks (2001:db8::/32), as in ucspi-tcp6"
            ) from None
        raise _LineError(f"{address[:60]!r} is not an IPv6 address or network") from None
    return _network_key(network, address)


def _network_key(network: ipaddress.IPv4Network | ipaddress.IPv6Network, address: str) -> str:
    if network.prefixlen == 0:
        raise _LineError(f"{address[:60]!r}: a /0 network; the default rule is written with an empty address")
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
        if network.prefixlen <= 96:
            raise _LineError(f"{address[:60]!r}: an IPv4-mapped network must be longer than /96")
        mapped = network.network_address.ipv4_mapped
        return _network_key(ipaddress.IPv4Network((mapped, network.prefixlen - 96)), address)
    return str(network)


def _ipv4_cidr_key(address: str) -> str:
    """``a.b.c.d/n`` (ucspi-tcp6, which also accepts ``10/8``: the missing octets are zero). Bits
    beyond the prefix are ignored, as there."""
    text, _, length = address.partition("/")
    octets = text.split(".")
    if not _DECIMAL.fullmatch(length) or len(octets) > 4 or not all(_DECIMAL.fullmatch(o) for o in octets):
        raise _LineError(f"{address[:60]!r} is not an IPv4 network (a.b.c.d/n)")
    prefix = _number(length)
    if not 0 <= prefix <= 32 or any(_number(octet) > 255 for octet in octets):
        raise _LineError(f"{address[:60]!r} is not an IPv4 network (a.b.c.d/n)")
    if len(octets) * 8 < prefix:
        raise _LineError(f"{address[:60]!r}: /{prefix} is longer than the octets given")
    padded = [str(_number(octet)) for octet in octets] + ["0"] * (4 - len(octets))
    return _network_key(ipaddress.IPv4Network(f"{'.'.join(padded)}/{prefix}", strict=False), address)


def _ipv4_keys(address: str) -> Iterator[str]:
    """An exact address (``1.2.3.4``), a dotted prefix (``1.2.3.``, ``127.``), either with one
    octet written as a range (``1.2.3.37-53``, ``10.2-3.``), which tcprules expands into one key per
    value, capping the upper end at 255."""
    if not _IPV4_TEXT.fullmatch(address):
        raise _LineError(
            f"{address[:60]!r} is not an address tcpserver can match: an IP address, prefix (1.2.3.), "
            "range (1.2.3.4-9), network (a.b.c.d/n), =host.name, =.domain or info@address"
        )
    prefix = address.endswith(".")
    octets = (address[:-1] if prefix else address).split(".")
    if (len(octets) > 3) if prefix else (len(octets) != 4):
        hint = "1 to 3 octets and a dot" if prefix else "four octets"
        raise _LineError(f"{address[:60]!r} is not an address or prefix tcpserver can match ({hint})")
    ranges = [index for index, octet in enumerate(octets) if "-" in octet]
    if len(ranges) > 1:
        raise _LineError(f"{address[:60]!r}: only one octet may be a range")
    for index, octet in enumerate(octets):
        if index not in ranges:
            _check_octet(octet, address)
    suffix = "." if prefix else ""
    if not ranges:
        yield ".".join(octets) + suffix
        return
    index = ranges[0]
    for value in _octet_range(octets[index], address):
        yield ".".join([*octets[:index], str(value), *octets[index + 1 :]]) + suffix


def _ipv4_exact(text: str, address: str) -> str:
    octets = text.split(".")
    if len(octets) != 4:
        raise _LineError(f"{address[:60]!r}: after @ only an exact address is looked up")
    for octet in octets:
        _check_octet(octet, address)
    return text


def _check_octet(octet: str, address: str) -> None:
    """tcpserver writes octets in plain decimal, so ``010`` or ``256`` could never match."""
    if not _DECIMAL.fullmatch(octet):
        raise _LineError(f"{address[:60]!r} is not an IPv4 address, prefix or range")
    if len(octet) > 1 and octet.startswith("0"):
        raise _LineError(f"{address[:60]!r}: octet {octet[:10]!r} has a leading zero tcpserver never writes")
    if _number(octet) > 255:
        raise _LineError(f"{address[:60]!r}: octet {octet[:10]} is larger than 255")


def _number(digits: str) -> int:
    """A decimal number, without converting absurdly long digit strings (anything past a million
    is equally out of range here)."""
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= 7 else 10**7


def _octet_range(octet: str, address: str) -> range:
    low, _, high = octet.partition("-")
    if not _DECIMAL.fullmatch(low) or not _DECIMAL.fullmatch(high):
        raise _LineError(f"{address[:60]!r}: a range is written low-high, like 37-53")
    bottom, top = _number(low), min(_number(high), 255)
    if bottom > 255:
        raise _LineError(f"{address[:60]!r}: range start {bottom} is larger than 255")
    if bottom > top:
        raise _LineError(f"{address[:60]!r}: the range {octet[:12]} is empty")
    return range(bottom, top + 1)
