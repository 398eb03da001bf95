"""The DomainKey-Signature header field (RFC 4870 §3.3), parsed into plain data.

Parsing never raises anything but :class:`SignatureSyntaxError`, whose message becomes the
``SYNTAX`` verdict's reason: a verifier must turn any field, however broken, into a result.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from mailtoaster.auth.tags import TagListError, parse_tag_list, strip_fws
from mailtoaster.keys.names import check_dns_name

FIELD_NAME = "DomainKey-Signature"
ALGORITHM = "rsa-sha1"
"""The only algorithm RFC 4870 defines (and the default when ``a=`` is absent)."""
SIMPLE = "simple"
NOFWS = "nofws"
CANONICALIZATIONS = (SIMPLE, NOFWS)
QUERY_METHOD = "dns"


class SignatureSyntaxError(ValueError):
    """The field is not a usable DomainKey-Signature; the message says which tag and why."""


@dataclass(frozen=True)
class DkSignature:
    domain: str
    """``d=``, lower-cased, without a trailing dot."""
    selector: str
    """``s=``, lower-cased."""
    signature: bytes
    """``b=`` decoded."""
    canonicalization: str = SIMPLE
    headers: tuple[str, ...] | None = None
    """``h=`` names lower-cased, or None when absent (then every field after the signature is signed)."""
    algorithm: str = ALGORITHM
    signature_b64: str = ""

    @property
    def key_name(self) -> str:
        """Where the public key lives: ``<selector>._domainkey.<domain>``."""
        return f"{self.selector}._domainkey.{self.domain}"


def parse_signature(value: str) -> DkSignature:
    """Parse a DomainKey-Signature field body (everything after the colon)."""
    try:
        tags = parse_tag_list(value)
    except TagListError as error:
        raise SignatureSyntaxError(f"signature tag list: {error}") from None
    algorithm = tags.get("a", ALGORITHM).lower()
    if algorithm != ALGORITHM:
        raise SignatureSyntaxError(f"unsupported algorithm a={algorithm[:40]}")
    canonicalization = tags.get("c", SIMPLE).lower()
    if canonicalization not in CANONICALIZATIONS:
        raise SignatureSyntaxError(f"unsupported canonicalization c={canonicalization[:40]}")
    _check_query(tags.get("q", QUERY_METHOD))
    encoded = strip_fws(_required(tags, "b"))
    return DkSignature(
        domain=_name(_required(tags, "d"), "d"),
        selector=_name(_required(tags, "s"), "s"),
        signature=_base64(encoded),
        canonicalization=canonicalization,
        headers=_header_list(tags["h"]) if "h" in tags else None,
        algorithm=algorithm,
        signature_b64=encoded,
    )


def _required(tags: dict[str, str], name: str) -> str:
    if not tags.get(name):
        raise SignatureSyntaxError(f"missing or empty {name}= tag")
    return tags[name]


def _check_query(value: str) -> None:
    """``q=`` defaults to ``dns``, the only method defined; an empty or unknown list is unusable."""
    methods = [method.strip(" \t\r\n").lower() for method in value.split(":")]
    if QUERY_METHOD not in methods:
        raise SignatureSyntaxError(f"unsupported query method q={value[:40]!r}")


def _name(value: str, tag: str) -> str:
    try:
        return check_dns_name(value, f"{tag}= value", allow_underscore=True)
    except ValueError as error:
        raise SignatureSyntaxError(str(error)) from None


def _base64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureSyntaxError("b= is not valid base64") from None


def _header_list(value: str) -> tuple[str, ...]:
    names = tuple(name for name in (part.strip(" \t\r\n").lower() for part in value.split(":")) if name)
    if not names:
        raise SignatureSyntaxError("h= names no header field")
    return names
