"""Validate a message's Authenticated Received Chain (RFC 8617 §5.2).

The steps are the RFC's, in its order: collect the sets; a newest seal that already says
``cv=fail`` ends it; the structure must be sound (one AAR, AMS and AS per instance, 1..N without
gaps, ``cv=none`` at i=1 and ``pass`` above); the newest AMS must verify; older AMSes only decide
``oldest_pass``; then every seal, newest first. Keys for all signatures are fetched concurrently
through the DKIM engine's :func:`fetch_key`, which applies the same key-record checks as DKIM.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from mailtoaster.auth.arc.headers import (
    ARC_AUTHENTICATION_RESULTS,
    ARC_MESSAGE_SIGNATURE,
    ARC_SEAL,
    SET_ORDER,
    ArcAuthenticationResults,
    ArcField,
    ArcHeaderError,
    ArcMessageSignature,
    ArcSeal,
    field_instance,
    is_arc_field,
    parse_arc_field,
    seal_hash_input,
)
from mailtoaster.auth.arc.result import ArcOptions, ArcOutcome, ArcResult, ArcSetDetails
from mailtoaster.auth.dkim import engine
from mailtoaster.auth.dkim.key import KeyRecord, PublicKey, key_bits
from mailtoaster.auth.dkim.result import DkimResult
from mailtoaster.auth.dkim.signature import DkimSignature
from mailtoaster.auth.dkim.verify import DkimVerifyOptions, KeyProblem, check_signature, fetch_key
from mailtoaster.dns import Resolver
from mailtoaster.message import Header, Message, body_work

NO_SETS = "no ARC sets"
CHAIN_VERIFIED = "chain verified"
ARC_ALGORITHMS = (engine.RSA_SHA256, engine.ED25519_SHA256)
"""rsa-sha1 is refused outright (RFC 8301; the ValiMail suite's ``*_a_sha1`` cases fail)."""


@dataclass(frozen=True)
class ArcSet:
    """One complete, well-formed set."""

    instance: int
    aar: ArcAuthenticationResults
    ams: ArcMessageSignature
    seal: ArcSeal

    @property
    def fields(self) -> tuple[Header, Header, Header]:
        """In the order a seal hashes them."""
        return (self.aar.field, self.ams.field, self.seal.field)


@dataclass
class Collected:
    """The message's ARC fields grouped by instance, with what could not be parsed."""

    highest: int = 0
    by_instance: dict[int, list[ArcField]] = field(default_factory=dict)
    errors: list[tuple[int | None, str]] = field(default_factory=list)
    """(instance if readable, reason) per field that did not parse."""


@dataclass(frozen=True)
class _Check:
    ok: bool
    reason: str
    temporary: bool = False


@dataclass(frozen=True)
class _Failure:
    field: str
    instance: int
    check: _Check


_F = TypeVar("_F", ArcAuthenticationResults, ArcMessageSignature, ArcSeal)


async def validate_arc(message: Message, resolver: Resolver, options: ArcOptions | None = None) -> ArcOutcome:
    """The chain validation status of ``message``, with the reason and per-set details. Never raises."""
    options = options or ArcOptions()
    collected = collect(message.headers)
    if not collected.highest and not collected.errors:
        return ArcOutcome(ArcResult.NONE, NO_SETS)
    broken = _terminated(collected) or structure_problem(collected)
    if broken is not None:
        return broken
    sets = chain_sets(collected)
    return await _verify_chain(message, sets, resolver, options)


def collect(headers: Sequence[Header]) -> Collected:
    """Parse every ARC field; one that does not parse is recorded as an error, under its instance
    when at least ``i=`` can be read."""
    collected = Collected()
    for header in headers:
        if not is_arc_field(header):
            continue
        instance = field_instance(header)
        if instance is not None:
            collected.highest = max(collected.highest, instance)
        try:
            parsed = parse_arc_field(header)
        except ArcHeaderError as error:
            where = f"i={instance}" if instance is not None else "(no usable i=)"
            collected.errors.append((instance, f"{_canonical_name(header)} {where}: {error}"))
            continue
        collected.by_instance.setdefault(parsed.instance, []).append(parsed)
    return collected


def chain_sets(collected: Collected) -> list[ArcSet]:
    """The sets, i=1 first; only meaningful once :func:`_structure_problem` found nothing."""
    sets = []
    for instance in range(1, collected.highest + 1):
        fields = collected.by_instance[instance]
        sets.append(
            ArcSet(
                instance,
                _only(fields, ArcAuthenticationResults),
                _only(fields, ArcMessageSignature),
                _only(fields, ArcSeal),
            )
        )
    return sets


def _only(fields: list[ArcField], kind: type[_F]) -> _F:
    return next(item for item in fields if isinstance(item, kind))


def _canonical_name(header: Header) -> str:
    return next(name for name in SET_ORDER if header.is_named(name))


def _terminated(collected: Collected) -> ArcOutcome | None:
    """Step 2: the newest sealer already found the chain broken; nothing after it can mend that."""
    newest = collected.by_instance.get(collected.highest, [])
    if any(isinstance(item, ArcSeal) and item.chain_validation == "fail" for item in newest):
        reason = f"ARC-Seal i={collected.highest} says cv=fail: the chain was already broken"
        return ArcOutcome(
            ArcResult.FAIL, reason, collected.highest, failed_instance=collected.highest, terminated=True
        )
    return None


def structure_problem(collected: Collected) -> ArcOutcome | None:
    """Step 3: fields that did not parse, a missing or duplicated field in 1..N, or a wrong ``cv=``.

    The reason given is the first field error, else the newest set's problem.
    """
    problems = list(collected.errors)
    for instance in range(collected.highest, 0, -1):
        found = _set_problems(instance, collected.by_instance.get(instance, []))
        problems.extend((instance, text) for text in found)
    if not problems:
        return None
    failed, reason = problems[0]
    return ArcOutcome(ArcResult.FAIL, reason, collected.highest, failed_instance=failed)


def _set_problems(instance: int, fields: list[ArcField]) -> list[str]:
    problems = []
    for name, kind in (
        (ARC_SEAL, ArcSeal),
        (ARC_MESSAGE_SIGNATURE, ArcMessageSignature),
        (ARC_AUTHENTICATION_RESULTS, ArcAuthenticationResults),
    ):
        count = sum(isinstance(item, kind) for item in fields)
        if count != 1:
            problems.append(f"set i={instance} has {count or 'no'} {name} field{'s' if count > 1 else ''}")
    expected = "none" if instance == 1 else "pass"
    for seal in (item for item in fields if isinstance(item, ArcSeal)):
        if seal.chain_validation != expected:
            problems.append(f"ARC-Seal i={instance} says cv={seal.chain_validation}, must be {expected}")
    return problems


async def _verify_chain(
    message: Message, sets: list[ArcSet], resolver: Resolver, options: ArcOptions
) -> ArcOutcome:
    """Steps 4 to 8, with every key fetched up front, concurrently."""
    keys = await _fetch_keys(resolver, [sig for item in sets for sig in (item.ams.sig, item.seal.sig)])
    signatures: dict[int, bool] = {}
    seals: dict[int, bool] = {}
    newest = sets[-1]
    latest = await body_work(message.body_source, _check_signature, message, newest.ams, keys, options)
    signatures[newest.instance] = latest.ok
    failure = None if latest.ok else _Failure(ARC_MESSAGE_SIGNATURE, newest.instance, latest)
    oldest_pass = 0
    if failure is None:
        oldest_pass = _oldest_pass(message, sets, keys, options, signatures)
        failure = _first_bad_seal(sets, keys, options, seals)
    details = tuple(_details(item, signatures.get(item.instance), seals.get(item.instance)) for item in sets)
    if failure is not None:
        return ArcOutcome(
            ArcResult.FAIL,
            f"{failure.field} i={failure.instance}: {failure.check.reason}",
            len(sets),
            failed_instance=failure.instance,
            details=details,
            temporary=failure.check.temporary,
        )
    return ArcOutcome(ArcResult.PASS, CHAIN_VERIFIED, len(sets), oldest_pass=oldest_pass, details=details)


def _oldest_pass(
    message: Message,
    sets: list[ArcSet],
    keys: dict[_KeyId, _Key],
    options: ArcOptions,
    signatures: dict[int, bool],
) -> int:
    """Step 6: older AMSes, newest first, until one fails; 0 when all verify.

    Each result goes into ``signatures`` for the report.
    """
    for item in reversed(sets[:-1]):
        signatures[item.instance] = _check_signature(message, item.ams, keys, options).ok
        if not signatures[item.instance]:
            return item.instance + 1
    return 0


def _first_bad_seal(
    sets: list[ArcSet], keys: dict[_KeyId, _Key], options: ArcOptions, seals: dict[int, bool]
) -> _Failure | None:
    """Step 7: every seal, newest first, stopping at the first that fails. Records each in ``seals``."""
    for item in reversed(sets):
        result = _check_seal(sets, item, keys, options)
        seals[item.instance] = result.ok
        if not result.ok:
            return _Failure(ARC_SEAL, item.instance, result)
    return None


_Key = tuple[KeyRecord, PublicKey] | KeyProblem
_KeyId = tuple[str, str]


async def _fetch_keys(resolver: Resolver, signatures: list[DkimSignature]) -> dict[_KeyId, _Key]:
    """Each distinct (key name, algorithm) once; a failure is kept as the value, not raised."""
    wanted = {_key_id(sig): sig for sig in signatures}
    found = await asyncio.gather(*(_fetch_one(resolver, sig) for sig in wanted.values()))
    return dict(zip(wanted, found, strict=True))


def _key_id(sig: DkimSignature) -> _KeyId:
    return (sig.key_name.lower(), sig.algorithm)


async def _fetch_one(resolver: Resolver, sig: DkimSignature) -> _Key:
    try:
        return await fetch_key(resolver, sig)
    except KeyProblem as problem:
        return problem


def _usable_key(
    sig: DkimSignature, keys: dict[_KeyId, _Key], options: ArcOptions
) -> _Check | tuple[KeyRecord, PublicKey]:
    """The key for ``sig``, or the check result that says why there is none to use."""
    if sig.algorithm not in ARC_ALGORITHMS:
        return _Check(False, f"algorithm {sig.algorithm} is not acceptable for ARC")
    if sig.algorithm == engine.ED25519_SHA256 and not options.allow_ed25519:
        return _Check(False, "ed25519-sha256 is not accepted (RFC 8617 names only rsa-sha256)")
    key = keys[_key_id(sig)]
    if isinstance(key, KeyProblem):
        return _Check(False, key.reason, temporary=key.result is DkimResult.TEMPERROR)
    return key


def _check_signature(
    message: Message, ams: ArcMessageSignature, keys: dict[_KeyId, _Key], options: ArcOptions
) -> _Check:
    """An AMS is a DKIM signature in all but name: the DKIM engine checks it, body hash and all."""
    key = _usable_key(ams.sig, keys, options)
    if isinstance(key, _Check):
        return key
    record, public_key = key
    dkim_options = DkimVerifyOptions(now=options.now, min_rsa_bits=options.min_rsa_bits)
    index = message.headers.index(ams.field)
    verdict = check_signature(message, index, ams.field, ams.sig, record, public_key, dkim_options)
    return _Check(verdict.passed, verdict.reason)


def _check_seal(sets: list[ArcSet], item: ArcSet, keys: dict[_KeyId, _Key], options: ArcOptions) -> _Check:
    key = _usable_key(item.seal.sig, keys, options)
    if isinstance(key, _Check):
        return key
    _, public_key = key
    bits = key_bits(public_key)
    if engine.key_type(item.seal.sig.algorithm) == "rsa" and bits < options.min_rsa_bits:
        return _Check(False, f"key too small ({bits} bits, fewer than {options.min_rsa_bits})")
    covered = list(itertools.chain.from_iterable(earlier.fields for earlier in sets[: item.instance]))
    data = seal_hash_input(covered[:-1], item.seal.field.raw)
    if not engine.verify_bytes(public_key, item.seal.sig.algorithm, data, item.seal.sig.signature):
        return _Check(False, "signature did not verify")
    return _Check(True, "seal verified")


def _details(item: ArcSet, signature_valid: bool | None, seal_valid: bool | None) -> ArcSetDetails:
    return ArcSetDetails(
        instance=item.instance,
        seal_domain=item.seal.sig.domain,
        seal_selector=item.seal.sig.selector,
        chain_validation=item.seal.chain_validation,
        signature_domain=item.ams.sig.domain,
        signature_selector=item.ams.sig.selector,
        algorithm=item.seal.sig.algorithm,
        authserv_id=item.aar.authserv_id,
        results=item.aar.results,
        signature_valid=signature_valid,
        seal_valid=seal_valid,
    )
