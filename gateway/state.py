"""Shared gateway state: budget ledgers and circuit breakers, in Redis or in-process.

Several gateway replicas share one Redis; without a Redis URL the same semantics run in
process (one replica). Budgets are integer nano-USD so every update is exact and atomic:
a request *reserves* its worst-case cost before calling a backend (refused if spent +
reserved + this reservation would pass the limit) and *settles* to the real cost afterwards,
so concurrent requests and replicas cannot overspend a budget between them.

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
RESERVATION_TTL_MS = 15 * 60 * 1000


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
    async def budget_reserve(self, scope: str, limit_nano: int, amount_nano: int) -> bool: ...
    async def budget_settle(self, scope: str, reserved_nano: int, actual_nano: int) -> None: ...
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
        self._reserved: dict[str, int] = {}
        self._fails: dict[str, list[float]] = {}
        self._open_until: dict[str, float] = {}
        self._half_open: set[str] = set()
        self._lock = asyncio.Lock()

    async def budget_seeded(self, scope: str) -> bool:
        return scope in self._spent

    async def budget_seed(self, scope: str, spent_nano: int) -> None:
        self._spent.setdefault(scope, spent_nano)

    async def budget_reserve(self, scope: str, limit_nano: int, amount_nano: int) -> bool:
        async with self._lock:
            spent = self._spent.get(scope, 0)
            reserved = self._reserved.get(scope, 0)
            if spent + reserved + amount_nano > limit_nano:
                return False
            self._reserved[scope] = reserved + amount_nano
            return True

    async def budget_settle(self, scope: str, reserved_nano: int, actual_nano: int) -> None:
        async with self._lock:
            self._reserved[scope] = max(0, self._reserved.get(scope, 0) - reserved_nano)
            self._spent[scope] = self._spent.get(scope, 0) + actual_nano

    async def budget_spent(self, scope: str) -> tuple[int, int]:
        return self._spent.get(scope, 0), self._reserved.get(scope, 0)

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


_RESERVE = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local reserved = tonumber(redis.call('GET', KEYS[2]) or '0')
if spent + reserved + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return 0 end
redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# Settling never creates the spent key: if Redis lost it (restart, eviction), the next
# reservation re-seeds it from the SQL store, which already holds this attempt's row.
_SETTLE = """
local left = redis.call('DECRBY', KEYS[2], ARGV[1])
if left < 0 then redis.call('SET', KEYS[2], 0) end
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
        self._fail = self._redis.register_script(_BREAKER_FAIL)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def budget_seeded(self, scope: str) -> bool:
        return bool(await self._redis.exists(self._k("budget", scope, "spent")))

    async def budget_seed(self, scope: str, spent_nano: int) -> None:
        await self._redis.set(self._k("budget", scope, "spent"), spent_nano, nx=True)

    async def budget_reserve(self, scope: str, limit_nano: int, amount_nano: int) -> bool:
        keys = [self._k("budget", scope, "spent"), self._k("budget", scope, "reserved")]
        return bool(
            await self._reserve(keys=keys, args=[limit_nano, amount_nano, RESERVATION_TTL_MS])
        )

    async def budget_settle(self, scope: str, reserved_nano: int, actual_nano: int) -> None:
        keys = [self._k("budget", scope, "spent"), self._k("budget", scope, "reserved")]
        await self._settle(keys=keys, args=[reserved_nano, actual_nano])

    async def budget_spent(self, scope: str) -> tuple[int, int]:
        spent, reserved = await self._redis.mget(
            self._k("budget", scope, "spent"), self._k("budget", scope, "reserved")
        )
        return int(spent or 0), int(reserved or 0)

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
