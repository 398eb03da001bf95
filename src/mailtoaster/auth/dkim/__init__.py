"""DKIM (RFC 6376, RFC 8463, RFC 8301): verify every signature on a message, and sign."""

from __future__ import annotations

from mailtoaster.auth.dkim.key import KeyRecord, KeyRecordError, load_public_key, parse_key_record
from mailtoaster.auth.dkim.result import DkimResult, DkimVerdict
from mailtoaster.auth.dkim.sign import (
    DkimSigner,
    SigningError,
    default_signed_headers,
    sign_dkim,
    sign_message,
)
from mailtoaster.auth.dkim.signature import DkimSignature, SignatureError, parse_signature
from mailtoaster.auth.dkim.verify import DkimVerifyOptions, verify_dkim

__all__ = [
    "DkimResult",
    "DkimSignature",
    "DkimSigner",
    "DkimVerdict",
    "DkimVerifyOptions",
    "KeyRecord",
    "KeyRecordError",
    "SignatureError",
    "SigningError",
    "default_signed_headers",
    "load_public_key",
    "parse_key_record",
    "parse_signature",
    "sign_dkim",
    "sign_message",
    "verify_dkim",
]
