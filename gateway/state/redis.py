"""Shared state in Redis: every Redis key and Lua script of the gateway's budgets, rate limits
and circuit breakers lives here (the rate windows' in ``gateway.state.redis_rates``, the response
cache's in ``gateway.state.redis_cache``, the breakers' in ``gateway.state.redis_breaker``, the
shared latency samples' in ``gateway.state.redis_latency``).

Holds of a budget scope are a sorted set (hold id -> deadline in Redis server time) and a hash
(hold id -> nano-USD); scripts purge expired holds atomically before they count. A Redis that
restarted (or lost its data) is noticed through an *epoch* token: each replica remembers the
epoch it last saw, a reservation under another epoch is refused by the script, and the replica
first re-registers its own live holds, so requests in flight across a Redis restart still count
against the budget. Redis errors become ``DependencyUnavailable`` (a 503 with retry-after).
Circuit breakers have their keys and scripts in ``redis_breaker``.
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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from gateway.errors import DependencyUnavailable
from gateway.state.base import BreakerSettings, RateScope, RateVerdict
from gateway.state.redis_breaker import RedisBreakers
from gateway.state.redis_cache import RedisCache
from gateway.state.redis_latency import RedisLatency
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
        self._rates = RedisRates(self._redis, prefix)
        self._epoch = ""
        # this replica's unsettled holds: scope -> hold -> (nano-USD, monotonic deadline)
        self._live: dict[str, dict[str, tuple[int, float]]] = {}
        self.last_seen: tuple[int, int] | None = None  # (spent, reserved) of the last reserve
        self._watch: asyncio.Task[None] | None = None
        self._closing = False  # set by close: the epoch watch stops even if its cancel is lost
        self._cache = RedisCache(self._redis, self._k, self._call)
        self._breakers = RedisBreakers(self._redis, self._k, self._call)
        self._latency = RedisLatency(self._redis, self._k, self._call)

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
        while not self._closing:
            await asyncio.sleep(EPOCH_CHECK_S)
            if self._closing:
                return
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
                # still down: the next tick tries again (a close's cancel that the client
                # turned into a timeout ends the loop through _closing, not here)
                continue

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

    async def breaker_allows(self, backend: str, probe_lease_ms: int = 0) -> bool:
        return await self._breakers.allows(backend, probe_lease_ms)

    async def breaker_release(self, backend: str) -> None:
        await self._breakers.release(backend)

    async def breaker_record(self, backend: str, ok: bool, cfg: BreakerSettings) -> bool:
        return await self._breakers.record(backend, ok, cfg)

    async def latency_push(
        self, samples: Mapping[str, Sequence[float]], keep: int, max_age_ms: int
    ) -> None:
        await self._latency.push(samples, keep, max_age_ms)

    async def latency_read(
        self, backends: Sequence[str], max_age_ms: int
    ) -> dict[str, list[float]]:
        return await self._latency.read(backends, max_age_ms)

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

    async def config_publish(self, digest: str) -> None:
        key = self._k("config", "digest")
        await self._call(lambda: self._redis.set(key, digest))

    async def config_published(self) -> str | None:
        key = self._k("config", "digest")
        return await self._call(lambda: self._redis.get(key))

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._redis.aclose()
