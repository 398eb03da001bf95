"""What a DKIM verification returns: one :class:`DkimVerdict` per signature, plain data.

The result names are RFC 8601's (§2.7.1). ``policy`` is used for a signature that verified but
that local policy refuses to count (``rsa-sha1``, RFC 8301).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DkimResult(enum.Enum):
    NONE = "none"
    PASS = "pass"
    FAIL = "fail"
    POLICY = "policy"
    NEUTRAL = "neutral"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True)
class DkimVerdict:
    """One DKIM-Signature's result, with what a postmaster needs to explain it."""

    result: DkimResult
    reason: str
    """Why, in words: ``"body hash mismatch"``, ``"key revoked"``, ``"signature verified"``, ..."""
    domain: str = ""
    """``d=`` as written (compare case-insensitively)."""
    selector: str = ""
    algorithm: str = ""
    identity: str = ""
    """``i=``, or ``@`` + ``d=`` when absent."""
    canonicalization: str = ""
    """``c=`` as ``header/body``."""
    signed_headers: tuple[str, ...] = ()
    body_length: int | None = None
    """``l=``: only this many body octets are covered; content after them is not."""
    unsigned_body_octets: int | None = 0
    """Canonical body octets beyond ``l=``, i.e. content the signature does not vouch for; None when
    the signature has ``l=`` but verification stopped before the body was measured."""
    testing: bool = False
    """The key record says ``t=y``: the domain is testing DKIM, and asks verifiers not to act on it."""
    timestamp: int | None = None
    expiration: int | None = None
    key_bits: int | None = None
    signature_prefix: str = ""
    """The first characters of ``b=``, for RFC 6008 ``header.b`` to tell signatures apart."""
    header_index: int = -1
    """Position of the DKIM-Signature among the message's header fields (0 = first)."""

    @property
    def passed(self) -> bool:
        return self.result is DkimResult.PASS
