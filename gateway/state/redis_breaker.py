"""Circuit breakers in Redis (``RedisState`` delegates its ``breaker_*`` ops here): the keys
and scripts of each backend's breaker, shared by every replica.

Keys, under the state's prefix: ``cb:<backend>:fails`` (failures counted in the window),
``cb:<backend>:open`` (set for the cool-down), ``cb:<backend>:half`` (half-open once the
cool-down ends: the next failure opens it again at once) and ``cb:<backend>:probe`` (the lease of
the one caller, across every replica, let through to probe a half-open backend; ``SET NX PX``).
A breaker seen closed with no failure counted is trusted for ``BREAKER_CLEAN_TTL_S`` (0.5 s)
by the replica that saw it, so a healthy backend costs no Redis round trip per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gateway.state.base import BreakerSettings
from gateway.state.redis_part import Call, RedisPart

# KEYS: fails, open, half_open, probe. ARGV: threshold, window_ms, cooldown_ms
_BREAKER_FAIL = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n >= tonumber(ARGV[1]) or redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('SET', KEYS[3], '1', 'PX', tonumber(ARGV[3]) * 10)
  redis.call('DEL', KEYS[1], KEYS[4])
  return 1
end
return 0
"""


# A success resets a backend's failure count only when there is one (one round trip, not two).
_BREAKER_OK = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
return 0
"""
# What this replica needs to know about a backend's breaker: open, anything to reset, and
# whether a half-open breaker's probe is in flight, half-open (KEYS: fails, open, half, probe).
_BREAKER_STATE = """
return {redis.call('EXISTS', KEYS[2]), redis.call('EXISTS', KEYS[1], KEYS[3]),
        redis.call('EXISTS', KEYS[4]), redis.call('EXISTS', KEYS[3])}
"""
# Claims the right to call a backend: closed -> 1; open -> 0; half-open -> 2 for the one caller
# (across every replica) that takes the probe lease, 0 for the others until the probe settles
# it (success closes, failure re-opens) or the lease lapses. ARGV: lease_ms
_BREAKER_CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then return 1 end
if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[1]) then return 2 end
return 0
"""
# How long a replica trusts a breaker it saw closed and clean (no failure counted) without
# asking Redis again: the healthy path then costs no round trip per request. An opening by
# another replica is seen at most this late; an open or dirty breaker is never cached.
BREAKER_CLEAN_TTL_S = 0.5


class RedisBreakers(RedisPart):
    """Every backend's breaker, for one replica (with its own view of clean breakers)."""

    def __init__(self, redis: Any, key: Callable[..., str], call: Call) -> None:
        super().__init__(redis, key, call)
        self._fail = redis.register_script(_BREAKER_FAIL)
        self._ok = redis.register_script(_BREAKER_OK)
        self._state_script = redis.register_script(_BREAKER_STATE)
        self._claim = redis.register_script(_BREAKER_CLAIM)
        self._cb_clean: dict[str, float] = {}  # backend -> when it was last seen closed + clean
        self._cb_reads: dict[str, asyncio.Future[Any]] = {}  # breaker reads in flight
        self._cb_failed: dict[str, int] = {}  # failures this replica recorded, per backend

    def _clean(self, backend: str) -> bool:
        seen = self._cb_clean.get(backend)
        return seen is not None and time.monotonic() - seen < BREAKER_CLEAN_TTL_S

    def _cb_keys(self, backend: str) -> list[str]:
        return [self._k("cb", backend, s) for s in ("fails", "open", "half", "probe")]

    async def _breaker_state(self, backend: str) -> tuple[bool, bool, bool, bool]:
        """(open, failures counted, probe in flight, half-open) of a backend's breaker, read
        once for every request that asks while the read is in flight (no stampede when the
        cached view expires)."""
        failures_before = self._cb_failed.get(backend, 0)
        pending = self._cb_reads.get(backend)
        if pending is None:
            keys = self._cb_keys(backend)
            pending = asyncio.ensure_future(self._call(lambda: self._state_script(keys=keys)))
            self._cb_reads[backend] = pending

            def forget(done: asyncio.Future[Any]) -> None:
                if self._cb_reads.get(backend) is done:
                    del self._cb_reads[backend]

            pending.add_done_callback(forget)
        opened, dirty, probing, half = await asyncio.shield(pending)
        # a read that may predate this replica's own latest failure does not make it clean
        if not opened and not dirty and self._cb_failed.get(backend, 0) == failures_before:
            if backend not in self._cb_reads:  # the read is not older than a newer one
                self._cb_clean[backend] = time.monotonic()
        return bool(opened), bool(dirty), bool(probing), bool(half)

    async def allows(self, backend: str, probe_lease_ms: int = 0) -> bool:
        if self._clean(backend):
            return True
        opened, _, probing, half = await self._breaker_state(backend)
        if opened or probing:
            return False
        if half and probe_lease_ms > 0:  # about to call it: one caller of all takes the probe
            keys, args = self._cb_keys(backend), [probe_lease_ms]
            return bool(await self._call(lambda: self._claim(keys=keys, args=args)))
        return True

    async def release(self, backend: str) -> None:
        """The probe ended without a verdict on the backend (the client's own mistake, a
        cancelled call): give its lease back so the next caller probes at once."""
        probe = self._k("cb", backend, "probe")
        await self._call(lambda: self._redis.delete(probe))

    async def record(self, backend: str, ok: bool, cfg: BreakerSettings) -> bool:
        keys = self._cb_keys(backend)
        if ok:
            if self._clean(backend):
                return False  # nothing counted: nothing to reset
            is_open, dirty, _, _ = await self._breaker_state(backend)
            if dirty and not is_open:
                if not await self._call(lambda: self._ok(keys=keys)):
                    self._cb_clean[backend] = time.monotonic()
            return False
        self._cb_clean.pop(backend, None)
        self._cb_failed[backend] = self._cb_failed.get(backend, 0) + 1
        args = [cfg.failure_threshold, int(cfg.window_s * 1000), int(cfg.cooldown_s * 1000)]
        return bool(await self._call(lambda: self._fail(keys=keys, args=args)))
