"""DMARC policy records (RFC 9989 §4.7-4.8, RFC 7489 §6.3-6.4), parsed without ever raising.

A TXT record is a DMARC record only if it starts with ``v=DMARC1`` (RFC 9989 §4.7: "If the tag is
not the first in the list, or the tag is absent, or the value is not "DMARC1", then the entire record
MUST be ignored"); :func:`parse_dmarc_record` returns None for anything else. The rest follows the
DKIM tag=value syntax of :func:`mailtoaster.auth.tags.parse_tag_list`, one tag at a time, because
DMARC is forgiving where DKIM is not: "Syntax errors in the remainder of the record MUST be discarded
in favor of default values (if any) or ignored outright" (RFC 9989 §4.8). So a malformed tag, a
repeated tag (the first one counts) or a value outside a tag's grammar is dropped, its default used,
and the fact kept in :attr:`DmarcRecord.problems` for the report. Unknown tags are ignored but kept.

Tag names and the keyword values (``reject``, ``r``, ``y``, ...) are ABNF literals and therefore
case-insensitive; only ``DMARC1`` is case-sensitive (``%s"DMARC1"``).

Which of ``p``, ``sp`` and ``np`` count, and what a missing or invalid ``p`` means, depends on the
mode (RFC 7489 or RFC 9989); that decision is :func:`usable_policies`, not the parser's.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from mailtoaster.auth.tags import TagListError, parse_tag_list

__all__ = [
    "AlignmentMode",
    "DmarcMode",
    "DmarcRecord",
    "Policy",
    "PolicySet",
    "PsdFlag",
    "is_dmarc_record",
    "parse_dmarc_record",
    "usable_policies",
]

DmarcMode = Literal["dmarcbis", "rfc7489"]
"""``dmarcbis``: RFC 9989 (the DNS Tree Walk, ``t``, ``psd``, ``np``); ``rfc7489``: the original
DMARC (the Public Suffix List, ``pct``)."""

_VERSION = re.compile(r"[vV][ \t]*=[ \t]*DMARC1[ \t]*(?:;|\Z)")
_WSP = " \t"
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[A-Za-z0-9\-._~:/?#\[\]@$&'()*+=%]+(?:![0-9]+[kmgtKMGT]?)?\Z")
_PCT = re.compile(r"[0-9]{1,3}\Z")
_RI = re.compile(r"[0-9]{1,10}\Z")
_FO_OPTIONS = frozenset("01ds")
_FORMAT = re.compile(r"[a-z][a-z0-9-]*\Z")
_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.StrEnum)
DEFAULT_RI = 86400


class Policy(enum.StrEnum):
    """A Domain Owner Assessment Policy (``p``, ``sp``, ``np``), also used as the disposition."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"

    def lowered(self) -> Policy:
        """One level below: what ``t=y`` (RFC 9989 §4.7) and mail outside the ``pct`` sample
        (RFC 7489 §6.6.4) get."""
        return {Policy.REJECT: Policy.QUARANTINE}.get(self, Policy.NONE)

    @property
    def severity(self) -> int:
        return (Policy.NONE, Policy.QUARANTINE, Policy.REJECT).index(self)


class AlignmentMode(enum.StrEnum):
    RELAXED = "r"
    STRICT = "s"


class PsdFlag(enum.StrEnum):
    """RFC 9989 ``psd``: y (a Public Suffix Domain), n (an Organizational Domain), u (unsaid)."""

    YES = "y"
    NO = "n"
    UNKNOWN = "u"


