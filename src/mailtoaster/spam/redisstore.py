"""The Redis token store: several mail servers sharing one Bayes filter.

Named ``redisstore`` so that it cannot shadow the ``redis`` package (redis-py) it imports.

Layout, under a key prefix (default ``mailtoaster:bayes:``), per scope (``global`` or ``user:<user>``):

- ``tokens:<scope>``  hash  token → ``"<spam> <ham> <last learned, Unix seconds>"``: one hash field per
  token, so a message's counts are one ``HMGET``, the number of distinct tokens is ``HLEN``, and a token
  costs one small field rather than a key of its own (Redis stores small hashes compactly).
- ``learned:<scope>`` hash  message digest → ``spam`` | ``ham``: the learn-once record.
- ``totals:<scope>``  hash  ``spam`` / ``ham`` → learned messages.
- ``users``           set   users whose own scope holds learned messages (``stats().users``).

Every change of a message (learn, move to the other class, forget) is one Lua script run by the server:
Redis runs a script alone, so two servers learning the same message at the same moment cannot both
count it, and a client that dies mid-way leaves nothing half done. The script is idempotent by digest,
which is what makes retrying it after a lost reply safe.

Every call is bounded by socket timeouts (connect and read), and every Redis error — refused, timed
out, out of memory, wrong type — becomes :class:`TokenStoreUnavailable` naming the server.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from mailtoaster.spam.store import Label, StoreStats, TokenCounts, TokenStoreUnavailable, Totals, as_label

DEFAULT_PREFIX = "mailtoaster:bayes:"
DEFAULT_TIMEOUT = 3.0
"""Seconds for connecting and for each reply: a Redis that does not answer must not stall delivery."""
BATCH = 500
"""Tokens per ``HMGET``/``HSET`` inside the scripts and per expiry step: Lua's ``unpack`` has a limit
(about 8000 values), and short steps keep any one script from blocking Redis for long."""
SCAN_COUNT = 1000
"""The ``HSCAN`` hint while expiring: fields looked at per round trip."""

_LABELS: tuple[Label, ...] = ("spam", "ham")
_SCOPE_KINDS = ("tokens", "learned", "totals")

# KEYS: tokens, learned, totals of the global scope; the same three of the user's scope (when ARGV[4]
# is not empty); the users set. ARGV: digest, label ("" = forget), now (whole seconds), user ("" =
# none), then the message's distinct tokens. Returns the label the message had in the narrowest scope
# ("" = none).
_LEARN_SCRIPT = """
local digest, label, now, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local BATCH = tonumber(ARGV[5])
local FIRST = 6

