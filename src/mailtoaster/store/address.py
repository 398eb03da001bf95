"""Mail addresses as the directory keeps them: RFC 5321 syntax, domains as IDNA A-labels.

Two levels of strictness:

- :func:`parse_address` accepts any RFC 5321 ``Dot-string@Domain`` mailbox (the form an alias may forward
  to). The local part keeps its case: beyond our domains it belongs to the receiving server.
- :func:`parse_account` is for addresses *we* host (users and alias sources): the local part is
  lower-cased (as vpopmail did, mail to ``Bob@`` and ``bob@`` reaches one mailbox) and may not contain
  ``/`` (it becomes a directory name) or ``+`` (the sub-address separator, see :data:`SUBADDRESS_SEPARATOR`).

Quoted local parts (``"john doe"@example.com``), address literals (``user@[192.0.2.1]``) and non-ASCII
local parts (SMTPUTF8) are refused with a clear message rather than half supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailtoaster.address import DOT_STRING, MAX_ADDRESS, MAX_LOCAL_PART, ascii_domain
from mailtoaster.store.errors import InvalidAddressError

SUBADDRESS_SEPARATOR = "+"
"""``user+detail@domain`` reaches ``user@domain`` (RFC 5233 style). qmail's ``-`` is not used: hyphens are
common inside real local parts (``jean-luc``), ``+`` almost never is."""

_ACCOUNT_ATEXT = r"a-z0-9!#$%&'*\-=?^_`{|}~"
_ACCOUNT_LOCAL_PART = re.compile(rf"[{_ACCOUNT_ATEXT}]+(?:\.[{_ACCOUNT_ATEXT}]+)*")


@dataclass(frozen=True, order=True)
class Address:
    """A mailbox ``local_part@domain``; the domain is always lower-case ASCII (A-labels)."""

    local_part: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local_part}@{self.domain}"

    @property
    def base(self) -> Address:
        """The address without its ``+detail`` (itself when there is none)."""
        local, separator, _ = self.local_part.partition(SUBADDRESS_SEPARATOR)
        if not separator or not local:
            return self
        return Address(local, self.domain)

    @property
    def detail(self) -> str | None:
        """The ``detail`` of ``user+detail@domain``, or None."""
        local, separator, detail = self.local_part.partition(SUBADDRESS_SEPARATOR)
        return detail if separator and local else None


def normalize_domain(text: str) -> str:
    """``text`` as lower-case A-labels (IDNA 2003 as Python's ``idna`` codec does it), validated."""
    if text.startswith("[") and text.endswith("]"):
        raise InvalidAddressError(f"invalid domain {text!r}: address literals are not accepted")
    try:
        return ascii_domain(text, min_labels=2)
    except ValueError as exc:
        raise InvalidAddressError(str(exc)) from None


def parse_address(text: str) -> Address:
    """An RFC 5321 ``Dot-string@Domain`` mailbox; raises :class:`InvalidAddressError` saying why not."""
    local, at, domain = text.rpartition("@")
    if not at:
        raise InvalidAddressError(f"invalid address {text!r}: no @domain")
    _check_local_part(text, local)
    address = Address(local, normalize_domain(domain))
    if len(str(address)) > MAX_ADDRESS:
        raise InvalidAddressError(f"invalid address {text!r}: longer than {MAX_ADDRESS} characters")
    return address


def parse_account(text: str) -> Address:
    """An address we host (a user or an alias source): lower-cased, no ``/`` and no ``+`` in it."""
    address = parse_address(text)
    return Address(check_account_local_part(address.local_part, text), address.domain)


def check_account_local_part(local_part: str, context: str) -> str:
    """``local_part`` lower-cased if it may name an account; ``context`` is the text to quote in errors."""
    lowered = local_part.lower()
    if not _ACCOUNT_LOCAL_PART.fullmatch(lowered):
        raise InvalidAddressError(
            f"invalid account address {context!r}: the local part may not contain '/' or "
            f"'{SUBADDRESS_SEPARATOR}' (the sub-address separator)"
        )
    return lowered


def _check_local_part(text: str, local: str) -> None:
    if not local:
        raise InvalidAddressError(f"invalid address {text!r}: empty local part")
    if not local.isascii():
        raise InvalidAddressError(
            f"invalid address {text!r}: non-ASCII local parts (SMTPUTF8) are not supported"
        )
    if local.startswith('"'):
        raise InvalidAddressError(f"invalid address {text!r}: quoted local parts are not supported")
    if len(local) > MAX_LOCAL_PART:
        raise InvalidAddressError(
            f"invalid address {text!r}: local part longer than {MAX_LOCAL_PART} characters"
        )
    if not DOT_STRING.match(local):
        raise InvalidAddressError(
            f"invalid address {text!r}: the local part must be letters, digits and !#$%&'*+-/=?^_`{{|}}~ "
            "with single inner dots"
        )
