"""Password checks for IMAP logins: at most :data:`MAX_CONCURRENT_CHECKS` at a time, and a short-lived
cache of the logins that passed, as Dovecot's ``auth_cache``.

The directory's check is argon2id with the stored hash's parameters (argon2-cffi's defaults: 64 MiB of
memory for each check in progress, tens of milliseconds). Without a limit, N clients logging in at
once cost N × 64 MiB in the serving process; with it they queue (on the event loop, not in worker
threads) and the process never holds more than one check's memory.

A login that passed is remembered for :data:`CACHE_TTL` seconds as HMAC-SHA256, under a random key
made when the process starts, of the login name and the password: the password itself is never kept,
and the digests mean nothing outside this process. Within that time the same name and password log
in without running argon2 again (clients such as Thunderbird open several connections at once and
reconnect often). Only successes are cached: a wrong password always runs the full check. The cost:
after a password change the old password keeps working for up to :data:`CACHE_TTL` seconds for a
client that used it in that time (the directory is not asked whether the hash changed). A user
removed from the directory cannot log in at all: the session looks the user up after every check.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_CONCURRENT_CHECKS = 1
"""argon2 checks running at once in the process (each takes the hash's memory cost, 64 MiB)."""
CACHE_TTL = 60.0
"""Seconds a passed login is remembered."""
CACHE_SIZE = 1024
"""Logins remembered at most (the oldest go first)."""


class LoginChecks:
    """The process's password checks: :meth:`verify` a login name and password with the directory's
    check, limited and cached as the module says."""

    def __init__(
        self,
        *,
        concurrency: int = MAX_CONCURRENT_CHECKS,
        ttl: float = CACHE_TTL,
        max_entries: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = secrets.token_bytes(32)
        self._limit = asyncio.Semaphore(concurrency)
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._passed: OrderedDict[bytes, float] = OrderedDict()
        """Digest → when it expires (monotonic clock), oldest first."""
        self.checks_run = 0
        """How many times the directory's check ran (for tests and statistics)."""

    async def verify(self, check: Callable[[str, str], bool], login: str, password: str) -> bool:
        """Whether ``password`` is ``login``'s: from the cache, or ``check(login, password)`` in a
        worker thread once no more than the allowed number of other checks run."""
        digest = self._digest(login, password)
        if self._remembered(digest):
            return True
        async with self._limit:
            if self._remembered(digest):  # a login that waited for the same check
                return True
            self.checks_run += 1
            passed = await asyncio.to_thread(check, login, password)
        if passed:
            self._remember(digest)
        return passed

    def forget(self) -> None:
        """Drop every remembered login."""
        self._passed.clear()

    def _digest(self, login: str, password: str) -> bytes:
        name = login.encode("utf-8", "surrogatepass")
        secret = password.encode("utf-8", "surrogatepass")
        message = len(name).to_bytes(4, "big") + name + secret
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _remembered(self, digest: bytes) -> bool:
        expires = self._passed.get(digest)
        if expires is None:
            return False
        if expires <= self._clock():
            del self._passed[digest]
            return False
        return True

    def _remember(self, digest: bytes) -> None:
        if self._ttl <= 0 or self._max_entries <= 0:
            return
        self._passed.pop(digest, None)
        self._passed[digest] = self._clock() + self._ttl
        while len(self._passed) > self._max_entries:
            self._passed.popitem(last=False)
