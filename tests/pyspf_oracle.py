"""pyspf as a test oracle: its DNSLookup hook answered from our in-memory resolver.

Used by the differential test and by ``bench/spf.py``. pyspf's module is called ``spf``, like
``bench/spf.py``: it is imported by name so type checkers (and that script) don't take one for the other.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from mailtoaster.dns import MX, DnsStatus, RRType, StaticResolver


def pyspf() -> Any:
    return importlib.import_module("spf")


def pyspf_lookup(resolver: StaticResolver) -> Callable[..., list[Any]]:
    """pyspf's ``DNSLookup(name, qtype, ...)``: a list of ``((name, type), value)``; no data and
    NXDOMAIN are an empty list, timeouts and SERVFAIL raise its TempError."""
    spf = pyspf()

    def lookup(name: str, qtype: str, *args: Any, **kwargs: Any) -> list[Any]:
        answer = resolver.lookup_sync(name, RRType(qtype))
        if answer.status in (DnsStatus.TIMEOUT, DnsStatus.SERVFAIL):
            raise spf.TempError(f"DNS {answer.status.value}")
        values: list[Any] = []
        for record in answer.records:
            if isinstance(record, tuple):
                values.append(list(record))
            elif isinstance(record, MX):
                values.append((record.preference, record.exchange))
            else:
                values.append(str(record))
        return [((name, qtype), value) for value in values]

    return lookup


def pyspf_check(resolver: StaticResolver, ip: str, mail_from: str, helo: str) -> tuple[str, str]:
    """(result, explanation) from pyspf, with the default explanation ``DEFAULT``."""
    spf = pyspf()
    spf.DNSLookup = pyspf_lookup(resolver)
    query = spf.query(i=ip, s=mail_from, h=helo, querytime=0)
    query.set_default_explanation("DEFAULT")
    result, _code, explanation = query.check()
    return str(result), str(explanation)
