"""What ARC validation returns: an :class:`ArcOutcome`, plain data.

The result names are RFC 8617's chain validation states (§4.4), which are also the RFC 8601
``arc=`` results.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ArcResult(enum.Enum):
    NONE = "none"
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True)
class ArcOptions:
    now: int | None = None
    """The clock for an AMS ``x=``; None means the real time. (ARC-Seals carry no expiry.)"""
    min_rsa_bits: int = 1024
    """RFC 8301 §3.2, which RFC 8617 §4.1.2 inherits from DKIM: smaller RSA keys do not verify."""
    allow_ed25519: bool = True
    """Accept ``ed25519-sha256`` sets. RFC 8617 only names rsa-sha256 but points at DKIM's algorithm
    registry, where RFC 8463 added Ed25519; stalwart seals with it, dkimpy refuses it."""


@dataclass(frozen=True)
class ArcSetDetails:
    """One set as found in the message, with what validation learned about it (for reports)."""

    instance: int
    seal_domain: str = ""
    seal_selector: str = ""
    chain_validation: str = ""
    """The set's ``cv=`` as written: what the sealer said about the chain it received."""
    signature_domain: str = ""
    signature_selector: str = ""
    algorithm: str = ""
    """The seal's ``a=``."""
    authserv_id: str = ""
    """The AAR's authserv-id: who did the authentication this set records."""
    results: str = ""
    """The AAR's results (``spf=pass smtp.mailfrom=...; dkim=...``), unfolded, for reports."""
    signature_valid: bool | None = None
    """Whether the ARC-Message-Signature verified; None when validation stopped before checking it."""
    seal_valid: bool | None = None


@dataclass(frozen=True)
class ArcOutcome:
    result: ArcResult
    reason: str
    """Why, in words: ``"no ARC sets"``, ``"chain verified"``, ``"ARC-Seal i=2: signature did not verify"``,
    naming the field and instance at fault."""
    sets: int = 0
    """N, the highest instance among the message's ARC fields (0 when there are none)."""
    oldest_pass: int = 0
    """RFC 8617 §5.2 step 6: the oldest instance whose AMS still verifies, i.e. from which hop on the
    message is unchanged; 0 when every AMS verifies (nothing changed since the first sealer)."""
    failed_instance: int | None = None
    """The instance whose check made the chain fail, when one set is to blame."""
    details: tuple[ArcSetDetails, ...] = ()
    """Per set, oldest (i=1) first; empty when the structure was too broken to pair the fields."""
    temporary: bool = False
    """The failure came from a DNS error (timeout, SERVFAIL): trying again later may pass."""
    terminated: bool = False
    """The newest ARC-Seal already says ``cv=fail``: the chain is over and must not be sealed again."""

    @property
    def passed(self) -> bool:
        return self.result is ArcResult.PASS
