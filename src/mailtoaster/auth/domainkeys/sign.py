"""Sign a message with DomainKeys (RFC 4870 §3.5): one RSA-SHA1 signature over the chosen fields.

The DomainKey-Signature goes on top of the message, so it covers the fields present now; ``h=``
always lists them (one entry per occurrence, in message order) so that fields added later below
it, by a list manager say, do not break it. The sending header (Sender, else From) is always
signed, and ``d=`` must be its domain or a parent, as a verifier will insist.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from mailtoaster.auth.dkim.canon import to_crlf
from mailtoaster.auth.domainkeys.canon import signed_digest
from mailtoaster.auth.domainkeys.sender import is_same_or_parent, sending_address
from mailtoaster.auth.domainkeys.signature import (
    ALGORITHM,
    CANONICALIZATIONS,
    FIELD_NAME,
    NOFWS,
    QUERY_METHOD,
)
from mailtoaster.keys.names import check_dns_name
from mailtoaster.message import Message

DEFAULT_SIGNED_HEADERS = (
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-ID",
    "Content-Description",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Resent-Message-ID",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
)
"""Fields signed when the caller names none (those present): the ones RFC 6376 §5.4.1 recommends."""

FOLD_WIDTH = 76


class DomainKeysSignError(ValueError):
    """The message cannot be signed as asked (no sending address, wrong domain, bad arguments)."""


def sign_domainkeys(
    raw: bytes,
    domain: str,
    selector: str,
    private_key: rsa.RSAPrivateKey,
    canonicalization: str = NOFWS,
    headers: Sequence[str] | None = None,
) -> bytes:
    """The DomainKey-Signature field (folded, ending CRLF) to put above ``raw``'s first line."""
    message = Message.parse(to_crlf(raw))
    return sign_domainkeys_parsed(message, domain, selector, private_key, canonicalization, headers)


def sign_domainkeys_parsed(
    message: Message,
    domain: str,
    selector: str,
    private_key: rsa.RSAPrivateKey,
    canonicalization: str = NOFWS,
    headers: Sequence[str] | None = None,
) -> bytes:
    """:func:`sign_domainkeys` for a message already parsed, such as ``Message.from_file(spool)``:
    a file-backed body is hashed as it is read, never held in memory."""
    domain, selector = _names(domain, selector)
    if canonicalization not in CANONICALIZATIONS:
        raise DomainKeysSignError(f"canonicalization must be simple or nofws, not {canonicalization!r}")
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise DomainKeysSignError("DomainKeys (RFC 4870) signs with RSA keys only")
    sender = sending_address(message.headers)
    if not sender.ok:
        raise DomainKeysSignError(f"cannot sign: {sender.error}")
    if not is_same_or_parent(sender.domain, domain):
        raise DomainKeysSignError(
            f"cannot sign for d={domain}: the {sender.header} domain is {sender.domain}, "
            "and d= must be that domain or a parent of it"
        )
    names = {name.lower() for name in (DEFAULT_SIGNED_HEADERS if headers is None else headers)}
    names.add(sender.header.lower())
    signed = [field for field in message.headers if field.name.lower() in names]
    digest = signed_digest(signed, message.body_source, canonicalization)
    signature = private_key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
    return _field(domain, selector, canonicalization, [f.name for f in signed], signature)


def sign_domainkeys_message(
    raw: bytes,
    domain: str,
    selector: str,
    private_key: rsa.RSAPrivateKey,
    canonicalization: str = NOFWS,
    headers: Sequence[str] | None = None,
) -> bytes:
    """``raw`` with its DomainKey-Signature prepended (line endings made CRLF)."""
    return sign_domainkeys(raw, domain, selector, private_key, canonicalization, headers) + to_crlf(raw)


def _names(domain: str, selector: str) -> tuple[str, str]:
    try:
        return check_dns_name(domain, "domain"), check_dns_name(selector, "selector", allow_underscore=True)
    except ValueError as error:
        raise DomainKeysSignError(str(error)) from None


def _field(domain: str, selector: str, canonicalization: str, names: list[str], signature: bytes) -> bytes:
    lines = [
        f"{FIELD_NAME}: a={ALGORITHM}; q={QUERY_METHOD}; c={canonicalization};",
        f"s={selector}; d={domain};",
        *_fold(f"h={':'.join(names)};", ":"),
        *_fold("b=" + base64.b64encode(signature).decode("ascii"), None),
    ]
    return ("\r\n\t".join(lines) + "\r\n").encode("ascii")


def _fold(text: str, after: str | None) -> list[str]:
    """Split ``text`` into pieces of at most :data:`FOLD_WIDTH`, after ``after`` characters when given."""
    pieces: list[str] = []
    while len(text) > FOLD_WIDTH:
        cut = text.rfind(after, 0, FOLD_WIDTH) + 1 if after else FOLD_WIDTH
        if cut <= 0:
            cut = FOLD_WIDTH
        pieces.append(text[:cut])
        text = text[cut:]
    return [*pieces, text] if text else pieces
