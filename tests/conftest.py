"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dnsserver import DnsTestServer
from tests.redisserver import RedisServer, require_redis_server, running_redis


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    """A running :class:`~tests.dnsserver.DnsTestServer` on 127.0.0.1 with no records yet.

    Give it data with ``dns_server.load_zone(text)``; point a resolver at ``dns_server.address``
    (or ``--nameserver dns_server.nameserver_arg``). Stopped after the test.
    """
    with DnsTestServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private ``redis-server`` for the whole session (``tests/redisserver.py``); tests empty it
    (``flush(url)``) before use. Skips without redis-server (fails under ``CI=true``)."""
    with running_redis(require_redis_server()) as server:
        yield server


@pytest.fixture(scope="session")
def trained_spam_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite token store that has learned synthetic spam and ham (``tests/spamtraining.py``), made
    once: copy it into a data directory with ``install_trained`` (scoring never changes it)."""
    from tests.spamtraining import train

    path = tmp_path_factory.mktemp("trained-spam") / "tokens.sqlite"
    train(path)
    return path
