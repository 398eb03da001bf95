"""The cryptographic core shared by DKIM and ARC: header selection, the hashed bytes, body hashes,
and sign/verify primitives on the ``cryptography`` package (OpenSSL; constant-time RSA)."""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailtoaster.auth.dkim import canon
from mailtoaster.auth.dkim.key import PublicKey
from mailtoaster.message import Body, FileBody, Header

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


@dataclass(frozen=True)
class BodyDigest:
    digest: bytes
    """Of the canonical body, or of its first ``l=`` octets when a length was given."""
    canonical_length: int
    """Octets in the whole canonical body: ``l=`` past it is an error, short of it leaves content unsigned."""


def body_hash(body: bytes, body_canon: str, hash_algorithm: str, length: int | None = None) -> bytes:
    """Digest of the canonical body, cut to ``length`` octets when ``l=`` asks for it."""
    return body_digest(body, body_canon, hash_algorithm, length).digest


def body_digest(body: Body, body_canon: str, hash_algorithm: str, length: int | None = None) -> BodyDigest:
    """The body hash of a body in memory (canonicalised whole: fastest) or on disk (streamed).

    A file-backed body is read once per distinct (canonicalisation, hash, length): an RSA and an
    Ed25519 signature by the same signer, or a DKIM signature and an ARC AMS, share one pass.
    """
    if isinstance(body, FileBody):
        return _file_digests.get(body, (body_canon, hash_algorithm, length))
    canonical = canonical_body(body, body_canon)
    covered = canonical if length is None else canonical[:length]
    return BodyDigest(hashlib.new(hash_algorithm, covered).digest(), len(canonical))


def digest_stream(pieces: Iterable[bytes], hash_algorithm: str, length: int | None = None) -> BodyDigest:
    """:class:`BodyDigest` of the concatenated ``pieces``: all of them counted, the first ``length``
    octets hashed."""
    hasher = hashlib.new(hash_algorithm)
    total = 0
    for piece in pieces:
        if length is None:
            hasher.update(piece)
        elif total < length:
            hasher.update(piece[: length - total])
        total += len(piece)
    return BodyDigest(hasher.digest(), total)


_DigestKey = tuple[str, str, int | None]


class _FileDigests:
    """Body digests of file-backed bodies, kept as long as the body object lives (the message being
    checked), so passes over a large file are not repeated for identical requests. Thread-safe:
    :func:`check_signature` may run in worker threads; two threads asking at once may both compute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_body: weakref.WeakKeyDictionary[FileBody, dict[_DigestKey, BodyDigest]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, body: FileBody, key: _DigestKey) -> BodyDigest:
        with self._lock:
            known = self._by_body.get(body, {}).get(key)
        if known is not None:
            return known
        body_canon, hash_algorithm, length = key
        computed = digest_stream(canon.body_stream(body.chunks(), body_canon), hash_algorithm, length)
        with self._lock:
            self._by_body.setdefault(body, {})[key] = computed
        return computed


_file_digests = _FileDigests()


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
