"""Authentication-Results (RFC 8601), written with the authres package.

Each protocol's outcome becomes one authres result; :func:`authentication_results` joins them under
this server's authserv-id. Later protocols (DKIM, DMARC, ...) add their converter here.
"""

from __future__ import annotations

from collections.abc import Sequence

import authres

from mailtoaster.auth.dkim import DkimVerdict
from mailtoaster.auth.senderid import SenderIdOutcome
from mailtoaster.auth.spf import SpfOutcome, describe

_PRA_PROPERTY = {
    "Resent-Sender": "header_resent_sender",
    "Resent-From": "header_resent_from",
    "Sender": "header_sender",
    "From": "header_from",
}


def spf_result(outcome: SpfOutcome) -> authres.SPFAuthenticationResult:
    """``spf=<result> (<why>) smtp.mailfrom=<address> smtp.helo=<name>`` (RFC 8601 §2.7.2)."""
    mailfrom = outcome.sender if outcome.identity == "mailfrom" else None
    return authres.SPFAuthenticationResult(
        result=outcome.result.value,
        result_comment=describe(outcome),
        smtp_mailfrom=mailfrom,
        smtp_helo=outcome.helo or None,
    )


def senderid_result(outcome: SenderIdOutcome) -> authres.SenderIDAuthenticationResult:
    """``sender-id=<result> header.<field>=<PRA>`` for the pra scope; ``smtp.mailfrom`` for mfrom."""
    properties: dict[str, str] = {}
    if outcome.pra is not None and outcome.pra.address is not None and outcome.pra.header:
        properties[_PRA_PROPERTY[outcome.pra.header]] = outcome.pra.address
    result = authres.SenderIDAuthenticationResult(
        result=outcome.result.value,
        reason=outcome.reason if outcome.spf is None else None,
        **properties,
    )
    if outcome.scope.value == "mfrom":
        result.properties.append(authres.AuthenticationResultProperty("smtp", "mailfrom", outcome.identity))
    return result


def dkim_results(verdicts: Sequence[DkimVerdict]) -> list[authres.BaseAuthenticationResult]:
    """One ``dkim=`` per signature (RFC 8601 §2.7.1), ``dkim=none`` for an unsigned message.

    ``header.b`` (RFC 6008) tells apart two signatures with the same ``d=`` and ``s=``.
    """
    if not verdicts:
        return [authres.DKIMAuthenticationResult(result="none")]
    return [_dkim_result(verdict) for verdict in verdicts]


def _dkim_result(verdict: DkimVerdict) -> authres.DKIMAuthenticationResult:
    notes = [verdict.reason]
    if verdict.key_bits:
        notes.insert(0, key_description(verdict))
    if verdict.testing:
        notes.append("key in testing mode (t=y)")
    if verdict.unsigned_body_octets and verdict.passed:  # otherwise the reason says so already
        notes.append(f"{verdict.unsigned_body_octets} body octets beyond l= are not signed")
    result = authres.DKIMAuthenticationResult(
        result=verdict.result.value,
        result_comment=comment_text("; ".join(notes)),
        header_d=verdict.domain or None,
        header_i=verdict.identity or None,
        header_s=verdict.selector or None,
        header_a=verdict.algorithm or None,
    )
    if verdict.signature_prefix:
        result.properties.append(
            authres.AuthenticationResultProperty("header", "b", verdict.signature_prefix[:8])
        )
    return result


def key_description(verdict: DkimVerdict) -> str:
    """``2048-bit key`` for RSA; ``Ed25519 key`` (whose size is fixed, so bits say nothing)."""
    return "Ed25519 key" if verdict.algorithm.startswith("ed25519") else f"{verdict.key_bits}-bit key"


def comment_text(text: str) -> str:
    """``text`` made safe inside an RFC 5322 comment: printable, one line, parentheses quoted."""
    text = "".join(char if char.isprintable() else " " for char in text)
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def authentication_results(authserv_id: str, results: list[authres.BaseAuthenticationResult]) -> str:
    """The whole header field, ``Authentication-Results: <authserv-id>; ...``, unfolded."""
    if not results:
        results = [authres.NoneAuthenticationResult()]
    return str(authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results))
