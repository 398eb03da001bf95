"""Add an ARC set to a message (RFC 8617 §5.1): the AAR, the AMS and the ARC-Seal.

The sealer must know the chain's state, so :func:`sign_arc` takes the :class:`ArcOutcome` of
:func:`validate_arc` (or :func:`seal_arc` runs that first). The fields are written in one
normalised form (the ValiMail suite's: tags sorted, lower-case values except ``b=``/``bh=``, ``; ``
between tags, relaxed/relaxed), so the same inputs always give the same bytes. Folding only
replaces the space after a ``;``, which relaxed canonicalisation undoes.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Sequence

from mailtoaster.auth.arc.headers import (
    ARC_AUTHENTICATION_RESULTS,
    ARC_MESSAGE_SIGNATURE,
    ARC_SEAL,
    MAX_INSTANCE,
    seal_hash_input,
)
from mailtoaster.auth.arc.result import ArcOptions, ArcOutcome, ArcResult
from mailtoaster.auth.arc.validate import Collected, chain_sets, collect, structure_problem, validate_arc
from mailtoaster.auth.dkim import canon, engine
from mailtoaster.auth.dkim.engine import PrivateKey
from mailtoaster.auth.dkim.sign import SigningError, default_signed_headers
from mailtoaster.dns import Resolver
from mailtoaster.message import Header, Message

AUTHENTICATION_RESULTS = "Authentication-Results"
_FOLD_WIDTH = 78
_COMMENT_OR_QUOTE = re.compile(r'\((?:[^()\\]|\\.)*\)|"(?:[^"\\]|\\.)*"')


class ArcSigningError(SigningError):
    """The message cannot be sealed as asked (a chain outcome that does not fit it, a bad option)."""


def sign_arc(
    raw: bytes,
    *,
    domain: str,
    selector: str,
    private_key: PrivateKey,
    authserv_id: str,
    auth_results: str = "",
    chain: ArcOutcome | None = None,
    timestamp: int | None = None,
    headers: Sequence[str] | None = None,
) -> list[bytes]:
    """The new set's fields, ``[AAR, AMS, AS]``, each ending in CRLF; ``[]`` when no set may be added.

    ``chain`` is :func:`validate_arc`'s outcome for ``raw`` (required when ``raw`` already has ARC
    fields): it gives the seal's ``cv=``. No set is added to a chain whose newest seal already says
    ``cv=fail`` (RFC 8617 §5.1.2), nor past instance 50. The AAR holds the results of every
    Authentication-Results field of ``authserv_id`` in the message, then those of ``auth_results``
    (a field, a value ``authserv-id; results`` or just ``results``), and ``arc=<cv>`` if no ``arc``
    result is among them. ``headers`` is the AMS ``h=``; by default DKIM's choice for this message.
    """
    return sign_arc_parsed(
        Message.parse(canon.to_crlf(raw)),
        domain=domain,
        selector=selector,
        private_key=private_key,
        authserv_id=authserv_id,
        auth_results=auth_results,
        chain=chain,
        timestamp=timestamp,
        headers=headers,
    )


def sign_arc_parsed(
    message: Message,
    *,
    domain: str,
    selector: str,
    private_key: PrivateKey,
    authserv_id: str,
    auth_results: str = "",
    chain: ArcOutcome | None = None,
    timestamp: int | None = None,
    headers: Sequence[str] | None = None,
) -> list[bytes]:
    """:func:`sign_arc` for a message already parsed, such as ``Message.from_file(spool)``: the AMS
    body hash streams a file-backed body."""
    existing = collect(message.headers)
    instance, cv = _next_instance(existing, chain)
    if instance is None:
        return []
    names = _signed_names(message, headers)
    now = int(time.time()) if timestamp is None else timestamp
    aar_text = _aar_body(message, authserv_id, auth_results, cv)
    aar = _field(f"{ARC_AUTHENTICATION_RESULTS}: i={instance}; {aar_text}")
    ams = _sign_message(message, aar, instance, names, domain, selector, private_key, now)
    covered = [] if cv == "fail" else [field for item in chain_sets(existing) for field in item.fields]
    seal = _seal([*covered, aar, ams], instance, cv, domain, selector, private_key, now)
    return [aar.raw, ams.raw, seal.raw]


async def seal_arc(
    raw: bytes,
    resolver: Resolver,
    *,
    options: ArcOptions | None = None,
    domain: str,
    selector: str,
    private_key: PrivateKey,
    authserv_id: str,
    auth_results: str = "",
    timestamp: int | None = None,
    headers: Sequence[str] | None = None,
) -> tuple[ArcOutcome, list[bytes]]:
    """Validate ``raw``'s chain, then :func:`sign_arc` it; the outcome is returned for the caller's
    own Authentication-Results."""
    return await seal_arc_parsed(
        Message.parse(canon.to_crlf(raw)),
        resolver,
        options=options,
        domain=domain,
        selector=selector,
        private_key=private_key,
        authserv_id=authserv_id,
        auth_results=auth_results,
        timestamp=timestamp,
        headers=headers,
    )


async def seal_arc_parsed(
    message: Message,
    resolver: Resolver,
    *,
    options: ArcOptions | None = None,
    domain: str,
    selector: str,
    private_key: PrivateKey,
    authserv_id: str,
    auth_results: str = "",
    timestamp: int | None = None,
    headers: Sequence[str] | None = None,
) -> tuple[ArcOutcome, list[bytes]]:
    """:func:`seal_arc` for a message already parsed (a file-backed body is streamed)."""
    chain = await validate_arc(message, resolver, options)
    fields = sign_arc_parsed(
        message,
        domain=domain,
        selector=selector,
        private_key=private_key,
        authserv_id=authserv_id,
        auth_results=auth_results,
        chain=chain,
        timestamp=timestamp,
        headers=headers,
    )
    return chain, fields


def add_arc_set(raw: bytes, fields: Sequence[bytes]) -> bytes:
    """``raw`` with the set prepended, ARC-Seal on top, in the line-ending style ``raw`` uses."""
    block = b"".join(reversed(fields))
    if b"\r\n" not in raw and b"\n" in raw:
        block = block.replace(b"\r\n", b"\n")
    return block + raw


def _next_instance(existing: Collected, chain: ArcOutcome | None) -> tuple[int | None, str]:
    """The new set's instance and ``cv=``; instance None when the chain must not be extended.

    ``chain`` must describe the message: same number of sets, and a ``pass`` only for a chain whose
    structure is sound (else the seal could not cover it).
    """
    present = bool(existing.highest or existing.errors)
    if chain is None:
        if present:
            raise ArcSigningError("the message has ARC fields: pass chain=validate_arc(...) to seal it")
        return 1, "none"
    if chain.sets != existing.highest or (chain.result is ArcResult.NONE) == present:
        raise ArcSigningError(
            f"chain outcome ({chain.result.value}, {chain.sets} sets) does not fit the message"
        )
    if chain.terminated or chain.sets >= MAX_INSTANCE:
        return None, ""
    if chain.result is ArcResult.PASS and (problem := structure_problem(existing)) is not None:
        raise ArcSigningError(f"chain outcome says pass, but {problem.reason}")
    return chain.sets + 1, chain.result.value


def _signed_names(message: Message, headers: Sequence[str] | None) -> list[str]:
    chosen = headers if headers is not None else default_signed_headers(message)
    names = [name.strip().lower() for name in chosen]
    if "from" not in names:
        raise ArcSigningError("the AMS h= must include From")
    if ARC_SEAL.lower() in names:
        raise ArcSigningError("the AMS must not sign ARC-Seal (RFC 8617 §4.1.2)")
    return names


def _sign_message(
    message: Message,
    aar: Header,
    instance: int,
    names: list[str],
    domain: str,
    selector: str,
    private_key: PrivateKey,
    now: int,
) -> Header:
    """The AMS: a relaxed/relaxed DKIM signature over ``names``, with the new AAR already in place."""
    algorithm = engine.algorithm_for(private_key)
    body_hash = engine.body_digest(message.body_source, canon.RELAXED, engine.hash_name(algorithm)).digest
    tags = {
        "a": algorithm,
        "b": "",
        "bh": base64.b64encode(body_hash).decode("ascii"),
        "c": "relaxed/relaxed",
        "d": domain.lower(),
        "h": ":".join(names),
        "i": str(instance),
        "s": selector.lower(),
        "t": str(now),
    }
    unsigned = _field(_tag_list(ARC_MESSAGE_SIGNATURE, tags))
    data = engine.header_hash_input((aar, *message.headers), names, unsigned.raw, canon.RELAXED)
    tags["b"] = base64.b64encode(engine.sign_bytes(private_key, algorithm, data)).decode("ascii")
    return _folded(ARC_MESSAGE_SIGNATURE, tags)


def _seal(
    covered: list[Header],
    instance: int,
    cv: str,
    domain: str,
    selector: str,
    private_key: PrivateKey,
    now: int,
) -> Header:
    """The ARC-Seal over ``covered`` (hash order); with ``cv=fail`` only the new set (RFC 8617 §5.1.2)."""
    algorithm = engine.algorithm_for(private_key)
    tags = {
        "a": algorithm,
        "b": "",
        "cv": cv,
        "d": domain.lower(),
        "i": str(instance),
        "s": selector.lower(),
        "t": str(now),
    }
    unsigned = _field(_tag_list(ARC_SEAL, tags))
    data = seal_hash_input(covered, unsigned.raw)
    tags["b"] = base64.b64encode(engine.sign_bytes(private_key, algorithm, data)).decode("ascii")
    return _folded(ARC_SEAL, tags)


def _tag_list(name: str, tags: dict[str, str]) -> str:
    return f"{name}: " + "; ".join(f"{tag}={value}" for tag, value in tags.items())


def _folded(name: str, tags: dict[str, str]) -> Header:
    """``name: a=...; b=...; ...`` folded before a tag when the line passes 78 columns.

    Never inside a value: the next seal hashes this field relaxed, where a fold inside ``b=`` would
    become a space, and the suite's signatures were made over unfolded values. A long ``b=`` just
    makes a long line (well under RFC 5322's 998).
    """
    lines: list[str] = []
    line = f"{name}:"
    for position, (tag, value) in enumerate(tags.items()):
        text = f"{tag}={value}" + (";" if position < len(tags) - 1 else "")
        if len(line) + 1 + len(text) <= _FOLD_WIDTH:
            line += " " + text
        else:
            lines.append(line)
            line = "\t" + text
    lines.append(line)
    return _field("\r\n".join(lines))


def _field(text: str) -> Header:
    name = text.partition(":")[0]
    return Header.of(name, text.encode("utf-8") + b"\r\n")


def _aar_body(message: Message, authserv_id: str, auth_results: str, cv: str) -> str:
    """``authserv-id; result; result``, one result per folded line (README.valimail.md's consolidation)."""
    results: list[str] = []
    for field in message.get_all(AUTHENTICATION_RESULTS):
        results += _results_of(field.value, authserv_id, required=False)
    results += _results_of(auth_results, authserv_id, required=True)
    unique = list(dict.fromkeys(results))
    if not any(_method(result) == "arc" for result in unique):
        unique.insert(0, f"arc={cv}")
    return f"{authserv_id}; " + ";\r\n\t".join(unique)


def _results_of(value: str, authserv_id: str, *, required: bool) -> list[str]:
    """The resinfo parts of an Authentication-Results value when it is ``authserv_id``'s.

    With ``required`` (the caller's own results) a value naming another authserv-id is an error,
    and a value without any authserv-id is taken as results alone.
    """
    value = re.sub(r"(?i)\A\s*Authentication-Results\s*:", "", value)
    parts = [" ".join(part.split()) for part in _split_results(value)]
    parts = [part for part in parts if part]
    if not parts:
        return []
    if "=" not in _COMMENT_OR_QUOTE.sub("", parts[0]):
        found = _COMMENT_OR_QUOTE.sub("", parts[0]).split()
        if not found or found[0].lower() != authserv_id.lower():
            if required:
                raise ArcSigningError(f"auth_results are for {parts[0]!r}, not {authserv_id!r}")
            return []
        parts = parts[1:]
    elif not required:
        return []
    return [part for part in parts if part.lower() != "none"]


def _split_results(value: str) -> list[str]:
    """``value`` split at ``;`` outside comments and quoted strings."""
    pieces: list[str] = []
    start = 0
    for match in re.finditer(r'\((?:[^()\\]|\\.)*\)|"(?:[^"\\]|\\.)*"|;', value):
        if match.group(0) == ";":
            pieces.append(value[start : match.start()])
            start = match.end()
    pieces.append(value[start:])
    return pieces


def _method(result: str) -> str:
    return result.partition("=")[0].strip().lower()
