"""What a DomainKeys (RFC 4870) check returns: plain data, one verdict per signature plus the outcome.

:class:`DkStatus` keeps libdomainkeys' ``DK_STAT_*`` vocabulary, because the SMTP server's
``DKVERIFY`` setting (inherited from qmail-dk) names statuses by letter: ``A`` is ``OK``, ``B``
``BADSIG`` ... ``K`` ``INTERNAL``. :class:`DomainKeysResult` is the RFC 8601 ``domainkeys`` method's
result, which is what Authentication-Results shows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailtoaster.dns import DnsStatus


class DomainKeysResult(enum.Enum):
    """RFC 8601 §2.7.1 results, which the ``domainkeys`` method shares with ``dkim``."""

    NONE = "none"
    PASS = "pass"
    FAIL = "fail"
    NEUTRAL = "neutral"
    POLICY = "policy"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class DkStatus(enum.Enum):
    """libdomainkeys' ``DK_STAT_*`` codes, in dk.h order (which gives each its ``DKVERIFY`` letter)."""

    OK = "ok"
    BADSIG = "badsig"
    NOSIG = "nosig"
    NOKEY = "nokey"
    BADKEY = "badkey"
    CANTVRFY = "cantvrfy"
    SYNTAX = "syntax"
    NORESOURCE = "noresource"
    ARGS = "args"
    REVOKED = "revoked"
    INTERNAL = "internal"

    @property
    def letter(self) -> str:
        """``A`` for OK through ``K`` for INTERNAL: the letters qmail-dk's DKVERIFY uses."""
        return "ABCDEFGHIJK"[list(DkStatus).index(self)]

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]

    @property
    def result(self) -> DomainKeysResult:
        """The RFC 8601 result: syntax problems are ``neutral`` ("signature could not be processed"),
        unusable or absent keys ``permerror``, DNS trouble ``temperror``."""
        return _RESULTS[self]


_MEANINGS = {
    DkStatus.OK: "signature verified",
    DkStatus.BADSIG: "signature does not verify",
    DkStatus.NOSIG: "message is not signed",
    DkStatus.NOKEY: "no public key published for the selector",
    DkStatus.BADKEY: "public key is unusable",
    DkStatus.CANTVRFY: "public key could not be fetched (temporary DNS failure)",
    DkStatus.SYNTAX: "signature or message is malformed",
    DkStatus.NORESOURCE: "resource unavailable",
    DkStatus.ARGS: "arguments not usable",
    DkStatus.REVOKED: "public key revoked",
    DkStatus.INTERNAL: "internal error",
}

_RESULTS = {
    DkStatus.OK: DomainKeysResult.PASS,
    DkStatus.BADSIG: DomainKeysResult.FAIL,
    DkStatus.NOSIG: DomainKeysResult.NONE,
    DkStatus.NOKEY: DomainKeysResult.PERMERROR,
    DkStatus.BADKEY: DomainKeysResult.PERMERROR,
    DkStatus.CANTVRFY: DomainKeysResult.TEMPERROR,
    DkStatus.SYNTAX: DomainKeysResult.NEUTRAL,
    DkStatus.NORESOURCE: DomainKeysResult.TEMPERROR,
    DkStatus.ARGS: DomainKeysResult.PERMERROR,
    DkStatus.REVOKED: DomainKeysResult.PERMERROR,
    DkStatus.INTERNAL: DomainKeysResult.TEMPERROR,
}


@dataclass(frozen=True)
class DomainKeysVerdict:
    """One DomainKey-Signature's result, with what a postmaster needs to explain it."""

    status: DkStatus
    reason: str
    domain: str = ""
    """``d=``, lower-cased."""
    selector: str = ""
    canonicalization: str = ""
    """``c=``: ``simple`` or ``nofws``."""
    signed_headers: tuple[str, ...] = ()
    """Names of the header fields actually hashed, in message order."""
    sending_header: str = ""
    """``Sender`` or ``From``: the signed field that names the sending address (RFC 4870 §3.3)."""
    sending_address: str = ""
    key_testing: bool = False
    """The key record says ``t=y``: the domain is testing and asks that results not be acted on."""
    key_bits: int | None = None
    header_index: int = -1
    """Position of the DomainKey-Signature among the message's header fields (0 = first)."""
    signature_prefix: str = ""
    """The first characters of ``b=``, to tell signatures apart in reports."""

    @property
    def result(self) -> DomainKeysResult:
        return self.status.result

    @property
    def passed(self) -> bool:
        return self.status is DkStatus.OK


@dataclass(frozen=True)
class DomainKeysPolicy:
    """The sending domain's policy record at ``_domainkey.<domain>`` (RFC 4870 §3.6)."""

    domain: str
    found: bool = False
    """A syntactically valid record was published; otherwise the defaults apply (o=~, no testing)."""
    signs_all: bool = False
    """``o=-``: every message from the domain is signed, so an unsigned one is suspicious."""
    testing: bool = False
    """``t=y``: the domain is testing DomainKeys; results should not be acted on."""
    report_to: str = ""
    """``r=``: where the domain would like failure reports."""
    notes: str = ""
    record: str = ""
    """The TXT record as published (empty when none)."""
    dns_status: DnsStatus | None = None
    error: str = ""
    """Why no policy could be read (DNS failure, syntax error); empty when found or simply absent."""

    @property
    def temporary_error(self) -> bool:
        return self.dns_status is not None and self.dns_status.is_temporary_error


@dataclass(frozen=True)
class DomainKeysOutcome:
    """Every DomainKey-Signature's verdict, and the overall answer: the first verdict that passed,
    otherwise the first verdict (``NOSIG`` when there is none)."""

    status: DkStatus
    reason: str
    verdicts: tuple[DomainKeysVerdict, ...] = ()
    domain: str = ""
    selector: str = ""
    canonicalization: str = ""
    sending_header: str = ""
    """``Sender`` or ``From`` (of the chosen verdict, else of the message); empty when neither exists."""
    sending_address: str = ""
    key_testing: bool = False
    policy: DomainKeysPolicy | None = None
    """The sending domain's policy; looked up only when no signature passed (RFC 4870 §3.6 asks
    verifiers to consult it for unsigned or unverified mail), None otherwise or without a sending domain."""

    @property
    def result(self) -> DomainKeysResult:
        return self.status.result

    @property
    def passed(self) -> bool:
        return self.status is DkStatus.OK

    @property
    def suspicious(self) -> bool:
        """The domain says it signs everything (``o=-``, not testing) yet no signature verified."""
        return (
            not self.passed and self.policy is not None and self.policy.signs_all and not self.policy.testing
        )
