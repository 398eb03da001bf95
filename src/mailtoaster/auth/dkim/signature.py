"""The DKIM-Signature header field (RFC 6376 §3.5), parsed and checked as §6.1.1 requires.

:func:`parse_signature` raises :class:`SignatureError` with a reason a postmaster can read; the
verifier reports it as ``neutral`` (RFC 8601 §2.7.1: "contained syntax errors").
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from mailtoaster.auth.dkim import canon
from mailtoaster.auth.dkim.engine import ALGORITHMS
from mailtoaster.auth.tags import TagListError, parse_tag_list, strip_fws
from mailtoaster.message import Header

REQUIRED_TAGS = ("v", "a", "b", "bh", "d", "h", "s")
_DIGITS = re.compile(r"[0-9]+\Z")
_MAX_LENGTH_DIGITS = 76
_MAX_TIME_DIGITS = 12
_QP_ESCAPE = re.compile(r"=([0-9A-Fa-f]{2})")


class SignatureError(ValueError):
    """The signature field is malformed or violates RFC 6376 §6.1.1."""


class UnsupportedAlgorithm(SignatureError):
    """``a=`` names an algorithm this verifier does not implement."""


@dataclass(frozen=True)
class DkimSignature:
    algorithm: str
    signature: bytes
    body_hash: bytes
    header_canon: str
    body_canon: str
    domain: str
    selector: str
    signed_headers: tuple[str, ...]
    identity: str
    body_length: int | None
    timestamp: int | None
    expiration: int | None
    version: str
    b_text: str
    """``b=`` as base64 text (white space removed), for ``header.b``."""

    @property
    def canonicalization(self) -> str:
        return f"{self.header_canon}/{self.body_canon}"

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


@dataclass(frozen=True)
class ParseOptions:
    accept_drafts: bool = False
    """Accept pre-RFC 4871 drafts' signatures (no ``v=``, or ``v=0.5``), as Mail::DKIM does."""


def parse_signature(field: Header, options: ParseOptions | None = None) -> DkimSignature:
    options = options or ParseOptions()
    try:
        tags = parse_tag_list(field.raw_value.decode("utf-8", errors="replace"))
    except TagListError as error:
        raise SignatureError(f"signature syntax: {error}") from None
    version = tags.get("v", "")
    _check_version(version, options)
    missing = [name for name in REQUIRED_TAGS if name not in tags and not (name == "v" and not version)]
    if missing:
        raise SignatureError(f"signature lacks required tag(s) {', '.join(missing)}=")
    algorithm = tags["a"].lower()
    if algorithm not in ALGORITHMS:
        raise UnsupportedAlgorithm(f"unsupported algorithm a={tags['a'][:30]}")
    header_canon, body_canon = parse_canonicalization(tags.get("c", "simple/simple"))
    domain = tags["d"].strip()
    selector = tags["s"].strip()
    if not domain or not selector:
        raise SignatureError("empty d= or s=")
    signed_headers = tuple([name.strip(" \t\r\n") for name in tags["h"].split(":")])
    if "from" not in map(str.lower, signed_headers):
        raise SignatureError("h= does not include From")
    identity = _identity(tags.get("i"), domain)
    _check_query_methods(tags.get("q"))
    timestamp = number_tag(tags, "t", _MAX_TIME_DIGITS)
    expiration = number_tag(tags, "x", _MAX_TIME_DIGITS)
    if timestamp is not None and expiration is not None and expiration < timestamp:
        raise SignatureError("x= is earlier than t=")
    b_text = strip_fws(tags["b"])
    return DkimSignature(
        algorithm=algorithm,
        signature=decode_base64(b_text, "b"),
        body_hash=decode_base64(strip_fws(tags["bh"]), "bh"),
        header_canon=header_canon,
        body_canon=body_canon,
        domain=domain,
        selector=selector,
        signed_headers=signed_headers,
        identity=identity,
        body_length=number_tag(tags, "l", _MAX_LENGTH_DIGITS),
        timestamp=timestamp,
        expiration=expiration,
        version=version,
        b_text=b_text,
    )


def _check_version(version: str, options: ParseOptions) -> None:
    if version == "1":
        return
    if options.accept_drafts and version in ("", "0.5"):
        return
    raise SignatureError("signature lacks v=1" if not version else f"unsupported version v={version[:10]}")


def parse_canonicalization(value: str) -> tuple[str, str]:
    header_canon, _, body_canon = value.strip().lower().partition("/")
    body_canon = body_canon or canon.SIMPLE
    if header_canon not in canon.ALGORITHMS or body_canon not in canon.ALGORITHMS:
        raise SignatureError(f"unknown canonicalization c={value[:30]}")
    return header_canon, body_canon


def _identity(value: str | None, domain: str) -> str:
    """``i=`` decoded from dkim-quoted-printable; its domain must be ``d=`` or below it (§3.5)."""
    if value is None:
        return "@" + domain
    identity = _QP_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), strip_fws(value))
    local, at, identity_domain = identity.rpartition("@")
    if not at:
        raise SignatureError("i= has no @")
    d_lower, i_lower = domain.lower(), identity_domain.lower()
    if i_lower != d_lower and not i_lower.endswith("." + d_lower):
        raise SignatureError(f"i= domain {identity_domain[:60]} is not within d={domain[:60]}")
    return f"{local}@{identity_domain}"


def _check_query_methods(value: str | None) -> None:
    if value is None:
        return
    methods = [method.strip(" \t\r\n").lower() for method in value.split(":")]
    if not any(method == "dns/txt" or method == "dns" for method in methods):
        raise SignatureError(f"q={value[:40]} offers no dns/txt query method")


def number_tag(tags: dict[str, str], name: str, max_digits: int) -> int | None:
    if name not in tags:
        return None
    value = strip_fws(tags[name])
    if not _DIGITS.match(value) or len(value) > max_digits:
        raise SignatureError(f"{name}= is not a number of at most {max_digits} digits")
    return int(value)


def decode_base64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{name}= is not valid base64") from None
