"""Shared gateway state: budget ledgers and circuit breakers, in Redis or in-process.

Several gateway replicas share one Redis; without a Redis URL the same semantics run in
process (one replica). Budgets are integer nano-USD so every update is exact and atomic:
a request *reserves* its worst-case cost before calling a backend (refused if spent +
reserved + this reservation would pass the limit) and *settles* to the real cost afterwards,
so concurrent requests and replicas cannot overspend a budget between them.

Each reservation is a *hold* with its own id and expiry: a replica that dies mid-request
leaves holds that lapse at their own deadline, whatever traffic follows on the scope (a
scope-wide TTL would be renewed by every new request and keep a dead replica's holds alive).
Expired holds are purged by the next reservation or read of the scope, in the same atomic step.

Circuit breaker: ``failure_threshold`` failures within ``window_s`` open a backend's circuit
for ``cooldown_s``; after the cool-down the circuit is half-open and the next failure opens it
again at once, while a success closes it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any, Protocol

NANO = Decimal("1e-9")
RESERVATION_TTL_MS = 15 * 60 * 1000  # default hold lifetime; callers pass their own


def to_nano(usd: Decimal, *, round_up: bool = False) -> int:
    q = (usd / NANO).quantize(Decimal(1), rounding=ROUND_CEILING if round_up else None)
    return int(q)


def from_nano(nano: int) -> Decimal:
    return (Decimal(nano) * NANO).normalize()


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5
    window_s: float = 30.0
    cooldown_s: float = 30.0


class SharedState(Protocol):
    kind: str

    async def budget_seeded(self, scope: str) -> bool: ...
    async def budget_seed(self, scope: str, spent_nano: int) -> None: ...
    async def budget_reserve(
        self, scope: str, limit_nano: int, amount_nano: int, hold: str, ttl_ms: int
    ) -> bool: ...
    async def budget_settle(self, scope: str, hold: str, actual_nano: int) -> None: ...
    async def budget_spent(self, scope: str) -> tuple[int, int]: ...
    async def breaker_allows(self, backend: str) -> bool: ...
    async def breaker_record(self, backend: str, ok: bool, cfg: BreakerSettings) -> bool: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class InProcessState:
    """Single-replica state kept in this process (the embedded default)."""

    kind = "in-process"

    def __init__(self) -> None:
        self._spent: dict[str, int] = {}
        self._holds: dict[
            str, dict[str, tuple[int, float]]
        ] = {}  # scope -> hold -> (nano, deadline)
        self._fails: dict[str, list[float]] = {}
        self._open_until: dict[str, float] = {}
        self._half_open: set[str] = set()
        self._lock = asyncio.Lock()

    async def budget_seeded(self, scope: str) -> bool:
        return scope in self._spent

    async def budget_seed(self, scope: str, spent_nano: int) -> None:
        self._spent.setdefault(scope, spent_nano)

    def _reserved(self, scope: str) -> int:
        """Live holds of a scope (expired ones dropped)."""
        now = time.monotonic()
        holds = self._holds.get(scope, {})
        for hold in [h for h, (_, deadline) in holds.items() if deadline <= now]:
            del holds[hold]
        return sum(amount for amount, _ in holds.values())

    async def budget_reserve(
        self, scope: str, limit_nano: int, amount_nano: int, hold: str, ttl_ms: int
    ) -> bool:
        async with self._lock:
            if self._spent.get(scope, 0) + self._reserved(scope) + amount_nano > limit_nano:
                return False
            deadline = time.monotonic() + ttl_ms / 1000
            self._holds.setdefault(scope, {})[hold] = (amount_nano, deadline)
            return True

    async def budget_settle(self, scope: str, hold: str, actual_nano: int) -> None:
        async with self._lock:
            self._holds.get(scope, {}).pop(hold, None)
            self._spent[scope] = self._spent.get(scope, 0) + actual_nano

    async def budget_spent(self, scope: str) -> tuple[int, int]:
        async with self._lock:
            return self._spent.get(scope, 0), self._reserved(scope)

    async def breaker_allows(self, backend: str) -> bool:
        until = self._open_until.get(backend)
        if until is None:
            return True
        if time.monotonic() >= until:
            del self._open_until[backend]
            self._half_open.add(backend)
            return True
        return False

    async def breaker_record(self, backend: str, ok: bool, cfg: BreakerSettings) -> bool:
        now = time.monotonic()
        if ok:
            self._fails.pop(backend, None)
            self._half_open.discard(backend)
            return False
        if backend in self._open_until:
            return False  # already open: this failure opened nothing
        fails = [t for t in self._fails.get(backend, []) if now - t < cfg.window_s]
        fails.append(now)
        self._fails[backend] = fails
        if len(fails) >= cfg.failure_threshold or backend in self._half_open:
            self._open_until[backend] = now + cfg.cooldown_s
            self._half_open.discard(backend)
            self._fails.pop(backend, None)
            return True
        return False

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# Holds of a scope: a sorted set (hold id -> deadline, Redis server time in ms) and a hash
# (hold id -> nano-USD). _PURGE drops expired holds and returns the live total; it opens the
# reserve and read scripts, so a dead replica's holds lapse at their deadline.
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

# KEYS: spent, hold deadlines, hold amounts. ARGV: limit, amount, hold id, ttl_ms
_RESERVE = (
    _PURGE
    + """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent + reserved + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return 0 end
