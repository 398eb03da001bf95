"""The sending address of RFC 4870 §3.3: the Sender field if there is one, otherwise From.

DomainKeys ties ``d=`` to this address (not to the author alone, as DMARC does): the signing
domain must be the sending address's domain or a parent of it. Addresses are parsed with the
RFC 2822 mailbox parser the PRA code uses, which never raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailtoaster.auth.pra import PraHeaderName, single_mailbox
from mailtoaster.message import Header

SENDING_FIELDS: tuple[PraHeaderName, PraHeaderName] = ("Sender", "From")


@dataclass(frozen=True)
class SendingAddress:
    header: str
    """``Sender`` or ``From``; empty when neither field is present."""
    address: str = ""
    local_part: str = ""
    domain: str = ""
    """Lower-cased; empty when the field holds no usable mailbox."""
    error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.domain)


def sending_address(fields: Sequence[Header]) -> SendingAddress:
    """The first Sender among ``fields``, else the first From, parsed as one mailbox."""
    for name in SENDING_FIELDS:
        field = next((f for f in fields if f.is_named(name)), None)
        if field is None:
            continue
        parsed = single_mailbox(name, field.value)
        if not parsed.ok or parsed.domain is None or parsed.local_part is None:
            return SendingAddress(name, error=parsed.reason.removeprefix("RFC 4407 step 5: "))
        return SendingAddress(name, parsed.address or "", parsed.local_part, parsed.domain.lower())
    return SendingAddress("", error="no Sender or From header field")


def is_same_or_parent(domain: str, signing_domain: str) -> bool:
    """``signing_domain`` is ``domain`` or one of its parents (labels compared case-insensitively)."""
    domain, signing_domain = domain.lower().rstrip("."), signing_domain.lower().rstrip(".")
    return domain == signing_domain or domain.endswith("." + signing_domain)
