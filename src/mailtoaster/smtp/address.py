"""RFC 5321 §4.1.2 ``Mailbox`` syntax for envelope addresses: local part and domain, checked.

The domain is what relaying is decided on, so it is taken after the *last* ``@`` and must be a host
name or an address literal; everything before it is the local part, which must be a dot-string or a
quoted string. ``user%other@host`` and ``host!user@here`` are therefore local parts of ``here``, to be
looked up like any other (and found nowhere): the old percent hack and bang paths route nothing.
"""

from __future__ import annotations

import ipaddress
import re

from mailtoaster.address import DOT_STRING, MAX_ADDRESS, MAX_LOCAL_PART, QUOTED_STRING, ascii_domain

_UTF8_LOCAL = re.compile(r"[^\x00-\x7f]")
_UNDECODABLE = re.compile("[\ud800-\udfff]")
"""Bytes that were not UTF-8 reach us as lone surrogates (aiosmtpd decodes with surrogateescape)."""


class AddressError(ValueError):
    """Not a mailbox RFC 5321 allows; the message says what is wrong."""


def parse_mailbox(address: str, *, utf8: bool = True) -> tuple[str, str]:
    """``(local part, domain)``; the domain lower-cased, IDNs as A-labels, literals kept in brackets."""
    if any(character in address for character in "\r\n\x00"):
        raise AddressError("control characters in address")
    if _UNDECODABLE.search(address):
        raise AddressError("not valid UTF-8")
    if len(address) > MAX_ADDRESS:
        raise AddressError(f"longer than {MAX_ADDRESS} characters")
    local_part, at, domain = address.rpartition("@")
    if not at or not local_part:
        raise AddressError("not of the form local-part@domain")
    _check_local_part(local_part, utf8)
    return local_part, _normalise_domain(domain)


def _check_local_part(local_part: str, utf8: bool) -> None:
    if len(local_part.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError(f"local part longer than {MAX_LOCAL_PART} octets")
    if QUOTED_STRING.match(local_part):
        return
    candidate = _UTF8_LOCAL.sub("a", local_part) if utf8 else local_part  # RFC 6531 allows UTF-8 atext
    if not DOT_STRING.match(candidate):
        raise AddressError(f"invalid local part {local_part[:64]!r}")


def _normalise_domain(domain: str) -> str:
    if domain.startswith("[") and domain.endswith("]"):
        return _address_literal(domain)
    try:
        return ascii_domain(domain)
    except ValueError as error:
        raise AddressError(f"invalid domain {domain[:80]!r}") from error


def _address_literal(literal: str) -> str:
    inner = literal[1:-1]
    text = inner[5:] if inner.lower().startswith("ipv6:") else inner
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError as error:
        raise AddressError(f"invalid address literal {literal[:60]!r}") from error
    if (parsed.version == 6) != inner.lower().startswith("ipv6:"):
        raise AddressError(f"invalid address literal {literal[:60]!r}")
    return f"[IPv6:{parsed}]" if parsed.version == 6 else f"[{parsed}]"
