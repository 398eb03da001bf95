"""Verify every DKIM-Signature on a message (RFC 6376 §6), each with its own verdict.

Key lookups for all signatures run concurrently; the hashing and the public-key operation are plain
CPU work done by :func:`check_signature`, which a server can run in a worker thread.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass, replace
from functools import lru_cache

from mailtoaster.auth.dkim import engine
from mailtoaster.auth.dkim.key import KeyRecord, KeyRecordError, PublicKey, key_bits, load_public_key
from mailtoaster.auth.dkim.key import parse_key_record as _parse_key_record
from mailtoaster.auth.dkim.result import DkimResult, DkimVerdict
from mailtoaster.auth.dkim.signature import (
    DkimSignature,
    ParseOptions,
    SignatureError,
    UnsupportedAlgorithm,
    parse_signature,
)
from mailtoaster.dns import Resolver, RRType
from mailtoaster.message import Header, Message, body_work

SIGNATURE_FIELD = "DKIM-Signature"
_NAME = SIGNATURE_FIELD.lower()
MAX_SIGNATURES = 16
"""Signatures beyond this many are reported as not evaluated (a cheap denial-of-service guard)."""

# Reasons, so callers and tests can tell the failures apart without parsing prose.
BODY_HASH_MISMATCH = "body hash mismatch"
SIGNATURE_MISMATCH = "signature did not verify"
KEY_REVOKED = "key revoked"
SIGNATURE_EXPIRED = "signature expired"
UNSIGNED_FROM = "the message has a From field the signature does not cover"
VERIFIED = "signature verified"
SHA1_REFUSED = "signature verified, but rsa-sha1 is not acceptable (RFC 8301)"
PARTIAL_BODY = "signature verified, but l= leaves {octets} body octets unsigned (RFC 6376 §8.2)"


@dataclass(frozen=True)
class DkimVerifyOptions:
    now: int | None = None
    """The clock for ``x=``; None means the real time."""
    min_rsa_bits: int = 1024
    """RFC 8301 §3.2: keys under 1024 bits must not be accepted."""
    allow_sha1: bool = False
    """Count ``rsa-sha1`` signatures as passing (RFC 8301 says they must not be)."""
    accept_drafts: bool = False
    """Mail::DKIM compatibility: pre-standard signatures without ``v=1`` are evaluated, and a key's
    RFC 4871 ``g=`` granularity is enforced against ``i=`` (RFC 6376 dropped both)."""
    max_signatures: int = MAX_SIGNATURES
    accept_partial_body: bool = False
    """Count a signature whose ``l=`` leaves body content unsigned as passing. Off by default: such
    content (an appended paragraph, a whole new MIME part) would ride on the signer's name, so the
    signature is reported as ``policy``, as Maddy and rspamd refuse it (RFC 6376 §8.2)."""


_DEFAULT_OPTIONS = DkimVerifyOptions()
_PARSE_OPTIONS = {accept: ParseOptions(accept_drafts=accept) for accept in (False, True)}


class KeyProblem(Exception):
    """Why a signature has no usable key: the result to report and the reason."""

    def __init__(self, result: DkimResult, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


async def verify_dkim(
    message: Message, resolver: Resolver, options: DkimVerifyOptions | None = None
) -> list[DkimVerdict]:
    """One verdict per DKIM-Signature field, in header order (an unsigned message gives [])."""
    options = options or _DEFAULT_OPTIONS
    fields = [(index, field) for index, field in enumerate(message.headers) if field.lower_name == _NAME]
    checked = fields[: options.max_signatures]
    if len(checked) == 1:  # the common case; a task per signature costs more than the verification
        verdicts = [await _verify_one(message, *checked[0], resolver, options)]
    else:
        verdicts = await asyncio.gather(
            *(_verify_one(message, index, field, resolver, options) for index, field in checked)
        )
    skipped = [
        DkimVerdict(
            DkimResult.NEUTRAL,
            f"not evaluated: more than {options.max_signatures} signatures",
            header_index=index,
        )
        for index, _ in fields[options.max_signatures :]
    ]
    return [*verdicts, *skipped]


async def _verify_one(
    message: Message, index: int, field: Header, resolver: Resolver, options: DkimVerifyOptions
) -> DkimVerdict:
    try:
        signature = parse_signature(field, _PARSE_OPTIONS[options.accept_drafts])
    except UnsupportedAlgorithm as error:
        return _unparsed(field, index, DkimResult.FAIL, str(error))
    except SignatureError as error:
        return _unparsed(field, index, DkimResult.NEUTRAL, str(error))
    try:
        record, public_key = await fetch_key(resolver, signature)
    except KeyProblem as problem:
        return _verdict(signature, index, problem.result, problem.reason)
    verdict = await body_work(
        message.body_source, check_signature, message, index, field, signature, record, public_key, options
    )
    if verdict.passed and _unsigned_from_fields(message, signature.signed_headers):
        return replace(verdict, result=DkimResult.FAIL, reason=UNSIGNED_FROM)
    return verdict


def _unparsed(field: Header, index: int, result: DkimResult, reason: str) -> DkimVerdict:
    """A verdict for a signature too broken to parse, naming its d=, s= and a= when they can be read."""
    found: dict[str, str] = {}
    for spec in field.raw_value.decode("utf-8", errors="replace").split(";"):
        name, equals, value = spec.partition("=")
        if equals and name.strip() not in found:
            found[name.strip()] = value.strip()[:253]
    return DkimVerdict(
        result,
        reason,
        domain=found.get("d", ""),
        selector=found.get("s", ""),
        algorithm=found.get("a", ""),
        header_index=index,
    )


async def fetch_key(resolver: Resolver, signature: DkimSignature) -> tuple[KeyRecord, PublicKey]:
    """The key record at ``<s>._domainkey.<d>`` and its key, or a :class:`KeyProblem` saying why not."""
    answer = await resolver.lookup(signature.key_name, RRType.TXT)
    if answer.status.is_temporary_error:
        raise KeyProblem(DkimResult.TEMPERROR, f"key lookup failed: {answer.status.name}")
    texts = answer.texts()
    if not texts:
        raise KeyProblem(DkimResult.PERMERROR, f"no key record at {signature.key_name}")
    if len(texts) > 1:
        raise KeyProblem(DkimResult.PERMERROR, f"{len(texts)} key records at {signature.key_name}")
    try:
        record = parse_key_record_cached(texts[0])
        if record.revoked:
            raise KeyProblem(DkimResult.FAIL, KEY_REVOKED)
        _check_record_fits(record, signature)
        return record, load_public_key_cached(record)
    except KeyRecordError as error:
        raise KeyProblem(DkimResult.PERMERROR, str(error)) from None


@lru_cache(maxsize=1024)
def parse_key_record_cached(text: bytes) -> KeyRecord:
    return _parse_key_record(text.decode("utf-8", errors="replace"))


@lru_cache(maxsize=1024)
def load_public_key_cached(record: KeyRecord) -> PublicKey:
    return load_public_key(record)


def _check_record_fits(record: KeyRecord, signature: DkimSignature) -> None:
    """RFC 6376 §6.1.2 checks that make a key unusable for this signature."""
    if record.key_type != engine.key_type(signature.algorithm):
        raise KeyRecordError(f"key type k={record.key_type} does not match a={signature.algorithm}")
    wanted_hash = engine.hash_name(signature.algorithm)
    if record.hash_algorithms is not None and wanted_hash not in record.hash_algorithms:
        raise KeyRecordError(f"key h= does not allow {wanted_hash}")
    if not ({"*", "email"} & set(record.service_types)):
        raise KeyRecordError("key s= is not for email")
    identity_domain = signature.identity.rpartition("@")[2].lower()
    if record.strict_identity and identity_domain != signature.domain.lower():
        raise KeyRecordError("key t=s requires i= in exactly d=")


def check_signature(
    message: Message,
    index: int,
    field: Header,
    signature: DkimSignature,
    record: KeyRecord,
    public_key: PublicKey,
    options: DkimVerifyOptions,
) -> DkimVerdict:
    """The CPU part: policy checks on the key, then the body hash, then the signature itself."""
    bits = key_bits(public_key)

    def verdict(result: DkimResult, reason: str) -> DkimVerdict:
        return _verdict(signature, index, result, reason, record=record, bits=bits, body=body_octets)

    body_octets: int | None = None
    if options.accept_drafts and not _granularity_matches(record, signature):
        return verdict(DkimResult.PERMERROR, f"key g={record.granularity} does not match i=")
    if engine.key_type(signature.algorithm) == "rsa" and bits < options.min_rsa_bits:
        return verdict(DkimResult.FAIL, f"key too small ({bits} bits, fewer than {options.min_rsa_bits})")
    now = options.now if options.now is not None else int(time.time())
    if signature.expiration is not None and signature.expiration < now:
        return verdict(DkimResult.FAIL, SIGNATURE_EXPIRED)
    hash_name, length = engine.hash_name(signature.algorithm), signature.body_length
    body = engine.body_digest(message.body_source, signature.body_canon, hash_name, length)
    body_octets = body.canonical_length
    if length is not None and length > body_octets:
        return verdict(DkimResult.FAIL, f"l={length} is longer than the body ({body_octets})")
    if not hmac.compare_digest(body.digest, signature.body_hash):
        return verdict(DkimResult.FAIL, BODY_HASH_MISMATCH)
    names, header_canon = signature.signed_headers, signature.header_canon
    data = engine.header_hash_input(message.headers, names, field.raw, header_canon)
    if not engine.verify_bytes(public_key, signature.algorithm, data, signature.signature):
        return verdict(DkimResult.FAIL, SIGNATURE_MISMATCH)
    if signature.algorithm == engine.RSA_SHA1 and not options.allow_sha1:
        return verdict(DkimResult.POLICY, SHA1_REFUSED)
    if length is not None and length < body_octets and not options.accept_partial_body:
        return verdict(DkimResult.POLICY, PARTIAL_BODY.format(octets=body_octets - length))
    return verdict(DkimResult.PASS, VERIFIED)


def _unsigned_from_fields(message: Message, names: tuple[str, ...]) -> bool:
    """More From fields than ``h=`` names: one was added that the signature does not vouch for.

    RFC 6376 §8.15: a second From shown to the reader above the signed one is the classic forgery
    of a signed message; verifiers treat the From count as signed (dkimpy does the same).
    """
    signed = [name.strip().lower() for name in names].count("from")
    return [field.lower_name for field in message.headers].count("from") > signed


def _granularity_matches(record: KeyRecord, signature: DkimSignature) -> bool:
    """RFC 4871 §3.6.1 ``g=``: a pattern (one ``*`` allowed) the local part of ``i=`` must match."""
    if record.granularity is None:
        return True
    pattern = record.granularity
    local = signature.identity.rpartition("@")[0]
    if not pattern:
        return False  # "An empty g= value never matches any addresses."
    if "*" not in pattern:
        return local == pattern
    prefix, _, suffix = pattern.partition("*")
    return len(local) >= len(prefix) + len(suffix) and local.startswith(prefix) and local.endswith(suffix)


def _verdict(
    signature: DkimSignature,
    index: int,
    result: DkimResult,
    reason: str,
    record: KeyRecord | None = None,
    bits: int | None = None,
    body: int | None = None,
) -> DkimVerdict:
    unsigned: int | None = 0
    if signature.body_length is not None:
        unsigned = None if body is None else max(0, body - signature.body_length)
    return DkimVerdict(
        result=result,
        reason=reason,
        domain=signature.domain,
        selector=signature.selector,
        algorithm=signature.algorithm,
        identity=signature.identity,
        canonicalization=signature.canonicalization,
        signed_headers=signature.signed_headers,
        body_length=signature.body_length,
        unsigned_body_octets=unsigned,
        testing=record.testing if record is not None else False,
        timestamp=signature.timestamp,
        expiration=signature.expiration,
        key_bits=bits,
        signature_prefix=signature.b_text[:12],
        header_index=index,
    )
