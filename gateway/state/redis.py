"""Shared state in Redis: every Redis key and Lua script of the gateway's budgets, rate limits
and circuit breakers lives here (the rate windows' in ``gateway.state.redis_rates``, the response
cache's in ``gateway.state.redis_cache``).

Holds of a budget scope are a sorted set (hold id -> deadline in Redis server time) and a hash
(hold id -> nano-USD); scripts purge expired holds atomically before they count. A Redis that
restarted (or lost its data) is noticed through an *epoch* token: each replica remembers the
epoch it last saw, a reservation under another epoch is refused by the script, and the replica
first re-registers its own live holds, so requests in flight across a Redis restart still count
against the budget. Redis errors become ``DependencyUnavailable`` (a 503 with retry-after).
A breaker seen closed with no failure counted is trusted for ``BREAKER_CLEAN_TTL_S`` (0.5 s)
by the replica that saw it, so a healthy backend costs no Redis round trip per request.
Rate-limit windows have their keys and script in ``redis_rates``, called through this class.
The connection pool is bounded and blocking: past ``max_connections`` callers wait (up to the
timeout) instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from gateway.errors import DependencyUnavailable
from gateway.state.base import BreakerSettings, RateScope, RateVerdict
from gateway.state.redis_cache import RedisCache
from gateway.state.redis_rates import RedisRates

T = TypeVar("T")
log = logging.getLogger("tollgate.state")
EPOCH_CHECK_S = 1.0

# Opens the reserve and read scripts. KEYS[2]: hold deadlines (zset), KEYS[3]: hold amounts.
_PURGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #dead > 0 then
  redis.call('HDEL', KEYS[3], unpack(dead))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
local reserved = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do reserved = reserved + tonumber(v) end
"""

# KEYS: spent, hold deadlines, hold amounts, epoch.
# ARGV: limit, amount, hold id, ttl_ms, epoch this replica knows ('' = none yet), fresh epoch
_RESERVE = (
    """
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[6]
  redis.call('SET', KEYS[4], epoch)
end
if ARGV[5] ~= '' and ARGV[5] ~= epoch then return {-1, epoch, 0, 0} end
"""
    + _PURGE
    + """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent + reserved + tonumber(ARGV[2]) > tonumber(ARGV[1]) then
  return {0, epoch, spent, reserved}
end
local ttl = tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return {1, epoch, spent, reserved + tonumber(ARGV[2])}
"""
)

_SPENT = (
    _PURGE
    + """
return {tonumber(redis.call('GET', KEYS[1]) or '0'), reserved}
"""
)

# Re-registers one live hold after a Redis restart. KEYS: -, deadlines, amounts.
# ARGV: hold id, amount, remaining ms
_RESTORE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return 1
"""

# Settling never creates the spent key: if Redis lost it (restart, eviction), the next
# reservation re-seeds it from the SQL store, which already holds this attempt's row.
# KEYS: spent, hold deadlines, hold amounts. ARGV: hold id, actual
_SETTLE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS: fails, open, half_open. ARGV: threshold, window_ms, cooldown_ms
_BREAKER_FAIL = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n >= tonumber(ARGV[1]) or redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('SET', KEYS[3], '1', 'PX', tonumber(ARGV[3]) * 10)
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


# A success resets a backend's failure count only when there is one (one round trip, not two).
_BREAKER_OK = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
redis.call('DEL', KEYS[1], KEYS[3])
return 0
"""
# What this replica needs to know about a backend's breaker: open, and anything to reset.
_BREAKER_STATE = """
return {redis.call('EXISTS', KEYS[2]), redis.call('EXISTS', KEYS[1], KEYS[3])}
"""
# How long a replica trusts a breaker it saw closed and clean (no failure counted) without
# asking Redis again: the healthy path then costs no round trip per request. An opening by
# another replica is seen at most this late; an open or dirty breaker is never cached.
BREAKER_CLEAN_TTL_S = 0.5


