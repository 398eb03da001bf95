"""The Received-SPF trace header (RFC 7208 §9.1)."""

from __future__ import annotations

import re

from mailtoaster.auth.spf.evaluate import SpfOutcome, SpfResult

_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*$")


def _value(text: str) -> str:
    """A key-value-pair value: a dot-atom as it is, anything else as a quoted-string."""
    if _DOT_ATOM.match(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _comment_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def describe(outcome: SpfOutcome) -> str:
    """The human sentence for the result: what a postmaster reads in the header comment and reports."""
    who = f"domain of {outcome.sender}" if outcome.identity != "helo" else f"domain of {outcome.domain}"
    ip = outcome.ip
    sentences = {
        SpfResult.PASS: f"{who} designates {ip} as permitted sender",
        SpfResult.FAIL: f"{who} does not designate {ip} as permitted sender",
        SpfResult.SOFTFAIL: f"transitioning {who} does not designate {ip} as permitted sender",
        SpfResult.NEUTRAL: f"{ip} is neither permitted nor denied by {who}",
        SpfResult.NONE: f"{who} does not publish an SPF record",
        SpfResult.TEMPERROR: f"temporary error in processing {who}: {outcome.reason}",
        SpfResult.PERMERROR: f"permanent error in processing {who}: {outcome.reason}",
    }
    return sentences[outcome.result]


def received_spf(outcome: SpfOutcome, receiver: str) -> str:
    """The header field value (without ``Received-SPF:``), folded by the caller if needed."""
    pairs = [("client-ip", str(outcome.ip))]
    if outcome.identity == "mailfrom":
        pairs.append(("envelope-from", outcome.sender))
    if outcome.helo:
        pairs.append(("helo", outcome.helo))
    pairs.append(("receiver", receiver))
    if outcome.mechanism and outcome.mechanism != "default":
        pairs.append(("mechanism", outcome.mechanism))
    if outcome.result in (SpfResult.PERMERROR, SpfResult.TEMPERROR) and outcome.reason:
        pairs.append(("problem", outcome.reason))
    pairs.append(("identity", outcome.identity))
    comment = _comment_text(f"{receiver}: {describe(outcome)}")
    joined = "; ".join(f"{key}={_value(value)}" for key, value in pairs)
    return f"{outcome.result.value} ({comment}) {joined};"
