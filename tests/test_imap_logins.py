"""Password checks of IMAP logins (imap/logins.py): at most one argon2 check at a time, and passed logins
remembered for a short while; a wrong password never counts as remembered."""

from __future__ import annotations

import asyncio
import threading
import time

from mailtoaster.imap.logins import LoginChecks


class Checker:
    """A directory check that takes a while and records how many run at once."""

    def __init__(self, password: str = "right", seconds: float = 0.05) -> None:
        self.password = password
        self.seconds = seconds
        self.calls = 0
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, login: str, password: str) -> bool:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return login == "alice@example.com" and password == self.password


async def test_passed_login_is_remembered() -> None:
    checker = Checker()
    checks = LoginChecks()
    assert await checks.verify(checker, "alice@example.com", "right")
    assert await checks.verify(checker, "alice@example.com", "right")
    assert checker.calls == 1
    assert await checks.verify(checker, "bob@example.com", "right") is False
    assert checker.calls == 2


async def test_wrong_password_is_never_remembered() -> None:
    checker = Checker()
    checks = LoginChecks()
    for _ in range(3):
        assert await checks.verify(checker, "alice@example.com", "wrong") is False
    assert checker.calls == 3
    assert await checks.verify(checker, "alice@example.com", "right")
    assert await checks.verify(checker, "alice@example.com", "wrong") is False
    assert await checks.verify(checker, "alice@example.com", "righ") is False
    assert await checks.verify(checker, "alice@example.comr", "ight") is False
    assert checker.calls == 7


async def test_entries_expire() -> None:
    now = [100.0]
    checker = Checker()
    checks = LoginChecks(ttl=60, clock=lambda: now[0])
    assert await checks.verify(checker, "alice@example.com", "right")
    now[0] += 59
    assert await checks.verify(checker, "alice@example.com", "right")
    assert checker.calls == 1
    now[0] += 2
    checker.password = "changed"
    assert await checks.verify(checker, "alice@example.com", "right") is False
    assert checker.calls == 2


async def test_cache_is_bounded() -> None:
    checker = Checker(seconds=0)
    checks = LoginChecks(max_entries=2)

    def any_password(login: str, password: str) -> bool:
        checker(login, password)
        return True

    for name in ("a", "b", "c"):
        assert await checks.verify(any_password, name, "pw")
    assert await checks.verify(any_password, "c", "pw")
    assert checker.calls == 3
    assert await checks.verify(any_password, "a", "pw")
    assert checker.calls == 4


async def test_one_check_at_a_time() -> None:
    checker = Checker(seconds=0.05)
    checks = LoginChecks()
    logins = [("alice@example.com", "wrong")] * 4 + [("bob@example.com", "x")] * 2
    results = await asyncio.gather(*(checks.verify(checker, name, password) for name, password in logins))
    assert results == [False] * 6
    assert checker.calls == 6
    assert checker.most == 1


async def test_simultaneous_logins_of_one_user_check_once() -> None:
    checker = Checker(seconds=0.05)
    checks = LoginChecks(concurrency=2)
    results = await asyncio.gather(*(checks.verify(checker, "alice@example.com", "right") for _ in range(5)))
    assert results == [True] * 5
    assert checker.calls <= 2
    assert checker.most <= 2
