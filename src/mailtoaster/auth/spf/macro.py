"""SPF macros (RFC 7208 §7): parsing, the domain-spec rule, and expansion."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailtoaster.dns import IPAddress


class MacroSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Macro:
    letter: str
    """Lower-case macro letter."""
    keep: int | None
    """The DIGIT transformer: how many right-hand parts to keep (None = all)."""
    reverse: bool
    delimiters: str
    url_escape: bool
    """An upper-case letter asks for the value URL-escaped (§7.3)."""


Token = str | Macro

DOMAIN_LETTERS = frozenset("slodiphv")
EXP_ONLY_LETTERS = frozenset("crt")
_MACRO_EXPAND = re.compile(r"%\{([A-Za-z])([0-9]*)(r?)([.\-+,/_=]*)\}", re.I)
_TOPLABEL = re.compile(r"^(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9])$")


def parse_macro_string(text: str, *, exp_letters: bool = False) -> list[Token]:
    """Split a macro-string into literals and macros. ``exp_letters`` allows c, r and t (§7.1:
    "allowed only in exp text")."""
    tokens: list[Token] = []
    literal: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "%":
            if not (0x21 <= ord(char) <= 0x7E) and not (exp_letters and char == " "):
                raise MacroSyntaxError(f"character {char!r} is not allowed")
            literal.append(char)
            index += 1
            continue
        following = text[index + 1 : index + 2]
        if following in ("%", "_", "-"):
            literal.append({"%": "%", "_": " ", "-": "%20"}[following])
            index += 2
            continue
        match = _MACRO_EXPAND.match(text, index)
        if match is None:
            raise MacroSyntaxError(f"invalid macro at {text[index : index + 12]!r}")
        if literal:
            tokens.append("".join(literal))
            literal = []
        tokens.append(_macro_from_match(match, exp_letters))
        index = match.end()
    if literal:
        tokens.append("".join(literal))
    return tokens


def _macro_from_match(match: re.Match[str], exp_letters: bool) -> Macro:
    letter, digits, reverse, delimiters = match.groups()
    lower = letter.lower()
    allowed = DOMAIN_LETTERS | EXP_ONLY_LETTERS if exp_letters else DOMAIN_LETTERS
    if lower not in allowed:
        where = "here" if lower in EXP_ONLY_LETTERS else "in SPF"
        raise MacroSyntaxError(f"macro letter {letter!r} is not allowed {where}")
    keep = int(digits) if digits else None
    if keep == 0:
        raise MacroSyntaxError("a macro's digit transformer must not be zero")
    return Macro(lower, keep, bool(reverse), delimiters or ".", letter.isupper())


def parse_domain_spec(spec: str) -> list[Token]:
    """Parse a domain-spec: a macro-string that ends in ``.toplabel[.]`` or in a macro (§7.1)."""
    tokens = parse_macro_string(spec)
    if not tokens:
        raise MacroSyntaxError("empty domain")
    last = tokens[-1]
    if isinstance(last, Macro):
        return tokens
    stripped = last[:-1] if last.endswith(".") else last
    head, dot, toplabel = stripped.rpartition(".")
    if not dot or not _TOPLABEL.match(toplabel) or (not head and len(tokens) == 1):
        raise MacroSyntaxError(f"{spec!r} does not end in a valid top-level label (use a FQDN)")
    return tokens


@dataclass(frozen=True)
class MacroContext:
    sender: str
    """``s``: the full identity being checked, with ``postmaster`` as local part where it had none."""
    domain: str
    """``d``: the current domain (changes through include and redirect)."""
    ip: IPAddress
    helo: str
    receiver: str = "unknown"
    timestamp: int = 0

    @property
    def local_part(self) -> str:
        return self.sender.rpartition("@")[0]

    @property
    def sender_domain(self) -> str:
        return self.sender.rpartition("@")[2]


ValidatedNameLookup = Callable[[], Awaitable[str]]


async def expand(tokens: list[Token], context: MacroContext, validated_name: ValidatedNameLookup) -> str:
    """Expand parsed tokens; ``validated_name`` supplies ``p`` lazily, since it costs DNS lookups."""
    parts: list[str] = []
    for token in tokens:
        if isinstance(token, str):
            parts.append(token)
            continue
        value = await validated_name() if token.letter == "p" else _letter_value(token.letter, context)
        parts.append(_transform(value, token))
    return "".join(parts)


def _letter_value(letter: str, context: MacroContext) -> str:
    ip = context.ip
    values: dict[str, Callable[[], str]] = {
        "s": lambda: context.sender,
        "l": lambda: context.local_part,
        "o": lambda: context.sender_domain,
        "d": lambda: context.domain,
        "i": lambda: dotted_ip(ip),
        "v": lambda: "in-addr" if ip.version == 4 else "ip6",
        "h": lambda: context.helo,
        "c": lambda: str(ip),
        "r": lambda: context.receiver,
        "t": lambda: str(context.timestamp),
    }
    return values[letter]()


def dotted_ip(ip: IPAddress) -> str:
    """The ``i`` macro: dotted-quad for IPv4, dot-separated nibbles for IPv6 (§7.3)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    return ".".join(ip.exploded.replace(":", ""))


def _transform(value: str, macro: Macro) -> str:
    parts = re.split("[" + re.escape(macro.delimiters) + "]", value)
    if macro.reverse:
        parts.reverse()
    if macro.keep is not None:
        parts = parts[-macro.keep :]
    result = ".".join(parts)
    if macro.url_escape:
        result = urllib.parse.quote(result, safe="-._~")
    return result


def truncate_domain(name: str) -> str:
    """§4.8/§7.3: an expanded domain over 253 characters loses left-hand labels until it fits."""
    while len(name) > 253 and "." in name:
        name = name.split(".", 1)[1]
    return name
