"""DKIM (RFC 6376, RFC 8463, RFC 8301): verify every signature on a message, and sign."""

from __future__ import annotations

from mailtoaster.auth.dkim.key import KeyRecord, KeyRecordError, load_public_key, parse_key_record
from mailtoaster.auth.dkim.result import DkimResult, DkimVerdict

__all__ = [
    "DkimResult",
    "DkimVerdict",
    "KeyRecord",
    "KeyRecordError",
    "load_public_key",
    "parse_key_record",
]
