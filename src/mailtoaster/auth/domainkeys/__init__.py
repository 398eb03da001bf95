"""DomainKeys (RFC 4870, historic): verify every DomainKey-Signature and sign outgoing mail.

DKIM replaced DomainKeys, but old senders still sign with it and qmail-era servers still check
it. :func:`verify_domainkeys` returns a :class:`DomainKeysOutcome` (libdomainkeys' status codes,
the RFC 8601 result, the sender's policy); :func:`sign_domainkeys` returns the header field.
"""

from __future__ import annotations

import authres

from mailtoaster.auth.domainkeys.canon import canonical_body, canonical_header, signed_data
from mailtoaster.auth.domainkeys.policy import lookup_policy, parse_policy
from mailtoaster.auth.domainkeys.result import (
    DkStatus,
    DomainKeysOutcome,
    DomainKeysPolicy,
    DomainKeysResult,
    DomainKeysVerdict,
)
from mailtoaster.auth.domainkeys.sender import SendingAddress, sending_address
from mailtoaster.auth.domainkeys.sign import (
    DEFAULT_SIGNED_HEADERS,
    DomainKeysSignError,
    sign_domainkeys,
    sign_domainkeys_message,
)
from mailtoaster.auth.domainkeys.signature import DkSignature, SignatureSyntaxError, parse_signature
from mailtoaster.auth.domainkeys.verify import verify_domainkeys
from mailtoaster.auth.results import comment_text

__all__ = [
    "DEFAULT_SIGNED_HEADERS",
    "DkSignature",
    "DkStatus",
    "DomainKeysOutcome",
    "DomainKeysPolicy",
    "DomainKeysResult",
    "DomainKeysSignError",
    "DomainKeysVerdict",
    "SendingAddress",
    "SignatureSyntaxError",
    "canonical_body",
    "canonical_header",
    "domainkeys_result",
    "lookup_policy",
    "parse_policy",
    "parse_signature",
    "sending_address",
    "sign_domainkeys",
    "sign_domainkeys_message",
    "signed_data",
    "verify_domainkeys",
]


def domainkeys_result(outcome: DomainKeysOutcome) -> authres.DomainKeysAuthenticationResult:
    """``domainkeys=<result> (<why>) header.d=<d> header.from|header.sender=<address>`` (RFC 8601 §2.7.1).

    Lives here rather than in :mod:`mailtoaster.auth.results` until that module gathers it.
    """
    properties: dict[str, str] = {}
    if outcome.domain:
        properties["header_d"] = outcome.domain
    if outcome.sending_address and outcome.sending_header in ("From", "Sender"):
        properties[f"header_{outcome.sending_header.lower()}"] = outcome.sending_address
    return authres.DomainKeysAuthenticationResult(
        result=outcome.result.value, result_comment=comment_text(_notes(outcome)), **properties
    )


def _notes(outcome: DomainKeysOutcome) -> str:
    """Why the result is what it is, in words; :func:`comment_text` makes it safe as a comment."""
    notes = [outcome.reason]
    if outcome.key_testing:
        notes.append("key in testing mode")
    if outcome.suspicious and outcome.policy is not None:
        notes.append(f"{outcome.policy.domain} says it signs all mail")
    return "; ".join(notes)
