"""Envelope addresses as the queue stores and sends them: checked once at enqueue and again before use.

An address travels from the SMTP server's envelope to the queue's JSON and back onto a ``MAIL FROM`` or
``RCPT TO`` line of another server. A CR, LF or NUL in it would let a sender inject SMTP commands into
that line (aiosmtplib advisory PYSEC-2026-2338), so every address is validated here before it is
stored and before it is sent, whatever the library does itself.
"""

from __future__ import annotations

import re

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_QUOTED_LOCAL_PART = re.compile(r'^"(?:[^"\\]|\\.)*"')
_BREAKS_THE_PATH = re.compile(r"[\s<>]")
"""Outside a quoted local part these end the path on an SMTP command line or start a parameter."""
MAX_ADDRESS_LENGTH = 320
"""RFC 5321 §4.5.3.1: 64 octets of local part, 255 of domain, and the ``@``; generous for UTF-8."""


class InvalidAddressError(ValueError):
    """An envelope address that cannot be stored or sent; the message says which and why."""


def check_address(address: str, *, role: str = "recipient", allow_null: bool = False) -> str:
    """Return ``address`` unchanged if it can go on a ``MAIL``/``RCPT`` line; raise otherwise.

    ``role`` names the address in the error ("sender", "recipient"). The null reverse-path ``""`` is
    accepted only with ``allow_null`` (for the sender of bounces). Non-ASCII addresses are accepted
    (RFC 6531 SMTPUTF8); delivery decides whether the receiving server can take them.
    """
    if address == "":
        if allow_null:
            return address
        raise InvalidAddressError(f"empty {role} address")
    if _CONTROL_CHARACTERS.search(address):
        raise InvalidAddressError(f"{role} address {address!r} contains a control character (CR, LF, NUL...)")
    try:
        encoded = address.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidAddressError(f"{role} address {address!r} is not valid Unicode text") from None
    if len(encoded) > MAX_ADDRESS_LENGTH:
        raise InvalidAddressError(f"{role} address is longer than {MAX_ADDRESS_LENGTH} octets")
    if _BREAKS_THE_PATH.search(_QUOTED_LOCAL_PART.sub("", address, count=1)):
        raise InvalidAddressError(f"{role} address {address!r} contains a space, '<' or '>'")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddressError(f"{role} address {address!r} is not of the form local@domain")
    return address


def domain_of(address: str) -> str:
    """The domain of ``local@domain``, lower-cased and without a trailing dot; ``[1.2.3.4]`` kept as is."""
    return address.rpartition("@")[2].rstrip(".").lower()
