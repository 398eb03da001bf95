"""RFC 5321 mailbox grammar shared by the SMTP server (envelope paths), the directory (addresses we host
and forward to) and the queue: the pieces every stricter or looser reading is built from."""

from __future__ import annotations

import re

from mailtoaster.keys.names import check_dns_name

MAX_LOCAL_PART = 64
"""RFC 5321 §4.5.3.1.1: the longest local part, in octets."""
MAX_ADDRESS = 254
"""RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets."""

ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
"""RFC 5322 ``atext``, as the inside of a character class."""
DOT_STRING = re.compile(rf"[{ATEXT}]+(?:\.[{ATEXT}]+)*\Z")
"""RFC 5321 ``Dot-string``: atoms joined by single dots (match with ``.match``)."""
QUOTED_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
"""RFC 5321 ``Quoted-string``."""


def ascii_domain(text: str, *, min_labels: int = 1) -> str:
    """``text`` as lower-case A-labels (IDNA 2003, Python's codec), validated; raises ValueError."""
    ascii_form = text
    if not text.isascii():
        try:
            ascii_form = text.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"invalid domain {text!r}: not a valid IDNA name ({exc})") from None
    return check_dns_name(ascii_form, "domain", min_labels=min_labels)
