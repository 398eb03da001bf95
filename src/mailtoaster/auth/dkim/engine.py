"""The cryptographic core shared by DKIM and ARC: header selection, the hashed bytes, body hashes,
and sign/verify primitives on the ``cryptography`` package (OpenSSL; constant-time RSA)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailtoaster.auth.dkim import canon
from mailtoaster.auth.dkim.key import PublicKey
from mailtoaster.message import Header

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

RSA_SHA256 = "rsa-sha256"
RSA_SHA1 = "rsa-sha1"
ED25519_SHA256 = "ed25519-sha256"
ALGORITHMS = (RSA_SHA256, RSA_SHA1, ED25519_SHA256)
SIGNING_ALGORITHMS = (RSA_SHA256, ED25519_SHA256)


def hash_name(algorithm: str) -> str:
    """``sha256`` or ``sha1``: the part after the dash."""
    return algorithm.rpartition("-")[2]


def key_type(algorithm: str) -> str:
    return algorithm.partition("-")[0]


def select_headers(headers: Sequence[Header], names: Sequence[str]) -> list[Header | None]:
    """RFC 6376 §5.4.2: each listed name takes the last not-yet-used instance, searching upward.

    A name with no instance left selects None (it contributes nothing, which is what makes
    over-signing work).
    """
    wanted = [name.strip().lower() for name in names]
    wanted_set = set(wanted)
    by_name: dict[str, list[Header]] = {}
    for field in headers:
        if field.lower_name in wanted_set:
            by_name.setdefault(field.lower_name, []).append(field)
    return [instances.pop() if (instances := by_name.get(name)) else None for name in wanted]


def header_hash_input(
    headers: Sequence[Header], names: Sequence[str], signature_field: bytes, header_canon: str
) -> bytes:
    """The exact octets the header hash covers: the selected fields, canonicalised, then the
    signature field itself with ``b=`` emptied and without its final CRLF (RFC 6376 §3.7)."""
    fields = [field.raw for field in select_headers(headers, names) if field is not None]
    own = canon.strip_b_value(signature_field)
    # With b= last, emptying it also took the line break; end the field like the others.
    fields.append(own if own.endswith((b"\r", b"\n")) else own + b"\r\n")
    return canon.headers(fields, header_canon)[:-2]


def canonical_body(body: bytes, body_canon: str) -> bytes:
    return canon.body(canon.to_crlf(body), body_canon)


def body_hash(body: bytes, body_canon: str, hash_algorithm: str, length: int | None = None) -> bytes:
    """Digest of the canonical body, cut to ``length`` octets when ``l=`` asks for it."""
    canonical = canonical_body(body, body_canon)
    if length is not None:
        canonical = canonical[:length]
    return hashlib.new(hash_algorithm, canonical).digest()


def _rsa_hash(algorithm: str) -> hashes.HashAlgorithm:
    return hashes.SHA1() if hash_name(algorithm) == "sha1" else hashes.SHA256()


def verify_bytes(public_key: PublicKey, algorithm: str, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``algorithm``'s signature of ``data`` under ``public_key``.

    Ed25519 signs the SHA-256 digest of the data, not the data itself (RFC 8463 §3).
    """
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, hashlib.sha256(data).digest())
        else:
            public_key.verify(signature, data, padding.PKCS1v15(), _rsa_hash(algorithm))
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_bytes(private_key: PrivateKey, algorithm: str, data: bytes) -> bytes:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(hashlib.sha256(data).digest())
    return private_key.sign(data, padding.PKCS1v15(), _rsa_hash(algorithm))


def algorithm_for(private_key: PrivateKey) -> str:
    return ED25519_SHA256 if isinstance(private_key, ed25519.Ed25519PrivateKey) else RSA_SHA256
