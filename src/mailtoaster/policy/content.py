"""qmail-toaster's attachment refusals: ``BADMIMETYPE`` and ``BADLOADERTYPE``.

qmail-toaster took both from Erwin Hoffmann's SPAMCONTROL patch to qmail-smtpd, where they work on the
raw base64 text of a message, never on decoded content:

* ``BADMIMETYPE`` compares the first 9 characters of every base64-encoded part with the entries of
  ``control/badmimetypes``. Despite the name those entries are not MIME types but base64 prefixes:
  ``TVqQAAMAA`` is the start of an ``MZ`` (DOS/Windows) executable, ``UEsDBAoAA`` of a zip file.
* ``BADLOADERTYPE="M"`` slides a 5-character window over the base64 lines and compares every window
  starting with ``M`` with ``control/badloadertypes``: fragments such as ``MzIuZ`` are ``32.d`` of an
  encoded ``KERNEL32.DLL`` import, i.e. a Windows loader.

qmail-toaster ships both lists with every entry commented out. This module does what they were for,
on decoded content and declared types, which does not depend on base64 line alignment:

* ``bad_mime_types`` entries that are MIME types refuse a part by its declared Content-Type
  (:data:`DEFAULT_BAD_MIME_TYPES`); the other entries are SPAMCONTROL base64 prefixes, so an existing
  ``control/badmimetypes`` keeps its meaning (:func:`parse_bad_mime_types`).
* each ``loader_types`` letter names an executable format found by its header in any part's decoded
  content; ``M`` is the DOS/Windows ``MZ`` header (every PE ``.exe``, ``.dll``, ``.scr`` starts with it).
"""

from __future__ import annotations

import binascii
import email
import email.message
import email.policy
import quopri
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from types import MappingProxyType

MAX_PARTS = 256
"""Parts examined per message; a message with more is checked up to here (a cheap bomb guard)."""
MAX_DEPTH = 32
"""Nesting levels followed (multipart inside multipart, attached messages)."""
HEADER_BYTES = 64
"""Decoded bytes read from the start of each part: an MZ header is 64 bytes."""

DEFAULT_BAD_MIME_TYPES: frozenset[str] = frozenset(
    {
        "application/x-msdownload",  # .exe, .dll (the type Windows itself registers)
        "application/x-msdos-program",  # .exe, .com, .bat (Debian mime.types)
        "application/x-dosexec",  # what file(1) says for MZ executables
        "application/vnd.microsoft.portable-executable",  # IANA's registered PE type
        "application/x-ms-dos-executable",  # freedesktop.org shared-mime-info
        "application/x-winexe",
        "application/x-msi",  # Windows Installer packages
        "application/x-ms-installer",
        "application/x-ms-shortcut",  # .lnk
        "application/hta",  # HTML applications, run by mshta.exe
        "application/x-bat",
    }
)
"""Declared types of Windows executables and scripts that run on a double click."""

_BASE64_PREFIX = re.compile(r"[A-Za-z0-9+/]{4,76}", re.ASCII)
_MIME_TYPE = re.compile(
    r"(?:application|audio|font|image|message|model|multipart|text|video|x-[a-z0-9.+-]+)"
    r"/[a-z0-9][a-z0-9!#$&^_.+-]*",
    re.ASCII,
)
"""A top-level type is required: base64 has ``/`` in its alphabet, so ``TVq/AAMAA`` is a prefix."""
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _is_mz_executable(head: bytes) -> bool:
    """The DOS header: ``MZ``, then 62 bytes of little-endian fields that always hold zero bytes
    (which keeps a text part that happens to begin with "MZ" from matching)."""
    return head.startswith(b"MZ") and b"\0" in head[2:HEADER_BYTES]


LOADER_TYPES: Mapping[str, tuple[str, Callable[[bytes], bool]]] = MappingProxyType(
    {"M": ("a DOS/Windows executable (MZ header)", _is_mz_executable)}
)
"""``BADLOADERTYPE`` letters: what each refuses and how its header is recognised."""