local function adjust(tokens, previous, label)
  for first = FIRST, #ARGV, BATCH do
    local fields = {}
    for i = first, math.min(first + BATCH - 1, #ARGV) do fields[#fields + 1] = ARGV[i] end
    local values = redis.call('HMGET', tokens, unpack(fields))
    local sets, dels = {}, {}
    for i, token in ipairs(fields) do
      local spam, ham, seen = 0, 0, now
      if values[i] then
        local s, h, t = string.match(values[i], '^(%d+) (%d+) (%d+)$')
        spam, ham, seen = tonumber(s) or 0, tonumber(h) or 0, t or now
      end
      if values[i] or label ~= '' then
        if previous == 'spam' and spam > 0 then spam = spam - 1 end
        if previous == 'ham' and ham > 0 then ham = ham - 1 end
        if label == 'spam' then spam = spam + 1; seen = now end
        if label == 'ham' then ham = ham + 1; seen = now end
        if spam + ham == 0 then
          dels[#dels + 1] = token
        else
          sets[#sets + 1] = token
          sets[#sets + 1] = string.format('%d %d %s', spam, ham, seen)
        end
      end
    end
    if #sets > 0 then redis.call('HSET', tokens, unpack(sets)) end
    if #dels > 0 then redis.call('HDEL', tokens, unpack(dels)) end
  end
end

local function apply(tokens, learned, totals)
  local previous = redis.call('HGET', learned, digest) or ''
  if previous == label then return previous end
  if previous ~= '' then
    if tonumber(redis.call('HGET', totals, previous) or '0') > 0 then
      redis.call('HINCRBY', totals, previous, -1)
    end
  end
  if label ~= '' then
    redis.call('HINCRBY', totals, label, 1)
    redis.call('HSET', learned, digest, label)
  else
    redis.call('HDEL', learned, digest)
  end
  adjust(tokens, previous, label)
  return previous
end

local before = apply(KEYS[1], KEYS[2], KEYS[3])
if user ~= '' then
  before = apply(KEYS[4], KEYS[5], KEYS[6])
  local counts = redis.call('HMGET', KEYS[6], 'spam', 'ham')
  if (tonumber(counts[1]) or 0) + (tonumber(counts[2]) or 0) > 0 then
    redis.call('SADD', KEYS[7], user)
  else
    redis.call('SREM', KEYS[7], user)
  end
end
return before
"""

# KEYS: one scope's tokens hash. ARGV: the cut-off (Unix seconds), then candidate tokens. Each is
# checked again here, so a token learned since the client looked at it stays. Returns how many went.
_EXPIRE_SCRIPT = """
local cutoff = tonumber(ARGV[1])
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
if #fields == 0 then return 0 end
local values = redis.call('HMGET', KEYS[1], unpack(fields))
local dels = {}
for i, token in ipairs(fields) do
  if values[i] then
    local s, h, t = string.match(values[i], '^(%d+) (%d+) (%d+)$')
    if s and tonumber(s) + tonumber(h) <= 1 and tonumber(t) < cutoff then dels[#dels + 1] = token end
  end
end
if #dels > 0 then redis.call('HDEL', KEYS[1], unpack(dels)) end
return #dels
"""


class RedisTokenStore:
    """The :class:`~mailtoaster.spam.store.TokenStore` in Redis at ``url`` (``redis://host:port/db``,
    ``rediss://`` for TLS, ``unix:///path?db=N``; a password as ``redis://:secret@host:port/db``).

    Connects and sends a PING at once, so a wrong URL or a Redis that is down is found at start-up, not
    at the first message. Thread-safe (redis-py's connection pool); one object per process is enough.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._prefix = prefix
        self._clock = clock
        self._where = safe_url(url)
        try:
            self._client: redis.Redis = redis.Redis.from_url(
                url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                decode_responses=True,
                encoding_errors="surrogatepass",
                # One immediate retry on a broken connection (a Redis restart leaves stale pooled
                # connections); none on a timeout, which would only double the wait.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
        except (ValueError, TypeError) as exc:
            raise TokenStoreUnavailable(f"invalid Redis URL {self._where}: {exc}") from None
        self._where = _describe(self._client, self._where)
        self._learn = self._client.register_script(_LEARN_SCRIPT)
        self._expire = self._client.register_script(_EXPIRE_SCRIPT)
        try:
            with self._errors():
                self._client.ping()
        except TokenStoreUnavailable:
            self._client.close()
            raise

    def __repr__(self) -> str:
        return f"RedisTokenStore({self._where})"

    # -- reading --

    def totals(self, user: str | None = None) -> Totals:
        with self._errors():
            spam, ham = self._client.hmget(self._key("totals", user), list(_LABELS))
        return Totals(spam=_int(_text(spam)), ham=_int(_text(ham)))

    def counts(self, tokens: Collection[str], user: str | None = None) -> Mapping[str, TokenCounts]:
        """One ``HMGET`` (one round trip) for all of ``tokens``."""
        wanted = list(dict.fromkeys(tokens))
        if not wanted:
            return {}
        with self._errors():
            values = [_text(value) for value in self._client.hmget(self._key("tokens", user), wanted)]
        found: dict[str, TokenCounts] = {}
        for token, value in zip(wanted, values, strict=True):
            if value is not None:
                spam, ham, _ = _parse_token(value)
                found[token] = TokenCounts(spam=spam, ham=ham)
        return found

    def learned_as(self, digest: str, user: str | None = None) -> Label | None:
        with self._errors():
            value = self._client.hget(self._key("learned", user), digest)
        return as_label(value)

    # -- changing --

    def learn(
        self, digest: str, tokens: Collection[str], label: Label | None, user: str | None = None
    ) -> Label | None:
        """One atomic script run: see the module docstring."""
        # Without a user the script reads only the global keys; the user slots repeat them, as Redis
        # wants every key a script may touch among its KEYS.
        scope_keys = [self._key(kind, None) for kind in _SCOPE_KINDS]
        user_keys = [self._key(kind, user) for kind in _SCOPE_KINDS] if user else scope_keys
        keys = [*scope_keys, *user_keys, self._prefix + "users"]
        now = str(int(self._clock()))
        args = [digest, label or "", now, user or "", str(BATCH), *dict.fromkeys(tokens)]
        with self._errors():
            previous = self._learn(keys=keys, args=args)
        return as_label(previous)

    def expire(self, unused_since: float) -> int:
        """Walk every scope's tokens with ``HSCAN`` and let a script remove the stale one-offs, a batch
        at a time: Redis is never blocked for a whole store's worth of tokens."""
        # Times are kept in whole seconds (learned at L is stored as floor(L)); comparing with
        # floor(unused_since) removes only tokens surely learned before it, never one learned since.
        cutoff = math.floor(unused_since)
        removed = 0
        with self._errors():
            users = self._users()
            for user in [None, *sorted(users)]:
                removed += self._expire_scope(self._key("tokens", user), cutoff)
        return removed

    def _expire_scope(self, key: str, cutoff: int) -> int:
        removed = 0
        cursor = 0
        while True:
            cursor, batch = self._client.hscan(key, cursor, count=SCAN_COUNT)
            assert isinstance(batch, dict)  # the list form is only for no_values=True
            candidates = [str(token) for token, value in batch.items() if _stale(str(value), cutoff)]
            for start in range(0, len(candidates), BATCH):
                chunk = candidates[start : start + BATCH]
                removed += int(self._expire(keys=[key], args=[str(cutoff), *chunk]))
            if cursor == 0:
                return removed

    # -- the whole store --

    def stats(self) -> StoreStats:
        """Global totals and token count, users with a scope, and the memory our keys take."""
        totals = self.totals()
        with self._errors():
            tokens = int(self._client.hlen(self._key("tokens", None)))
            users = self._users()
            size = self._memory(users)
        return StoreStats(totals=totals, tokens=tokens, users=len(users), size_bytes=size)

    def _memory(self, users: Collection[str]) -> int:
        """The sum of ``MEMORY USAGE`` over our keys (Redis samples 5 fields of each hash, so this is an
        estimate), in one pipeline. Where ``MEMORY`` is disabled, the server's ``used_memory``."""
        keys = [self._prefix + "users"]
        for user in [None, *users]:
            keys += [self._key(kind, user) for kind in _SCOPE_KINDS]
        pipeline = self._client.pipeline(transaction=False)
        for key in keys:
            pipeline.memory_usage(key)
        try:
            sizes: Sequence[int | None] = pipeline.execute()
        except ResponseError:
            info: dict[str, Any] = self._client.info("memory")
            return int(info.get("used_memory", 0))
        return sum(size or 0 for size in sizes)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RedisTokenStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- helpers --

    def _users(self) -> set[str]:
        return {str(user) for user in self._client.smembers(self._prefix + "users")}

    def _key(self, kind: str, user: str | None) -> str:
        """``kind`` first, the user last: no user name can make one scope's key another's."""
        return f"{self._prefix}{kind}:global" if user is None else f"{self._prefix}{kind}:user:{user}"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            raise TokenStoreUnavailable(f"Redis at {self._where}: {type(exc).__name__}: {exc}") from exc


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    credentials, _, host = rest.partition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if user else ':***'}@{host}"


def _describe(client: redis.Redis, fallback: str) -> str:
    """``host:port db N`` (or the socket path) from what redis-py made of the URL."""
    options = client.connection_pool.connection_kwargs
    db = options.get("db", 0)
    if "path" in options:
        return f"{options['path']} db {db}"
    if "host" in options:
        return f"{options['host']}:{options.get('port', 6379)} db {db}"
    return fallback


def _parse_token(value: str) -> tuple[int, int, int]:
    spam, ham, seen = value.split(" ")
    return int(spam), int(ham), int(seen)


def _stale(value: str, cutoff: int) -> bool:
    spam, ham, seen = _parse_token(value)
    return spam + ham <= 1 and seen < cutoff


def _text(value: bytes | str | None) -> str | None:
    """redis-py types replies as bytes or str; with ``decode_responses`` they are str."""
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


def _int(value: str | None) -> int:
    return int(value) if value else 0
