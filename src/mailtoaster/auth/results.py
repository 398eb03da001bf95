"""Authentication-Results (RFC 8601), written with the authres package.

Each protocol's outcome becomes one authres result; :func:`authentication_results` joins them under
this server's authserv-id. Later protocols (DKIM, DMARC, ...) add their converter here.
"""

from __future__ import annotations

import authres

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


def authentication_results(authserv_id: str, results: list[authres.BaseAuthenticationResult]) -> str:
    """The whole header field, ``Authentication-Results: <authserv-id>; ...``, unfolded."""
    if not results:
        results = [authres.NoneAuthenticationResult()]
    return str(authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results))
