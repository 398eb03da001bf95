"""DKIM public key records (RFC 6376 §3.6.1, RFC 8463 §4) and the public keys in them.

A record that cannot be used raises :class:`KeyRecordError` with a reason suitable for a verdict;
the caller turns it into ``permerror``. A record with an empty ``p=`` is a revoked key.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from mailtoaster.auth.tags import TagListError, parse_tag_list, strip_fws

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey

KEY_TYPES = ("rsa", "ed25519")
_ED25519_KEY_BYTES = 32


class KeyRecordError(ValueError):
    """The key record is unusable: syntax, wrong version, unknown key type, bad key data."""


@dataclass(frozen=True)
class KeyRecord:
    key_type: str
    """``k=``: ``rsa`` (the default) or ``ed25519``."""
    key_data: bytes
    """``p=`` decoded; empty when the key has been revoked."""
    hash_algorithms: tuple[str, ...] | None
    """``h=``, or None when any hash is allowed."""
    service_types: tuple[str, ...]
    flags: tuple[str, ...]
    """``t=``: ``y`` (testing), ``s`` (i= must be in d= exactly, not a subdomain)."""
    granularity: str | None = None
    """``g=`` of RFC 4871 (dropped by RFC 6376), kept for DomainKeys and for reporting."""
    notes: str = ""

    @property
    def revoked(self) -> bool:
        return not self.key_data

    @property
    def testing(self) -> bool:
        return "y" in self.flags

    @property
    def strict_identity(self) -> bool:
        return "s" in self.flags


def parse_key_record(text: str) -> KeyRecord:
    """Parse one TXT record (its strings already joined)."""
    try:
        tags = parse_tag_list(text)
    except TagListError as error:
        raise KeyRecordError(f"key record syntax: {error}") from None
    if "v" in tags and (tags["v"] != "DKIM1" or next(iter(tags)) != "v"):
        raise KeyRecordError(f"key record v={tags['v']!r} is not a leading v=DKIM1")
    if "p" not in tags:
        raise KeyRecordError("key record has no p= tag")
    key_type = tags.get("k", "rsa").lower()
    if key_type not in KEY_TYPES:
        raise KeyRecordError(f"unknown key type k={key_type}")
    try:
        key_data = base64.b64decode(strip_fws(tags["p"]), validate=True)
    except (binascii.Error, ValueError):
        raise KeyRecordError("key record p= is not valid base64") from None
    return KeyRecord(
        key_type=key_type,
        key_data=key_data,
        hash_algorithms=_colon_list(tags["h"]) if "h" in tags else None,
        service_types=_colon_list(tags.get("s", "*")),
        flags=_colon_list(tags.get("t", "")),
        granularity=tags.get("g"),
        notes=tags.get("n", ""),
    )


def _colon_list(value: str) -> tuple[str, ...]:
    return tuple(item for item in (part.strip(" \t\r\n").lower() for part in value.split(":")) if item)


def load_public_key(record: KeyRecord) -> PublicKey:
    """The key in ``p=``: an RSA SubjectPublicKeyInfo (or a bare PKCS#1 RSAPublicKey, as some
    publish), or a raw 32-byte Ed25519 key (RFC 8463 §4)."""
    if record.revoked:
        raise KeyRecordError("key revoked (empty p=)")
    if record.key_type == "ed25519":
        if len(record.key_data) != _ED25519_KEY_BYTES:
            raise KeyRecordError(f"ed25519 key is {len(record.key_data)} bytes, not 32")
        return ed25519.Ed25519PublicKey.from_public_bytes(record.key_data)
    return _load_rsa(record.key_data)


def _load_rsa(data: bytes) -> rsa.RSAPublicKey:
    try:
        key = load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        key = _load_pkcs1(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyRecordError("k=rsa but p= holds another kind of key")
    return key


def _load_pkcs1(data: bytes) -> rsa.RSAPublicKey:
    # A bare RSAPublicKey gets the SubjectPublicKeyInfo wrapper that load_der_public_key expects.
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
    bit_string = b"\x03" + _der_length(len(data) + 1) + b"\x00" + data
    body = algorithm + bit_string
    wrapped = b"\x30" + _der_length(len(body)) + body
    try:
        key = load_der_public_key(wrapped)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyRecordError("p= is not a valid RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyRecordError("p= is not a valid RSA public key")
    return key


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def key_bits(key: PublicKey) -> int:
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else 256