class RedisState:
    """State shared by every replica through one Redis."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "tg:",
        *,
        max_connections: int = 512,
        timeout_s: float = 2.0,
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            decode_responses=True,
            max_connections=max_connections,
            timeout=timeout_s,  # waiting for a free connection
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # a pooled connection that died with a restarted Redis is retried on a fresh one
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 2),
            retry_on_error=[RedisConnectionError],
        )
        self._redis: Any = aioredis.Redis(connection_pool=pool)
        self._errors: tuple[type[BaseException], ...] = (
            aioredis.RedisError,
            OSError,
            TimeoutError,
        )
        self.prefix = prefix
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._spent = self._redis.register_script(_SPENT)
        self._restore = self._redis.register_script(_RESTORE)
        self._fail = self._redis.register_script(_BREAKER_FAIL)
        self._ok = self._redis.register_script(_BREAKER_OK)
        self._cb_state = self._redis.register_script(_BREAKER_STATE)
        self._rates = RedisRates(self._redis, prefix)
        self._cb_clean: dict[str, float] = {}  # backend -> when it was last seen closed + clean
        self._cb_reads: dict[str, asyncio.Future[Any]] = {}  # breaker reads in flight
        self._cb_failed: dict[str, int] = {}  # failures this replica recorded, per backend
        self._epoch = ""
        # this replica's unsettled holds: scope -> hold -> (nano-USD, monotonic deadline)
        self._live: dict[str, dict[str, tuple[int, float]]] = {}
        self.last_seen: tuple[int, int] | None = None  # (spent, reserved) of the last reserve
        self._watch: asyncio.Task[None] | None = None
        self._cache = RedisCache(self._redis, self._k, self._call)

    @property
    def epoch(self) -> str:
        """The Redis data epoch this replica last saw (changes when Redis restarts empty)."""
        return self._epoch

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except self._errors as exc:
            raise DependencyUnavailable(
                f"shared state (Redis) is unreachable: {type(exc).__name__}; retry shortly"
            ) from exc

    def _budget_keys(self, scope: str) -> list[str]:
        return [self._k("budget", scope, part) for part in ("spent", "holds", "held")]

    async def budget_seeded(self, scope: str) -> bool:
        return bool(await self._call(lambda: self._redis.exists(self._k("budget", scope, "spent"))))

    async def budget_seed(self, scope: str, spent_nano: int, ttl_ms: int | None = None) -> None:
        key = self._k("budget", scope, "spent")
        await self._call(lambda: self._redis.set(key, spent_nano, nx=True, px=ttl_ms))

    async def _restore_holds(self) -> None:
        """Re-register every live hold of this replica (Redis lost them)."""
        now = time.monotonic()
        for scope, holds in self._live.items():
            for hold, (amount, deadline) in list(holds.items()):
                left_ms = int((deadline - now) * 1000)
                if left_ms <= 0:
                    del holds[hold]
                    continue
                keys = self._budget_keys(scope)
                await self._restore(keys=keys, args=[hold, amount, left_ms])

    async def _watch_epoch(self) -> None:
        """While this replica holds anything, notice a Redis restart within a second and put
        its holds back, even if it reserves nothing new (long streams in flight)."""
        while True:
            await asyncio.sleep(EPOCH_CHECK_S)
            if not self._live or not self._epoch:
                continue
            try:
                epoch = await self._redis.get(self._k("epoch"))
                if epoch != self._epoch:
                    if epoch is None:
                        epoch = uuid.uuid4().hex
                        if not await self._redis.set(self._k("epoch"), epoch, nx=True):
                            epoch = await self._redis.get(self._k("epoch"))
                    await self._restore_holds()
                    self._epoch = epoch or ""
                    log.warning("Redis restarted: re-registered this replica's budget holds")
            except self._errors:
                continue  # still down: the next tick tries again

    async def budget_reserve(
        self, scope: str, limit_nano: int, amount_nano: int, hold: str, ttl_ms: int
    ) -> bool:
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_epoch(), name="tollgate-redis-epoch")
        keys = [*self._budget_keys(scope), self._k("epoch")]
        for _ in range(3):
            args = [limit_nano, amount_nano, hold, ttl_ms, self._epoch, uuid.uuid4().hex]
            ok, epoch, spent, reserved = await self._call(
                lambda args=args: self._reserve(keys=keys, args=args)  # type: ignore[misc]
            )
            if int(ok) != -1:
                self._epoch = epoch
                self.last_seen = (int(spent), int(reserved))
                if int(ok) == 1:
                    deadline = time.monotonic() + ttl_ms / 1000
                    self._live.setdefault(scope, {})[hold] = (amount_nano, deadline)
                return int(ok) == 1
            # Redis restarted under us: put back what this replica still holds, then retry
            self._epoch = epoch
            await self._call(self._restore_holds)
        raise DependencyUnavailable("shared state (Redis) keeps restarting; retry shortly")

    async def budget_settle(self, scope: str, hold: str, actual_nano: int) -> None:
        holds = self._live.get(scope)
        if holds is not None:  # finished whether or not Redis hears of it: never restore it
            holds.pop(hold, None)
            if not holds:
                del self._live[scope]
        keys = self._budget_keys(scope)
        await self._call(lambda: self._settle(keys=keys, args=[hold, actual_nano]))

    async def budget_spent(self, scope: str) -> tuple[int, int]:
        spent, reserved = await self._call(lambda: self._spent(keys=self._budget_keys(scope)))
        return int(spent), int(reserved)

    async def rate_admit(
        self, scopes: Sequence[RateScope], hold: str, window_ms: int
    ) -> RateVerdict:
        return await self._call(lambda: self._rates.admit(scopes, hold, window_ms))

    async def rate_settle(self, scope: str, hold: str, amount: int) -> None:
        await self._call(lambda: self._rates.settle(scope, hold, amount))

    def _clean(self, backend: str) -> bool:
        seen = self._cb_clean.get(backend)
        return seen is not None and time.monotonic() - seen < BREAKER_CLEAN_TTL_S

    async def _breaker_state(self, backend: str) -> tuple[bool, bool]:
        """(open, failures counted) of a backend's breaker, read once for every request that
        asks while the read is in flight (no stampede when the cached view expires)."""
        failures_before = self._cb_failed.get(backend, 0)
        pending = self._cb_reads.get(backend)
        if pending is None:
            keys = [self._k("cb", backend, s) for s in ("fails", "open", "half")]
            pending = asyncio.ensure_future(self._call(lambda: self._cb_state(keys=keys)))
            self._cb_reads[backend] = pending

            def forget(done: asyncio.Future[Any]) -> None:
                if self._cb_reads.get(backend) is done:
                    del self._cb_reads[backend]

            pending.add_done_callback(forget)
        opened, dirty = await asyncio.shield(pending)
        # a read that may predate this replica's own latest failure does not make it clean
        if not opened and not dirty and self._cb_failed.get(backend, 0) == failures_before:
            if backend not in self._cb_reads:  # the read is not older than a newer one
                self._cb_clean[backend] = time.monotonic()
        return bool(opened), bool(dirty)

    async def breaker_allows(self, backend: str) -> bool:
        if self._clean(backend):
            return True
        opened, _ = await self._breaker_state(backend)
        return not opened

    async def breaker_record(self, backend: str, ok: bool, cfg: BreakerSettings) -> bool:
        fails, opened, half = (self._k("cb", backend, s) for s in ("fails", "open", "half"))
        if ok:
            if self._clean(backend):
                return False  # nothing counted: nothing to reset
            is_open, dirty = await self._breaker_state(backend)
            if dirty and not is_open:
                if not await self._call(lambda: self._ok(keys=[fails, opened, half])):
                    self._cb_clean[backend] = time.monotonic()
            return False
        self._cb_clean.pop(backend, None)
        self._cb_failed[backend] = self._cb_failed.get(backend, 0) + 1
        args = [cfg.failure_threshold, int(cfg.window_s * 1000), int(cfg.cooldown_s * 1000)]
        return bool(await self._call(lambda: self._fail(keys=[fails, opened, half], args=args)))

    async def load_publish(self, backend: str, field: str, value: str, ttl_ms: int) -> None:
        key = self._k("load", backend)

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, field, value)
                pipe.pexpire(key, ttl_ms)
                await pipe.execute()

        await self._call(write)

    async def load_read(self, backend: str) -> dict[str, str]:
        key = self._k("load", backend)
        return dict(await self._call(lambda: self._redis.hgetall(key)))

    async def cache_get(self, key: str) -> str | None:
        return await self._cache.get(key)

    async def cache_put(self, key: str, value: str, ttl_ms: int) -> None:
        await self._cache.put(key, value, ttl_ms)

    async def cache_vectors(self, scope: str) -> dict[str, str]:
        return await self._cache.vectors(scope)

    async def cache_vector_add(
        self, scope: str, entry: str, vector: str, ttl_ms: int, keep: int
    ) -> None:
        await self._cache.vector_add(scope, entry, vector, ttl_ms, keep)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._redis.aclose()