@dataclass(frozen=True)
class DmarcRecord:
    """One DMARC record: every tag as data, defaults filled in, problems listed."""

    text: str
    tags: tuple[tuple[str, str], ...] = ()
    """Every tag (names lower-cased, first occurrence only) in the order written, known or not."""
    p: Policy | None = None
    """None when absent or invalid (see ``invalid``)."""
    sp: Policy | None = None
    np: Policy | None = None
    adkim: AlignmentMode = AlignmentMode.RELAXED
    aspf: AlignmentMode = AlignmentMode.RELAXED
    pct: int = 100
    """RFC 7489 sampling rate (historic in RFC 9989)."""
    testing: bool = False
    """RFC 9989 ``t=y``."""
    psd: PsdFlag = PsdFlag.UNKNOWN
    rua: tuple[str, ...] = ()
    """The syntactically valid aggregate report URIs, as written."""
    ruf: tuple[str, ...] = ()
    fo: tuple[str, ...] = ("0",)
    rf: tuple[str, ...] = ("afrf",)
    ri: int = DEFAULT_RI
    invalid: frozenset[str] = field(default_factory=frozenset)
    """Names of tags that were present but whose value broke the tag's grammar."""
    problems: tuple[str, ...] = ()
    """Each syntax error that was discarded in favour of a default, in words."""

    def tag(self, name: str) -> str | None:
        """The value of tag ``name`` as written (after trimming), or None when absent."""
        return dict(self.tags).get(name)


def is_dmarc_record(text: str) -> bool:
    """True if ``text`` starts with the ``v=DMARC1`` tag (RFC 9989 §4.7, RFC 7489 §6.6.3 step 2)."""
    return _VERSION.match(text) is not None


@functools.lru_cache(maxsize=1024)
def parse_dmarc_record(text: str) -> DmarcRecord | None:
    """The record in ``text``, or None if ``text`` is not a DMARC record at all. Never raises.

    Cached, as SPF records are: the same few records come back with every message, and the result
    is frozen."""
    if not is_dmarc_record(text):
        return None
    problems: list[str] = []
    tags = _split_tags(text, problems)
    reader = _TagReader(dict(tags), problems)
    return DmarcRecord(
        text,
        tuple(tags),
        p=reader.get("p", _keyword(Policy), None),
        sp=reader.get("sp", _keyword(Policy), None),
        np=reader.get("np", _keyword(Policy), None),
        adkim=reader.get("adkim", _keyword(AlignmentMode), AlignmentMode.RELAXED),
        aspf=reader.get("aspf", _keyword(AlignmentMode), AlignmentMode.RELAXED),
        pct=reader.get("pct", _percent, 100),
        testing=reader.get("t", _yes_no, False),
        psd=reader.get("psd", _keyword(PsdFlag), PsdFlag.UNKNOWN),
        rua=reader.uris("rua"),
        ruf=reader.uris("ruf"),
        fo=reader.get("fo", _failure_options, ("0",)),
        rf=reader.get("rf", _formats, ("afrf",)),
        ri=reader.get("ri", _interval, DEFAULT_RI),
        invalid=frozenset(reader.invalid),
        problems=tuple(problems),
    )


def _split_tags(text: str, problems: list[str]) -> list[tuple[str, str]]:
    """The tags after ``v=DMARC1``, each parsed on its own so one bad tag cannot spoil the rest."""
    specs = text.split(";")
    tags: list[tuple[str, str]] = [("v", "DMARC1")]
    for position, spec in enumerate(specs[1:], start=2):
        if not spec.strip(_WSP + "\r\n"):
            if position < len(specs):
                problems.append(f"empty tag at position {position}; ignored")
            continue
        try:
            ((name, value),) = parse_tag_list(spec).items()
        except TagListError as exc:
            detail = str(exc).removeprefix("tag 1 ")
            problems.append(f"tag {position} {detail}; ignored")
            continue
        name = name.lower()
        if any(existing == name for existing, _ in tags):
            problems.append(f"tag {name!r} appears again; only the first counts")
            continue
        tags.append((name, value))
    return tags


