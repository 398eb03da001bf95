"""The three ARC header fields (RFC 8617 §4.1), parsed into plain data.

ARC-Message-Signature and ARC-Seal are DKIM-style tag lists, so each is parsed with the shared
tag-list parser and also exposed as a :class:`DkimSignature` (``sig``): that view is what lets the
DKIM engine fetch their keys and check them, instead of a second copy of that code living here.
Every problem raises :class:`ArcHeaderError` with a reason (without the field name, which the
caller prefixes along with the instance); the validator turns it into ``fail``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailtoaster.auth.dkim import canon
from mailtoaster.auth.dkim.engine import ALGORITHMS, header_hash_input
from mailtoaster.auth.dkim.signature import (
    DkimSignature,
    SignatureError,
    decode_base64,
    number_tag,
    parse_canonicalization,
)
from mailtoaster.auth.tags import TagListError, parse_tag_list, strip_fws
from mailtoaster.keys.names import check_dns_name
from mailtoaster.message import Header

ARC_SEAL = "ARC-Seal"
ARC_MESSAGE_SIGNATURE = "ARC-Message-Signature"
ARC_AUTHENTICATION_RESULTS = "ARC-Authentication-Results"
SET_ORDER = (ARC_AUTHENTICATION_RESULTS, ARC_MESSAGE_SIGNATURE, ARC_SEAL)
"""The fields of one set in the order the ARC-Seal hashes them (RFC 8617 §5.1.1)."""
MAX_INSTANCE = 50
"""RFC 8617 §4.2.1: i= is 1..50; a chain with more sets fails."""

CHAIN_STATES = ("none", "fail", "pass")
SEAL_TAGS = ("i", "a", "b", "cv", "d", "s")
SIGNATURE_TAGS = ("i", "a", "b", "bh", "d", "h", "s")
DEFAULT_CANONICALIZATION = "relaxed/relaxed"
"""What an AMS without ``c=`` means. DKIM's default is simple/simple, but every ARC implementation
(dkimpy, OpenARC, the ValiMail suite's ``ams_fields_c_na``) reads a missing ``c=`` as relaxed."""

_INSTANCE = re.compile(r"[0-9]{1,6}\Z")
_AAR_PREFIX = re.compile(r"\A[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([^; \t\r\n]*)[ \t\r\n]*;(.*)\Z", re.DOTALL)
_MAX_TIME_DIGITS = 12


class ArcHeaderError(ValueError):
    """An ARC header field is malformed; the message says which field and why."""


@dataclass(frozen=True)
class ArcSeal:
    instance: int
    chain_validation: str
    """``cv=``: ``none``, ``pass`` or ``fail`` (lower-case as RFC 8617's ABNF writes them)."""
    sig: DkimSignature
    """The seal as the DKIM engine sees a signature (``signed_headers`` empty, no body hash)."""
    field: Header


@dataclass(frozen=True)
class ArcMessageSignature:
    instance: int
    sig: DkimSignature
    field: Header


@dataclass(frozen=True)
class ArcAuthenticationResults:
    instance: int
    authserv_id: str
    results: str
    """Everything after the authserv-id (the resinfo list), unfolded, white space collapsed."""
    field: Header


ArcField = ArcSeal | ArcMessageSignature | ArcAuthenticationResults


def is_arc_field(field: Header) -> bool:
    return any(field.is_named(name) for name in SET_ORDER)


def parse_arc_field(field: Header) -> ArcField:
    """Dispatch on the field name; ``field`` must be one of the three ARC fields."""
    if field.is_named(ARC_SEAL):
        return parse_seal(field)
    if field.is_named(ARC_MESSAGE_SIGNATURE):
        return parse_message_signature(field)
    return parse_authentication_results(field)


def field_instance(field: Header) -> int | None:
    """The field's ``i=`` when it can be read at all, even if the rest of the field is broken.

    Lets the validator count sets (and the sealer number the next one) before deciding what is
    wrong with them.
    """
    try:
        if field.is_named(ARC_AUTHENTICATION_RESULTS):
            return parse_authentication_results(field).instance
        return _instance(_tags(field))
    except ArcHeaderError:
        return None


def parse_seal(field: Header) -> ArcSeal:
    tags = _tags(field)
    _require(tags, SEAL_TAGS)
    if "h" in tags:
        raise ArcHeaderError("h= is not allowed in an ARC-Seal (RFC 8617 §4.1.3)")
    chain_validation = tags["cv"]
    if chain_validation not in CHAIN_STATES:
        raise ArcHeaderError(f"cv={chain_validation[:20]!r} is not none, pass or fail")
    sig = _signature(tags, canon.RELAXED, canon.RELAXED, (), body_hash=b"")
    return ArcSeal(_instance(tags), chain_validation, sig, field)


def parse_message_signature(field: Header) -> ArcMessageSignature:
    tags = _tags(field)
    _require(tags, SIGNATURE_TAGS)
    try:
        header_canon, body_canon = parse_canonicalization(tags.get("c", DEFAULT_CANONICALIZATION))
        body_hash = decode_base64(strip_fws(tags["bh"]), "bh")
    except SignatureError as error:
        raise ArcHeaderError(str(error)) from None
    if not body_hash:
        raise ArcHeaderError("bh= is empty")
    signed = tuple(name.strip(" \t\r\n") for name in tags["h"].split(":"))
    if ARC_SEAL.lower() in (name.lower() for name in signed):
        raise ArcHeaderError("h= includes ARC-Seal, which an AMS must not sign (RFC 8617 §4.1.2)")
    sig = _signature(tags, header_canon, body_canon, signed, body_hash)
    return ArcMessageSignature(_instance(tags), sig, field)


def parse_authentication_results(field: Header) -> ArcAuthenticationResults:
    """``i=<n>;`` first (RFC 8617 §4.1.1), then an Authentication-Results value (authserv-id; results)."""
    match = _AAR_PREFIX.match(field.value)
    if match is None:
        raise ArcHeaderError("does not start with 'i=<instance>;'")
    instance = _instance_value(match.group(1))
    rest = " ".join(match.group(2).split())
    authserv_id, _, results = rest.partition(";")
    authserv_id = authserv_id.strip()
    if not authserv_id:
        raise ArcHeaderError("has no authserv-id")
    return ArcAuthenticationResults(instance, authserv_id.split(" ")[0], results.strip(), field)


def _tags(field: Header) -> dict[str, str]:
    try:
        return parse_tag_list(field.raw_value.decode("utf-8", errors="replace"))
    except TagListError as error:
        raise ArcHeaderError(f"syntax: {error}") from None


def _require(tags: dict[str, str], names: tuple[str, ...]) -> None:
    missing = [name for name in names if name not in tags]
    if missing:
        raise ArcHeaderError(f"lacks required tag(s) {', '.join(missing)}=")


def _instance(tags: dict[str, str]) -> int:
    if "i" not in tags:
        raise ArcHeaderError("no i= (instance) tag")
    return _instance_value(tags["i"])


def _instance_value(value: str) -> int:
    value = strip_fws(value)
    if not _INSTANCE.match(value) or not 1 <= int(value) <= MAX_INSTANCE:
        raise ArcHeaderError(f"i={value[:12]!r} is not an instance number 1..{MAX_INSTANCE}")
    return int(value)


def _signature(
    tags: dict[str, str], header_canon: str, body_canon: str, signed: tuple[str, ...], body_hash: bytes
) -> DkimSignature:
    """The DKIM engine's view of an AMS or AS: identity ``@d``, no ``v=``, no ``l=`` (ARC has none)."""
    algorithm = tags["a"].lower()
    if algorithm not in ALGORITHMS:
        raise ArcHeaderError(f"unsupported algorithm a={tags['a'][:30]!r}")
    domain = _dns_name(tags["d"], "d=")
    selector = _dns_name(tags["s"], "s=")
    b_text = strip_fws(tags["b"])
    try:
        signature = decode_base64(b_text, "b")
        timestamp = number_tag(tags, "t", _MAX_TIME_DIGITS)
        expiration = number_tag(tags, "x", _MAX_TIME_DIGITS)
    except SignatureError as error:
        raise ArcHeaderError(str(error)) from None
    if not signature:
        raise ArcHeaderError("b= is empty")
    return DkimSignature(
        algorithm=algorithm,
        signature=signature,
        body_hash=body_hash,
        header_canon=header_canon,
        body_canon=body_canon,
        domain=domain,
        selector=selector,
        signed_headers=signed,
        identity="@" + domain,
        body_length=None,
        timestamp=timestamp,
        expiration=expiration,
        version="",
        b_text=b_text,
    )


def _dns_name(value: str, what: str) -> str:
    """``d=`` and ``s=`` must be DNS names: they are looked up, and echoed into reports."""
    try:
        check_dns_name(value, what, allow_underscore=True)
    except ValueError as error:
        raise ArcHeaderError(str(error)) from None
    return value


def seal_hash_input(chain: list[Header], seal_field: bytes) -> bytes:
    """What an ARC-Seal signs (RFC 8617 §5.1.1): ``chain`` (every field of the sets it covers, in
    hash order: i=1 AAR, AMS, AS, i=2 ..., its own AAR and AMS), relaxed, then itself without ``b=``.

    :func:`engine.header_hash_input` picks each named field bottom-up, the DKIM rule; handing it the
    fields in reverse order makes that pick exactly ``chain`` in order, so the seal reuses the engine.
    """
    names = [field.name for field in chain]
    return header_hash_input(list(reversed(chain)), names, seal_field, canon.RELAXED)
