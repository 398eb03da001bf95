"""Modified UTF-7 (RFC 3501 §5.1.3), the encoding of IMAP mailbox names and of Maildir++ folder names
on disk as Dovecot (by default) and Courier-IMAP before 5.0 store them.

Printable US-ASCII stands for itself except ``&``, written ``&-``; every other run of characters is
``&``, their UTF-16BE in base64 with ``,`` for ``/`` and no padding, then ``-``. ``Entwürfe`` is
``Entw&APw-rfe``.
"""

from __future__ import annotations

import base64
import binascii
import re

from mailtoaster.store.errors import FolderNameError

_SHIFT = "&"
_UNSHIFT = "-"
_BASE64_RUN = re.compile(r"[A-Za-z0-9+,]+")


def encode_mutf7(name: str) -> str:
    """``name`` in modified UTF-7; raises :class:`FolderNameError` for lone surrogates."""
    parts: list[str] = []
    pending: list[str] = []
    for char in name:
        if _is_direct(char):
            parts.append(_encode_run(name, pending))
            pending = []
            parts.append("&-" if char == _SHIFT else char)
        else:
            pending.append(char)
    parts.append(_encode_run(name, pending))
    return "".join(parts)


def decode_mutf7(text: str) -> str:
    """The name ``text`` encodes; raises :class:`FolderNameError` unless ``text`` is modified UTF-7 in
    the one canonical form :func:`encode_mutf7` writes (RFC 3501 forbids the others)."""
    parts: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if not _is_direct(char):
            raise FolderNameError(f"{text!r} is not modified UTF-7: {char!r} must be encoded")
        if char != _SHIFT:
            parts.append(char)
            position += 1
            continue
        end = text.find(_UNSHIFT, position + 1)
        if end < 0:
            raise FolderNameError(f"{text!r} is not modified UTF-7: '&' without its closing '-'")
        parts.append(_decode_run(text, text[position + 1 : end]) if end > position + 1 else _SHIFT)
        position = end + 1
    decoded = "".join(parts)
    if encode_mutf7(decoded) != text:
        raise FolderNameError(f"{text!r} is not modified UTF-7 in canonical form")
    return decoded


def _is_direct(char: str) -> bool:
    return " " <= char <= "~"


def _encode_run(name: str, chars: list[str]) -> str:
    if not chars:
        return ""
    try:
        raw = "".join(chars).encode("utf-16-be")
    except UnicodeEncodeError:
        raise FolderNameError(f"{name!r} contains a lone surrogate, which no mailbox name can hold") from None
    encoded = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
    return f"{_SHIFT}{encoded}{_UNSHIFT}"


def _decode_run(text: str, run: str) -> str:
    if not _BASE64_RUN.fullmatch(run):
        raise FolderNameError(f"{text!r} is not modified UTF-7: bad base64 in '&{run}-'")
    padded = run.replace(",", "/") + "=" * (-len(run) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
        decoded = raw.decode("utf-16-be")
    except (binascii.Error, UnicodeDecodeError):
        raise FolderNameError(f"{text!r} is not modified UTF-7: '&{run}-' is not UTF-16") from None
    return decoded