class _TagReader:
    """Reads known tags from the split record, replacing each invalid value by the tag's default."""

    def __init__(self, written: dict[str, str], problems: list[str]) -> None:
        self.written = written
        self.problems = problems
        self.invalid: set[str] = set()

    def get(self, name: str, parse: Callable[[str], _T | None], default: _T) -> _T:
        value = self.written.get(name)
        if value is None:
            return default
        parsed = parse(value)
        if parsed is None:
            self.invalid.add(name)
            self.problems.append(f"{name}={value[:40]!r} is not valid; the default applies")
            return default
        return parsed

    def uris(self, name: str) -> tuple[str, ...]:
        """The valid URIs of ``rua``/``ruf``; the tag is invalid only when none of them is valid."""
        value = self.written.get(name)
        if value is None:
            return ()
        uris = [uri.strip(_WSP) for uri in value.split(",")]
        valid = tuple(uri for uri in uris if _URI.match(uri))
        if len(valid) < len(uris):
            bad = next(uri for uri in uris if not _URI.match(uri))
            self.problems.append(f"{name}: {bad[:40]!r} is not a valid URI; ignored")
        if not valid:
            self.invalid.add(name)
        return valid


def _keyword(choices: type[_E]) -> Callable[[str], _E | None]:
    def parse(value: str) -> _E | None:
        try:
            return choices(value.lower())
        except ValueError:
            return None

    return parse


def _yes_no(value: str) -> bool | None:
    return {"y": True, "n": False}.get(value.lower())


def _percent(value: str) -> int | None:
    return int(value) if _PCT.match(value) and int(value) <= 100 else None


def _interval(value: str) -> int | None:
    return int(value) if _RI.match(value) and int(value) < 2**32 else None


def _failure_options(value: str) -> tuple[str, ...] | None:
    """RFC 9989 dmarc-fo: 0, 1, d, s joined by colons, each at most once, 0 and 1 not together."""
    options = tuple(option.strip(_WSP).lower() for option in value.split(":"))
    if not all(option in _FO_OPTIONS for option in options) or len(set(options)) != len(options):
        return None
    return None if {"0", "1"} <= set(options) else options


def _formats(value: str) -> tuple[str, ...] | None:
    """RFC 7489 rf: colon-separated report format names (``afrf``)."""
    formats = tuple(f.strip(_WSP).lower() for f in value.split(":"))
    return formats if all(_FORMAT.match(f) for f in formats) else None


@dataclass(frozen=True)
class PolicySet:
    """The policies a record really asks for, once the mode's rules for bad ``p``/``sp``/``np`` ran."""

    p: Policy
    sp: Policy | None
    np: Policy | None
    note: str = ""
    """Set when a rule replaced what was written (a missing ``p``, the ``rua`` fallback)."""

    def for_subdomain(self) -> Policy:
        return self.sp if self.sp is not None else self.p

    def for_nonexistent_subdomain(self) -> Policy:
        return self.np if self.np is not None else self.for_subdomain()


def usable_policies(record: DmarcRecord, mode: DmarcMode) -> PolicySet | None:
    """The policies to apply, or None when the record must not be used (no DMARC processing).

    RFC 9989 §4.10.1 and RFC 7489 §6.6.3 step 6: "If a retrieved policy record does not contain a
    valid "p" tag, or contains an "sp" tag that is not valid, then: if a "rua" tag is present and
    contains at least one syntactically valid reporting URI, the Mail Receiver SHOULD act as if a
    record containing a valid "v" tag and "p=none" was retrieved, and continue processing; otherwise,
    the Mail Receiver applies no DMARC processing to this message." RFC 9989 adds ``np`` to that
    rule, and says an *absent* ``p`` reads as ``p=none`` (§4.7). RFC 7489 knows no ``np`` (RFC 9091
    added it), so there an invalid ``np`` is only ignored.
    """
    checked = ("p", "sp", "np") if mode == "dmarcbis" else ("p", "sp")
    broken = [name for name in checked if name in record.invalid]
    if mode == "rfc7489" and record.tag("p") is None:
        broken.insert(0, "p")
    if broken:
        if not record.rua:
            return None
        listed = ", ".join(f"{name}= missing or invalid" for name in broken)
        return PolicySet(Policy.NONE, None, None, f"{listed}; a valid rua= makes it p=none")
    if record.p is None:
        return PolicySet(Policy.NONE, record.sp, record.np, "no p= tag: treated as p=none (RFC 9989 §4.7)")
    return PolicySet(record.p, record.sp, record.np)
