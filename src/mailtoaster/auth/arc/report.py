"""The ``arc=`` clause of Authentication-Results (RFC 8601 §2.7, RFC 8617 §10.1), with authres.

Lives here rather than in :mod:`mailtoaster.auth.results` until that module gathers it.
"""

from __future__ import annotations

import authres.arc

from mailtoaster.auth.arc.result import ArcOutcome, ArcResult
from mailtoaster.auth.results import comment_text


def arc_result(outcome: ArcOutcome, *, remote_ip: str | None = None) -> authres.arc.ARCAuthenticationResult:
    """``arc=<cv> (<why>) header.oldest-pass=<n> smtp.remote-ip=<ip>``.

    ``header.oldest-pass`` (RFC 8617 §10.1) appears for a passing chain some of whose older
    signatures no longer verify, i.e. when a hop changed the message; ``smtp.remote-ip`` is the
    address the message came from, given by the caller (the SMTP layer knows it, the chain does not).
    """
    return authres.arc.ARCAuthenticationResult(
        result=outcome.result.value,
        result_comment=comment_text(_describe(outcome)) or None,
        header_oldest_pass=str(outcome.oldest_pass) if outcome.passed and outcome.oldest_pass else None,
        smtp_remote_ip=remote_ip,
    )


def _describe(outcome: ArcOutcome) -> str:
    """The reason for a failure; for a pass, how many sets and who sealed them, oldest first."""
    if outcome.result is not ArcResult.PASS:
        return outcome.reason if outcome.result is ArcResult.FAIL else ""
    count = f"{outcome.sets} set{'s' if outcome.sets != 1 else ''}"
    sealers = ", ".join(f"i={item.instance} {item.seal_domain}" for item in outcome.details)
    return f"{count}: {sealers}" if sealers else count
