"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dnsserver import DnsTestServer


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    """A running :class:`~tests.dnsserver.DnsTestServer` on 127.0.0.1 with no records yet.

    Give it data with ``dns_server.load_zone(text)``; point a resolver at ``dns_server.address``
    (or ``--nameserver dns_server.nameserver_arg``). Stopped after the test.
    """
    with DnsTestServer() as server:
        yield server
