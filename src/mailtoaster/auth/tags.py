"""The tag=value lists of RFC 6376 §3.2, shared by DKIM signatures and key records, DomainKeys,
ARC and DMARC records.

Parsing is strict about what makes a list ambiguous (a duplicate tag, a tag name that is not
``ALPHA *(ALPHA / DIGIT / "_")``, a spec without ``=``) and lenient about white space, which the RFC
allows around every part. Values keep their inner white space: ``b=`` and ``p=`` callers strip it.
"""

from __future__ import annotations

import re

_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_FWS = re.compile(r"[ \t\r\n]+")
_VALUE_CHARS = re.compile(r"[\x21-\x3a\x3c-\x7e \t\r\n]*\Z")
_SPEC = r"[ \t\r\n]*+[A-Za-z][A-Za-z0-9_]*+[ \t\r\n]*+=[\x21-\x3a\x3c-\x7e \t\r\n]*+"
_WELL_FORMED = re.compile(rf"(?:{_SPEC}(?:;{_SPEC})*+(?:;[ \t\r\n]*+)?|[ \t\r\n]*+)\Z")
"""A whole tag-list that needs no error message: one match instead of two per tag. Possessive
quantifiers, and a value that ends only at ``;`` or the end, keep a failing match linear."""
_FWS_CHARS = " \t\r\n"


class TagListError(ValueError):
    """The text is not a tag-list; the message says which part and why."""


def parse_tag_list(text: str) -> dict[str, str]:
    """Tags in the order written, names as written (they are case-sensitive), values trimmed.

    One trailing ``;`` (and white space) is allowed, as the grammar says; an empty spec in the middle
    (``a=1;;b=2``) is not.
    """
    specs = text.split(";")
    if not specs[-1].strip(_FWS_CHARS):
        specs.pop()
    if _WELL_FORMED.match(text):
        tags = {
            name.strip(_FWS_CHARS): value.strip(_FWS_CHARS)
            for name, _, value in (spec.partition("=") for spec in specs)
        }
        if len(tags) == len(specs):
            return tags
    return _parse_specs(specs)


def _parse_specs(specs: list[str]) -> dict[str, str]:
    """Tag by tag, raising at the first part that breaks the grammar, with a message saying which."""
    tags: dict[str, str] = {}
    for position, spec in enumerate(specs, start=1):
        name, equals, value = spec.partition("=")
        name = name.strip(" \t\r\n")
        if not equals:
            raise TagListError(f"tag {position} ({spec.strip()[:40]!r}) has no '='")
        if not _TAG_NAME.match(name):
            raise TagListError(f"tag {position} has an invalid name {name[:40]!r}")
        if name in tags:
            raise TagListError(f"tag {name!r} appears twice")
        if not _VALUE_CHARS.match(value):
            raise TagListError(f"tag {name!r} has a character not allowed in a tag value")
        tags[name] = value.strip(" \t\r\n")
    return tags


def strip_fws(value: str) -> str:
    """``value`` with all folding white space removed (base64 in ``b=``, ``bh=``, ``p=``)."""
    return _FWS.sub("", value)