def find_forbidden_attachment(
    raw: bytes, *, bad_mime_types: Collection[str], loader_types: str
) -> str | None:
    """Why the message must be refused (naming the part), or None.

    Never raises: stdlib ``email`` parses any byte string, and a part it cannot decode is passed over
    (the other checks of the message still apply). At most :data:`MAX_PARTS` parts are examined.
    Unknown ``loader_types`` letters are ignored here; :func:`mailtoaster.policy.client_policy` refuses
    them when the rules are loaded.
    """
    entries = [entry.strip() for entry in bad_mime_types if entry.strip()]
    mime_types = {entry.lower() for entry in entries if is_mime_type(entry)}
    prefixes = tuple(entry for entry in entries if not is_mime_type(entry))
    loaders = [LOADER_TYPES[letter] for letter in dict.fromkeys(loader_types) if letter in LOADER_TYPES]
    if not (mime_types or prefixes or loaders):
        return None
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        for number, part in enumerate(_leaf_parts(message), start=1):
            reason = _forbidden_part(part, number, mime_types, prefixes, loaders)
            if reason is not None:
                return reason
    except Exception:  # hostile MIME can make the stdlib parser raise almost anything (RecursionError...)
        return None
    return None


def _leaf_parts(message: email.message.Message) -> Iterator[email.message.Message]:
    """Non-container parts, depth first, within :data:`MAX_PARTS` and :data:`MAX_DEPTH` (an explicit
    stack: ``Message.walk`` recurses once per nesting level)."""
    stack: list[tuple[email.message.Message, int]] = [(message, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        payload = part.get_payload()
        if isinstance(payload, list):
            if depth < MAX_DEPTH:
                children = [child for child in payload if isinstance(child, email.message.Message)]
                stack.extend((child, depth + 1) for child in reversed(children))
        else:
            yield part


def _forbidden_part(
    part: email.message.Message,
    number: int,
    mime_types: Collection[str],
    prefixes: tuple[str, ...],
    loaders: list[tuple[str, Callable[[bytes], bool]]],
) -> str | None:
    content_type = part.get_content_type()
    if content_type in mime_types:
        return f"{_label(part, number)} has the forbidden type {content_type}"
    payload = part.get_payload()
    if not isinstance(payload, str):
        return None
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if prefixes and encoding == "base64":
        start = "".join(payload[:256].split())
        for prefix in prefixes:
            if start.startswith(prefix):
                return f"{_label(part, number)} starts like a forbidden file ({prefix})"
    if loaders:
        head = leading_bytes(payload, encoding, HEADER_BYTES)
        for description, matches in loaders:
            if matches(head):
                return f"{_label(part, number)} is {description}"
    return None


def leading_bytes(payload: str, encoding: str, limit: int) -> bytes:
    """The first ``limit`` decoded bytes of a part, decoding only what that needs.

    ``payload`` is the part's body as compat32 gives it (bytes as ASCII, others as surrogate escapes).
    """
    if encoding == "base64":
        compact = "".join(payload[: limit * 2 + 256].split())
        try:
            return binascii.a2b_base64(compact[: len(compact) // 4 * 4])[:limit]
        except binascii.Error:
            return b""
    if encoding == "quoted-printable":
        return quopri.decodestring(_raw_bytes(payload[: limit * 3 + 256]))[:limit]
    return _raw_bytes(payload[:limit])


def _raw_bytes(text: str) -> bytes:
    try:
        return text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:  # not from message_from_bytes: real non-ASCII characters
        return text.encode("utf-8", "surrogateescape")


def _label(part: email.message.Message, number: int) -> str:
    """How the refusal names the part: its file name if it has one, safe to put in an SMTP reply."""
    filename = part.get_filename()
    if isinstance(filename, str) and filename.strip():
        return f'attachment "{_UNPRINTABLE.sub("?", filename.strip())[:60]}"'
    return f"MIME part {number}"


def is_mime_type(entry: str) -> bool:
    """A ``bad_mime_types`` entry that names a MIME type (the others are base64 prefixes)."""
    return _MIME_TYPE.fullmatch(entry.strip().lower()) is not None


def parse_bad_mime_types(text: str) -> frozenset[str]:
    """Entries of a ``badmimetypes`` list, one per line; blank lines and ``#`` comments skipped.

    An entry is a MIME type (``application/x-msdownload``) or, as in SPAMCONTROL's file, the first
    characters of a base64-encoded part (``TVqQAAMAA``). Anything else is a ValueError naming the line.
    """
    entries: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_mime_type(entry):
            entries.add(entry.lower())
        elif _BASE64_PREFIX.fullmatch(entry):
            entries.add(entry)
        else:
            raise ValueError(f"line {number}: {entry[:40]!r} is neither a MIME type nor a base64 prefix")
    return frozenset(entries)
