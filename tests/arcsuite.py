"""Loaders for the ARC test data in ../shared/testdata/arc (format: its SOURCES.md and README.valimail.md).

* ``arc-draft-validation-tests.yml``: ValiMail's 171 validation cases, plus the 4 that a duplicated
  name hides from YAML loaders (:func:`validation_cases`).
* ``arc-draft-sign-tests.yml``: its 17 signing cases (:func:`sign_cases`), compared the way the
  upstream harness compares (:func:`tag_set`).
* ``mail-auth/*.txt``: stalwart's two sealed messages (:func:`mail_auth_cases`), in the same format
  as the DKIM ones, so :func:`tests.dkimcorpus.parse_mail_auth` reads them.

Messages come back as CRLF bytes; each scenario's key records become a :class:`StaticResolver`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from mailtoaster.auth.dkim.canon import to_crlf
from mailtoaster.dns import RRType, StaticResolver
from tests.dkimcorpus import parse_mail_auth, txt_rdata
from tests.spfsuite import TESTDATA

ARC_DATA = TESTDATA / "arc"
VALIDATION_FILE = ARC_DATA / "arc-draft-validation-tests.yml"
SIGN_FILE = ARC_DATA / "arc-draft-sign-tests.yml"
MAIL_AUTH = ARC_DATA / "mail-auth"
VALIDATION_COUNT = 175
"""The 171 that SOURCES.md counts (what a YAML loader sees) and 4 earlier definitions of a repeated name."""
SIGN_COUNT = 17


def available() -> bool:
    return VALIDATION_FILE.is_file() and SIGN_FILE.is_file()


@dataclass(frozen=True)
class ValidationCase:
    id: str
    """``<scenario>/<test>``, the scenario's description as a lower-case slug."""
    description: str
    message: bytes
    expected: str
    """``pass``, ``fail`` or ``none``; the suite's three empty expectations read as ``fail`` (SOURCES.md)."""
    resolver: StaticResolver


@dataclass(frozen=True)
class SignCase:
    id: str
    description: str
    message: bytes
    timestamp: int
    headers: tuple[str, ...]
    """``sig-headers``: the AMS h= list."""
    authserv_id: str
    domain: str
    selector: str
    private_key: rsa.RSAPrivateKey
    resolver: StaticResolver
    expected_aar: str
    expected_ams: str
    expected_as: str
    """All three empty (``no_additional_sig``) means: add no set."""


@dataclass(frozen=True)
class MailAuthArcCase:
    name: str
    message: bytes
    resolver: StaticResolver


def validation_cases() -> list[ValidationCase]:
    """All 175, in file order. A test name used twice in one scenario (four in "Arc Seal Fields") names
    the last definition, the one YAML loaders and the upstream harness see; the earlier one runs too,
    as ``<name>@1``: it is a different message with its own expectation."""
    cases = []
    for scenario in _documents(VALIDATION_FILE):
        resolver = key_resolver(scenario.get("txt-records") or {})
        for name, test in scenario["tests"].items():
            cases.append(
                ValidationCase(
                    id=f"{_slug(scenario['description'])}/{name}",
                    description=str(test.get("description", "")),
                    message=_message(test["message"]),
                    expected=str(test["cv"]).strip().lower() or "fail",
                    resolver=resolver,
                )
            )
    return cases


def sign_cases() -> list[SignCase]:
    cases = []
    for scenario in _documents(SIGN_FILE):
        resolver = key_resolver(scenario.get("txt-records") or {})
        key = load_pem_private_key(scenario["privatekey"].encode("ascii"), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        for name, test in scenario["tests"].items():
            cases.append(
                SignCase(
                    id=f"{_slug(scenario['description'])}/{name}",
                    description=str(test.get("description", "")),
                    message=_message(test["message"]),
                    timestamp=int(test["t"]),
                    headers=tuple(str(test["sig-headers"]).split(":")),
                    authserv_id=str(test["srv-id"]),
                    domain=str(scenario["domain"]),
                    selector=str(scenario["sel"]),
                    private_key=key,
                    resolver=resolver,
                    expected_aar=str(test["AAR"] or ""),
                    expected_ams=str(test["AMS"] or ""),
                    expected_as=str(test["AS"] or ""),
                )
            )
    return cases


def mail_auth_cases() -> list[MailAuthArcCase]:
    cases = []
    for path in sorted(MAIL_AUTH.glob("[0-9]*.txt")):
        resolver, message = parse_mail_auth(path.read_bytes())
        cases.append(MailAuthArcCase(path.stem, message, resolver))
    return cases


def key_resolver(records: Mapping[str, str]) -> StaticResolver:
    """``txt-records``: name -> key record; YAML block scalars may have split it over lines."""
    resolver = StaticResolver()
    for name, value in records.items():
        resolver.add(name, RRType.TXT, txt_rdata("".join(str(value).splitlines())))
    return resolver


def tag_set(value: str | bytes) -> set[str]:
    """The upstream harness's comparison: all white space removed, split on ``;``, as a set.

    Accepts a whole header field too (the ``Name:`` prefix is dropped).
    """
    text = value.decode("ascii") if isinstance(value, bytes) else value
    name, colon, rest = text.partition(":")
    if colon and re.fullmatch(r"(?i)ARC-[A-Za-z-]+", name.strip()):
        text = rest
    return {part for part in re.sub(r"\s+", "", text).split(";") if part}


class _KeepDuplicatesLoader(yaml.SafeLoader):
    """A safe loader that renames a repeated mapping key instead of letting the last one win."""


def _mapping_keeping_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    pairs = [(loader.construct_object(key), loader.construct_object(value)) for key, value in node.value]
    keys = [key for key, _ in pairs]
    mapping: dict[Any, Any] = {}
    for position, (key, value) in enumerate(pairs):
        later = key in keys[position + 1 :]
        mapping[f"{key}@{keys[:position].count(key) + 1}" if later else key] = value
    return mapping


_KeepDuplicatesLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_keeping_duplicates
)


def _documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [document for document in yaml.load_all(handle, Loader=_KeepDuplicatesLoader) if document]


def _message(text: str) -> bytes:
    return to_crlf(str(text).encode("utf-8"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).strip().lower()).strip("_")
