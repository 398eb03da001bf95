"""Verify every DomainKey-Signature of a message (RFC 4870 §3.7) and read the sender's policy.

Each signature covers only the header fields *below* it (those it selects with ``h=``, or all of
them), so each is checked against its own slice of the header. The sending address comes from the
signed fields: a Sender added below the signature and not in ``h=`` cannot change who signed, and
one that is signed must match ``d=``. Nothing raises: every problem becomes a verdict.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from mailtoaster.auth.dkim.key import KeyRecord, KeyRecordError, load_public_key, parse_key_record
from mailtoaster.auth.domainkeys.canon import signed_digest
from mailtoaster.auth.domainkeys.policy import lookup_policy
from mailtoaster.auth.domainkeys.result import DkStatus, DomainKeysOutcome, DomainKeysVerdict
from mailtoaster.auth.domainkeys.sender import SendingAddress, is_same_or_parent, sending_address
from mailtoaster.auth.domainkeys.signature import (
    FIELD_NAME,
    DkSignature,
    SignatureSyntaxError,
    parse_signature,
)
from mailtoaster.dns import DnsStatus, Resolver, RRType
from mailtoaster.message import Header, Message, body_work

MAX_SIGNATURES = 16
"""Signatures beyond this many are not evaluated (``NORESOURCE``), bounding the DNS work one message
can cause; the DKIM engine uses the same limit."""
_PREFIX_LENGTH = 8


class _Verdict(Exception):
    """Internal: stop checking this signature with this status and reason."""

    def __init__(self, status: DkStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def verify_domainkeys(message: Message, resolver: Resolver) -> DomainKeysOutcome:
    """Check every DomainKey-Signature (top to bottom) and summarise; never raises for bad input."""
    positions = [i for i, field in enumerate(message.headers) if field.is_named(FIELD_NAME)]
    checked = await asyncio.gather(*(_verify_one(message, i, resolver) for i in positions[:MAX_SIGNATURES]))
    verdicts = (*checked, *(_not_evaluated(i) for i in positions[MAX_SIGNATURES:]))
    chosen = next((v for v in verdicts if v.passed), verdicts[0] if verdicts else None)
    sender = sending_address(message.headers)
    passed = chosen is not None and chosen.passed
    policy = await lookup_policy(sender.domain, resolver) if sender.ok and not passed else None
    if chosen is None:
        return DomainKeysOutcome(
            status=DkStatus.NOSIG,
            reason="no DomainKey-Signature header field",
            sending_header=sender.header,
            sending_address=sender.address,
            policy=policy,
        )
    return DomainKeysOutcome(
        status=chosen.status,
        reason=chosen.reason,
        verdicts=verdicts,
        domain=chosen.domain,
        selector=chosen.selector,
        canonicalization=chosen.canonicalization,
        sending_header=chosen.sending_header or sender.header,
        sending_address=chosen.sending_address or sender.address,
        key_testing=chosen.key_testing,
        policy=policy,
    )


async def _verify_one(message: Message, index: int, resolver: Resolver) -> DomainKeysVerdict:
    field = message.headers[index]
    verdict = DomainKeysVerdict(DkStatus.INTERNAL, "not checked", header_index=index)
    try:
        signature = parse_signature(field.raw_value.decode("ascii", errors="replace"))
        verdict = _describe(verdict, signature)
        signed = select_signed_fields(message.headers[index + 1 :], signature.headers)
        verdict = replace(verdict, signed_headers=tuple(f.name for f in signed))
        sender = sending_address(signed)
        verdict = replace(verdict, sending_header=sender.header, sending_address=sender.address)
        _check_sender(sender, signature)
        record = await _fetch_key(signature, resolver)
        key = _usable_key(record, sender)
        verdict = replace(verdict, key_testing=record.testing, key_bits=key.key_size)
        digest = await body_work(
            message.body_source, signed_digest, signed, message.body_source, signature.canonicalization
        )
        _check_signature(key, signature, digest)
    except SignatureSyntaxError as error:
        return replace(verdict, status=DkStatus.SYNTAX, reason=str(error))
    except _Verdict as stop:
        return replace(verdict, status=stop.status, reason=stop.reason)
    except Exception as error:  # a verifier must answer; INTERNAL is libdomainkeys' answer to the unforeseen
        return replace(verdict, status=DkStatus.INTERNAL, reason=f"internal error: {error!r}"[:200])
    return replace(verdict, status=DkStatus.OK, reason="signature verified")


def _not_evaluated(index: int) -> DomainKeysVerdict:
    reason = f"not evaluated: more than {MAX_SIGNATURES} DomainKey-Signature fields"
    return DomainKeysVerdict(DkStatus.NORESOURCE, reason, header_index=index)


def _describe(verdict: DomainKeysVerdict, signature: DkSignature) -> DomainKeysVerdict:
    return replace(
        verdict,
        domain=signature.domain,
        selector=signature.selector,
        canonicalization=signature.canonicalization,
        signature_prefix=signature.signature_b64[:_PREFIX_LENGTH],
    )


def select_signed_fields(below: Sequence[Header], names: Sequence[str] | None) -> list[Header]:
    """The fields a signature covers, in the order they are hashed.

    Without ``h=``: every field below the signature, in message order. With it: in ``h=`` order,
    since RFC 4870 §3.3 says ``h=`` lists the headers "in the order presented to the signing
    algorithm" (so fields reordered in transit still verify), and each listed name brings *all*
    its occurrences below the signature. A name listed n times takes one field per extra listing
    from the bottom, its first listing the rest: Mail::DKIM's reading, which also gives message
    order for the one-entry-per-occurrence lists signers (ours included) write.
    """
    if names is None:
        return list(below)
    remaining: dict[str, list[Header]] = {name.lower(): [] for name in names}
    for field in below:
        remaining.get(field.name.lower(), []).append(field)
    listings = Counter(name.lower() for name in names)
    selected: list[Header] = []
    for name in reversed([name.lower() for name in names]):
        listings[name] -= 1
        fields = remaining[name]
        if listings[name] > 0:
            selected[:0] = fields[-1:]
            del fields[-1:]
        else:
            selected[:0] = fields
            remaining[name] = []
    return selected


def _check_sender(sender: SendingAddress, signature: DkSignature) -> None:
    if not sender.header:
        raise _Verdict(DkStatus.SYNTAX, "no signed Sender or From header field")
    if not sender.ok:
        raise _Verdict(DkStatus.SYNTAX, f"signed {sender.header} has no usable address: {sender.error}")
    if not is_same_or_parent(sender.domain, signature.domain):
        raise _Verdict(
            DkStatus.SYNTAX,
            f"d={signature.domain} is neither the {sender.header} domain {sender.domain} nor a parent of it",
        )


async def _fetch_key(signature: DkSignature, resolver: Resolver) -> KeyRecord:
    answer = await resolver.lookup(signature.key_name, RRType.TXT)
    if answer.status.is_temporary_error:
        raise _Verdict(DkStatus.CANTVRFY, f"key lookup {signature.key_name}: {answer.status.value}")
    texts = answer.texts() if answer.status is DnsStatus.NOERROR else []
    if not texts:
        raise _Verdict(DkStatus.NOKEY, f"no key record at {signature.key_name} ({answer.status.value})")
    try:
        return parse_key_record(texts[0].decode("ascii", errors="replace"))
    except KeyRecordError as error:
        raise _Verdict(DkStatus.BADKEY, f"{signature.key_name}: {error}") from None


def _usable_key(record: KeyRecord, sender: SendingAddress) -> rsa.RSAPublicKey:
    """Apply the key record's restrictions (RFC 4870 §3.2.3, plus the DKIM-form tags) and load it."""
    if record.revoked:
        raise _Verdict(DkStatus.REVOKED, "key revoked (empty p=)")
    if record.key_type != "rsa":
        raise _Verdict(DkStatus.BADKEY, f"key type k={record.key_type} is not usable with DomainKeys")
    if record.hash_algorithms is not None and "sha1" not in record.hash_algorithms:
        raise _Verdict(DkStatus.BADKEY, "key record h= does not allow sha1")
    if not {"*", "email"} & set(record.service_types):
        raise _Verdict(DkStatus.BADKEY, "key record s= does not include email")
    if record.granularity and not granularity_matches(record.granularity, sender.local_part):
        raise _Verdict(DkStatus.BADKEY, f"key g={record.granularity} does not match {sender.address}")
    try:
        key = load_public_key(record)
    except KeyRecordError as error:
        raise _Verdict(DkStatus.BADKEY, str(error)) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise _Verdict(DkStatus.BADKEY, "not an RSA key")
    return key


def granularity_matches(pattern: str, local_part: str) -> bool:
    """RFC 4870 asks ``g=`` to equal the local part exactly; the one ``*`` wildcard of RFC 4871 is
    accepted too, as Mail::DKIM does (its corpus signs with ``g=jl*g``). Case matters."""
    if "*" not in pattern:
        return pattern == local_part
    head, _, tail = pattern.partition("*")
    long_enough = len(local_part) >= len(head) + len(tail)
    return long_enough and local_part.startswith(head) and local_part.endswith(tail)


def _check_signature(key: rsa.RSAPublicKey, signature: DkSignature, digest: bytes) -> None:
    """``digest`` is the SHA-1 of the signed data (:func:`signed_digest`)."""
    try:
        key.verify(signature.signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
    except InvalidSignature:
        raise _Verdict(DkStatus.BADSIG, "signature does not verify") from None
