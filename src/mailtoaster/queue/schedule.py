"""When to try a deferred message again, and when to give up: pure functions of the entry's times.

The default follows Postfix: the delay doubles after every failed attempt, from 5 minutes
(``minimal_backoff_time = 300s``) up to a ceiling, and a message that has waited 5 days
(``maximal_queue_lifetime = 5d``) is returned to its sender. Postfix's ceiling is 4000 s; ours is
2 hours, which spares a receiving server that is down for a day some 40 pointless connections::

    attempt:   1     2     3     4      5      6     7 ...
    then wait: 5m   10m   20m   40m    80m    2h    2h ...

qmail-send instead retries a remote delivery at ``birth + (⌊√age⌋ + 20 s)²`` — 6m40s, 26m40s, 1h,
1h47m, ... after arrival: a quadratic curve whose gaps keep growing (about 9 h apart by the end of its
7-day ``queuelifetime``). It is available as :func:`qmail_retry_time` for comparison; the runner
uses :func:`next_attempt_time`.

The last attempt happens when the lifetime runs out: a retry that would fall later is moved to the
expiry time, so a message is never bounced without one try at the end of its life (as Postfix and
qmail both do). No "delayed" warning DSN is sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: float = 5 * MINUTE
    """Wait after the first failed attempt; doubled after each further one."""
    max_delay: float = 2 * HOUR
    """The ceiling of the doubling."""
    lifetime: float = 5 * DAY
    """A message still undelivered this long after arrival is bounced to its sender."""

    def __post_init__(self) -> None:
        if not 0 < self.first_delay <= self.max_delay:
            raise ValueError("retry delays must satisfy 0 < first_delay <= max_delay")
        if self.lifetime < 0:
            raise ValueError("the queue lifetime cannot be negative")


DEFAULT_POLICY = RetryPolicy()


def retry_delay(attempts: int, policy: RetryPolicy = DEFAULT_POLICY) -> float:
    """The wait after ``attempts`` failed attempts (``attempts >= 1``)."""
    if attempts < 1:
        return 0.0
    doublings = min(attempts - 1, 32)  # 2**32 * any sane first delay is far past any ceiling
    return min(policy.first_delay * 2.0**doublings, policy.max_delay)


def expires_at(created: float, policy: RetryPolicy = DEFAULT_POLICY) -> float:
    return created + policy.lifetime


def is_expired(created: float, now: float, policy: RetryPolicy = DEFAULT_POLICY) -> bool:
    return now >= expires_at(created, policy)


def next_attempt_time(
    attempts: int, created: float, now: float, policy: RetryPolicy = DEFAULT_POLICY
) -> float | None:
    """When to retry after the ``attempts``-th attempt failed at ``now``; ``None``: give up and bounce."""
    if is_expired(created, now, policy):
        return None
    return min(now + retry_delay(attempts, policy), expires_at(created, policy))


def qmail_retry_time(created: float, now: float, chanskip: int = 20) -> float:
    """qmail-send's ``nextretry()``: ``birth + (isqrt(now - birth) + chanskip)²``, with ``chanskip``
    20 s for remote deliveries and 10 s for local ones."""
    age = max(0, int(now - created))
    return created + (math.isqrt(age) + chanskip) ** 2
