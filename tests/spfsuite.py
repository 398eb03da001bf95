"""Loaders for the external SPF / Sender ID test suites in ../shared/testdata (format: their SOURCES.md).

The openspf YAML suites (rfc7208, rfc4408, pyspf, Sender ID) and stalwart's line-based mail-auth
format each become a list of :class:`SuiteCase`, with the zone data turned into a
:class:`StaticResolver`.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mailtoaster.dns import MX, Rdata, RRType, StaticResolver

TESTDATA = Path(
    os.environ.get("MAILTOASTER_TESTDATA") or Path(__file__).resolve().parents[2] / "shared" / "testdata"
)
"""The external suites: ``../shared/testdata`` beside the repository unless the environment says."""


@dataclass(frozen=True)
class SuiteCase:
    id: str
    helo: str
    ip: str
    mail_from: str
    results: tuple[str, ...]
    """Acceptable results; the first is preferred."""
    explanation: str | None
    resolver: StaticResolver
    receiver: str | None = None
    header: str | None = None
    spec: str = ""


def _rdata_bytes(value: Any) -> tuple[bytes, ...]:
    parts = value if isinstance(value, list) else [value]
    return tuple(str(part).encode("latin-1") for part in parts)


def openspf_resolver(zonedata: dict[str, list[Any]]) -> StaticResolver:
    """Zone data of the openspf schema: ``SPF:`` records are also served as TXT unless the name has
    its own ``TXT:`` entry; ``TXT: NONE`` only suppresses that copy; a ``TIMEOUT`` item makes every
    type not listed before it time out; names not listed are NXDOMAIN."""
    resolver = StaticResolver(empty_non_terminals=False)
    for name, items in (zonedata or {}).items():
        has_txt = any(isinstance(i, dict) and "TXT" in i for i in items)
        answering: set[RRType] = set()
        for item in items:
            if item == "TIMEOUT":
                resolver.add_timeout(name, answering)
                break
            ((kind, value),) = item.items()
            if kind == "TXT" and value == "NONE":
                continue
            for rrtype, rdata in _openspf_records(kind, value, has_txt):
                resolver.add(name, rrtype, rdata)
                answering.add(rrtype)
    return resolver


def _openspf_records(kind: str, value: Any, has_txt: bool) -> list[tuple[RRType, Any]]:
    if kind in ("A", "AAAA"):
        return [(RRType(kind), ipaddress.ip_address(value))]
    if kind == "MX":
        preference, exchange = value
        return [(RRType.MX, MX(int(preference), str(exchange).rstrip(".")))]
    if kind in ("PTR", "CNAME"):
        return [(RRType(kind), str(value).rstrip("."))]
    if kind == "TXT":
        return [(RRType.TXT, _rdata_bytes(value))]
    if kind == "SPF":
        records = [(RRType.SPF, _rdata_bytes(value))]
        if not has_txt:
            records.append((RRType.TXT, _rdata_bytes(value)))
        return records
    raise ValueError(f"unknown zonedata record type {kind}")


def load_openspf(path: Path) -> list[SuiteCase]:
    text = path.read_bytes().decode("latin-1")
    cases: list[SuiteCase] = []
    for scenario in yaml.safe_load_all(text):
        if not scenario:
            continue
        resolver = openspf_resolver(scenario.get("zonedata") or {})
        for name, test in scenario["tests"].items():
            result = test["result"]
            results = tuple(result) if isinstance(result, list) else (result,)
            cases.append(
                SuiteCase(
                    id=name,
                    helo=str(test["helo"]),
                    ip=str(test["host"]),
                    mail_from=str(test["mailfrom"]),
                    results=results,
                    explanation=test.get("explanation"),
                    resolver=resolver,
                    receiver=test.get("receiver"),
                    header=test.get("header"),
                    spec=str(test.get("spec", "")),
                )
            )
    return cases


def load_mail_auth(path: Path) -> list[SuiteCase]:
    """Stalwart's format: not YAML (keys repeat), one ``key: value`` per line; each ``expect:`` line
    is one check with the values set so far."""
    cases: list[SuiteCase] = []
    for number, document in enumerate(path.read_text(encoding="utf-8").split("\n---")):
        cases.extend(_mail_auth_document(path.stem, number, document))
    return cases


def _mail_auth_document(stem: str, number: int, document: str) -> list[SuiteCase]:
    """A later line for the same name and type replaces the earlier one (stalwart's runner inserts
    into a cache), so each ``expect:`` gets a resolver built from the records as they stand then."""
    zone: dict[tuple[str, RRType], list[Rdata]] = {}
    name = f"{stem}-{number}"
    helo = mail_from = ip = ""
    cases: list[SuiteCase] = []
    errors = _dns_error_names(document)
    for raw_line in document.splitlines():
        line = raw_line.strip()
        if line.startswith("-"):
            line = line[1:].strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = (part.strip() for part in line.split(":", 1))
        if key == "name":
            name = f"{stem}-{value}"
        elif key == "domain":
            helo = value
        elif key == "sender":
            mail_from = value
        elif key == "ip":
            ip = value
        elif key == "expect":
            result, _, explanation = value.partition(" ")
            resolver = StaticResolver(zone, empty_non_terminals=False, timeouts={e: () for e in errors})
            cases.append(
                SuiteCase(
                    id=f"{name}-{len(cases)}",
                    helo=helo,
                    ip=ip,
                    mail_from=mail_from,
                    results=(result.lower(),),
                    explanation=explanation or None,
                    resolver=resolver,
                )
            )
        elif key in ("spf", "exp", "a", "aaaa", "ptr", "mx"):
            zone.update(_mail_auth_records(key, value))
    return cases


def _mail_auth_records(key: str, value: str) -> dict[tuple[str, RRType], list[Rdata]]:
    owner, _, data = value.partition(" ")
    owner = owner.lower().rstrip(".")
    items = [item.strip() for item in data.split(",")]
    if key in ("spf", "exp"):
        return {(owner, RRType.TXT): [(data.encode("utf-8"),)]}
    if key in ("a", "aaaa"):
        return {(owner, RRType(key.upper())): [ipaddress.ip_address(item) for item in items]}
    if key == "ptr":
        return {(ipaddress.ip_address(owner).reverse_pointer, RRType.PTR): [i.rstrip(".") for i in items]}
    records: dict[tuple[str, RRType], list[Rdata]] = {(owner, RRType.MX): []}
    for position, address in enumerate(items):
        host = f"mx.{address}.{position}"
        records[(owner, RRType.MX)].append(MX(position + 1, host))
        kind = RRType.A if ipaddress.ip_address(address).version == 4 else RRType.AAAA
        records[(host, kind)] = [ipaddress.ip_address(address)]
    return records


def _dns_error_names(document: str) -> set[str]:
    """Names starting with ``_dns_error`` stand for a DNS failure in stalwart's runner."""
    names: set[str] = set()
    for token in document.replace(":", " ").replace(",", " ").split():
        cleaned = token.strip("\"'")
        if cleaned.startswith("_dns_error"):
            names.add(cleaned.rstrip("."))
    return names