local ttl = tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
local keep = redis.call('PTTL', KEYS[2])
if keep < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return 1
"""
)

_SPENT = (
    _PURGE
    + """
return {tonumber(redis.call('GET', KEYS[1]) or '0'), reserved}
"""
)

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


class RedisState:
    """State shared by every replica through one Redis."""

    kind = "redis"

    def __init__(self, url: str, prefix: str = "tg:") -> None:
        import redis.asyncio as aioredis

        self._redis: Any = aioredis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self.prefix = prefix
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._spent = self._redis.register_script(_SPENT)
        self._fail = self._redis.register_script(_BREAKER_FAIL)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def budget_seeded(self, scope: str) -> bool:
        return bool(await self._redis.exists(self._k("budget", scope, "spent")))

    async def budget_seed(self, scope: str, spent_nano: int) -> None:
        await self._redis.set(self._k("budget", scope, "spent"), spent_nano, nx=True)

    def _budget_keys(self, scope: str) -> list[str]:
        return [self._k("budget", scope, part) for part in ("spent", "holds", "held")]

    async def budget_reserve(
        self, scope: str, limit_nano: int, amount_nano: int, hold: str, ttl_ms: int
    ) -> bool:
        args = [limit_nano, amount_nano, hold, ttl_ms]
        return bool(await self._reserve(keys=self._budget_keys(scope), args=args))

    async def budget_settle(self, scope: str, hold: str, actual_nano: int) -> None:
        await self._settle(keys=self._budget_keys(scope), args=[hold, actual_nano])

    async def budget_spent(self, scope: str) -> tuple[int, int]:
        spent, reserved = await self._spent(keys=self._budget_keys(scope))
        return int(spent), int(reserved)

    async def breaker_allows(self, backend: str) -> bool:
        return not await self._redis.exists(self._k("cb", backend, "open"))

    async def breaker_record(self, backend: str, ok: bool, cfg: BreakerSettings) -> bool:
        fails, opened, half = (self._k("cb", backend, s) for s in ("fails", "open", "half"))
        if ok:
            if not await self._redis.exists(opened):
                await self._redis.delete(fails, half)
            return False
        args = [cfg.failure_threshold, int(cfg.window_s * 1000), int(cfg.cooldown_s * 1000)]
        return bool(await self._fail(keys=[fails, opened, half], args=args))

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def make_state(redis_url: str | None, prefix: str = "tg:") -> SharedState:
    return RedisState(redis_url, prefix) if redis_url else InProcessState()
