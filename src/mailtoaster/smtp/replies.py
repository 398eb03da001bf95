"""SMTP replies: enhanced status codes (RFC 3463, advertised as ENHANCEDSTATUSCODES, RFC 2034) for
every reply that lacks one, and the replies this server sends itself.

aiosmtpd writes many replies without an enhanced code (``503 Error: need MAIL command``). Once the
extension is advertised every 2xx, 4xx and 5xx reply except the greeting and the EHLO/HELO response
must carry one, so replies are completed on their way out from the basic code's usual meaning.
"""

from __future__ import annotations

import re

_REPLY = re.compile(r"([245])(\d\d)([ -])(.*)\Z", re.DOTALL)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_HAS_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |\Z)")

DEFAULT_ENHANCED = {
    "211": "2.0.0", "214": "2.0.0", "221": "2.0.0", "235": "2.7.0", "250": "2.0.0", "251": "2.1.5",
    "252": "2.5.0", "421": "4.3.0", "450": "4.2.0", "451": "4.3.0", "452": "4.5.3", "454": "4.7.0",
    "455": "4.5.4", "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "521": "5.3.2", "530": "5.7.0", "534": "5.7.9", "535": "5.7.8", "538": "5.7.11", "550": "5.0.0",
    "551": "5.1.6", "552": "5.3.4", "553": "5.1.3", "554": "5.0.0", "555": "5.5.4",
}  # fmt: skip
"""What each basic code means when the reply does not say more (RFC 3463 §3, RFC 5321 §4.2)."""


def with_enhanced_code(reply: str) -> str:
    """``reply`` with an enhanced status code after the basic one, unless it has one, is not 2/4/5xx,
    or is a 220 (RFC 2034 §3 leaves the greeting without one)."""
    match = _REPLY.match(reply)
    if match is None:
        return reply
    klass, rest, separator, text = match.groups()
    if klass + rest == "220" or _HAS_ENHANCED.match(text):  # 220: the greeting and STARTTLS's go-ahead
        return reply
    enhanced = DEFAULT_ENHANCED.get(klass + rest, f"{klass}.0.0")
    return f"{klass}{rest}{separator}{enhanced} {text}".rstrip()


def printable_reply(reply: str) -> str:
    """``reply`` with every character outside printable ASCII made ``?`` (RFC 5321 §4.2: reply text is
    printable US-ASCII; a NUL or a line break echoed from a client must never reach the wire)."""
    return _UNPRINTABLE.sub("?", reply)
