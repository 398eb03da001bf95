"""Sign a message with DKIM (RFC 6376 §5), one DKIM-Signature per key.

What is signed: the RFC 6376 §5.4.1 recommended fields that the message has, plus the fields that
describe how to read it (Message-ID, MIME headers). Fields that must appear at most once
(RFC 5322 §3.6) are over-signed: named one time more than they occur, so that nobody can add
another instance later without breaking the signature. ``l=`` is never used.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from mailtoaster.auth.dkim import canon, engine
from mailtoaster.auth.dkim.engine import PrivateKey
from mailtoaster.auth.dkim.signature import SignatureError, parse_canonicalization
from mailtoaster.message import Message

RECOMMENDED_HEADERS = (
    "From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-Date", "Resent-From", "Resent-To",
    "Resent-Cc", "In-Reply-To", "References", "List-Id", "List-Help", "List-Unsubscribe",
    "List-Subscribe", "List-Post", "List-Owner", "List-Archive",
    "Message-ID", "Sender", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
    "List-Unsubscribe-Post", "Feedback-ID",
)  # fmt: skip
OVERSIGNED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To",
        "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "List-Unsubscribe",
        "List-Unsubscribe-Post",
    )
)  # fmt: skip
_RECOMMENDED_LOWER = tuple((name, name.lower()) for name in RECOMMENDED_HEADERS)
_FOLD_WIDTH = 76


class SigningError(ValueError):
    """The message cannot be signed as asked (no From field, a bad option)."""


@dataclass(frozen=True)
class DkimSigner:
    domain: str
    selector: str
    private_key: PrivateKey
    canonicalization: str = "relaxed/relaxed"
    headers: Sequence[str] | None = None
    """Field names for ``h=`` exactly as given; None signs the default set described above."""
    identity: str | None = None
    expiration: int | None = None
    """Seconds the signature stays valid (``x=`` = ``t=`` + this)."""

    @property
    def algorithm(self) -> str:
        return engine.algorithm_for(self.private_key)


def default_signed_headers(message: Message) -> list[str]:
    """The §5.4.1 set present in ``message``, over-signing the fields that must be unique."""
    counts = Counter(field.lower_name for field in message.headers)
    names: list[str] = []
    for name, lower_name in _RECOMMENDED_LOWER:
        if present := counts[lower_name]:
            names.extend([name] * (present + (lower_name in OVERSIGNED_HEADERS)))
    return names


def sign_dkim(raw: bytes, signers: Sequence[DkimSigner], timestamp: int | None = None) -> list[bytes]:
    """The DKIM-Signature fields for ``raw``, one per signer, each ending in CRLF.

    The signatures are independent: none covers another, so their order does not matter.
    """
    return sign_dkim_parsed(Message.parse(canon.to_crlf(raw)), signers, timestamp)


def sign_dkim_parsed(
    message: Message, signers: Sequence[DkimSigner], timestamp: int | None = None
) -> list[bytes]:
    """:func:`sign_dkim` for a message already parsed, such as ``Message.from_file(spool)``: a
    file-backed body is hashed as it is read, never held in memory. Bare-LF line endings are
    signed as CRLF, as :func:`sign_dkim` does."""
    if message.get("From") is None:
        raise SigningError("the message has no From field; DKIM requires signing it")
    now = int(time.time()) if timestamp is None else timestamp
    return [_sign_one(message, signer, now) for signer in signers]


def sign_message(raw: bytes, signers: Sequence[DkimSigner], timestamp: int | None = None) -> bytes:
    """``raw`` with its signatures prepended, in the line-ending style ``raw`` uses."""
    fields = b"".join(sign_dkim(raw, signers, timestamp))
    if b"\r\n" not in raw and b"\n" in raw:
        fields = fields.replace(b"\r\n", b"\n")
    return fields + raw


def _sign_one(message: Message, signer: DkimSigner, now: int) -> bytes:
    try:
        header_canon, body_canon = parse_canonicalization(signer.canonicalization)
    except SignatureError as exc:
        raise SigningError(f"unknown canonicalization {signer.canonicalization!r}") from exc
    names = list(signer.headers) if signer.headers is not None else default_signed_headers(message)
    if "from" not in (name.lower() for name in names):
        raise SigningError("h= must include From")
    algorithm = signer.algorithm
    body_digest = engine.body_digest(message.body_source, body_canon, engine.hash_name(algorithm)).digest
    tags = [
        ("v", "1"),
        ("a", algorithm),
        ("c", f"{header_canon}/{body_canon}"),
        ("d", signer.domain),
        ("s", signer.selector),
        ("t", str(now)),
    ]
    if signer.expiration is not None:
        tags.append(("x", str(now + signer.expiration)))
    if signer.identity is not None:
        tags.append(("i", signer.identity))
    tags += [("h", ":".join(names)), ("bh", base64.b64encode(body_digest).decode("ascii"))]
    unsigned = _fold(tags) + b"\r\n\tb="
    data = engine.header_hash_input(message.headers, names, unsigned, header_canon)
    signature = base64.b64encode(engine.sign_bytes(signer.private_key, algorithm, data))
    return unsigned + _fold_base64(signature, len(b"\tb=")) + b"\r\n"


def _fold(tags: list[tuple[str, str]]) -> bytes:
    """``DKIM-Signature: v=1; a=...; ...;`` folded before a tag (or inside h=) to stay near 78 columns."""
    lines: list[str] = []
    line = "DKIM-Signature:"
    for name, value in tags:
        pieces = _split_list(value) if name == "h" else [value]
        text = f"{name}={pieces[0]}"
        for piece in pieces[1:]:
            text += f":{piece}"
        for chunk in _wrap(f" {text};", line, lines):
            line = chunk
    lines.append(line)
    return "\r\n".join(lines).encode("ascii")


def _split_list(value: str) -> list[str]:
    return value.split(":")


def _wrap(addition: str, line: str, done: list[str]) -> list[str]:
    """Append ``addition`` to ``line``; when too long, break at colons of an ``h=`` list or before it."""
    if len(line) + len(addition) <= _FOLD_WIDTH:
        return [line + addition]
    done.append(line)
    current = "\t" + addition.lstrip(" ")
    while len(current) > _FOLD_WIDTH and ":" in current[1:_FOLD_WIDTH]:
        cut = current.rindex(":", 1, _FOLD_WIDTH)
        done.append(current[:cut])
        current = "\t" + current[cut:]
    return [current]


def _fold_base64(value: bytes, first_column: int) -> bytes:
    width = _FOLD_WIDTH - first_column
    chunks = [value[:width]]
    chunks += [value[i : i + _FOLD_WIDTH - 1] for i in range(width, len(value), _FOLD_WIDTH - 1)]
    return b"\r\n\t".join(chunks)
