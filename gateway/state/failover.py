"""Fail-open shared state: Redis while it answers, local limits while it does not.

Chosen with ``redis.on_failure: open``. While Redis is unreachable each replica keeps serving
budgeted keys from an in-process ledger whose headroom is a share (``local_share``, e.g. 1/N
for N replicas) of what Redis last reported as left for that scope; a scope this replica never
saw is refused (it knows nothing of its spend). Settlements made meanwhile are queued and
replayed into Redis when it answers again, so its counters converge on the real spend — unless
Redis lost its data meanwhile (a new epoch): then its counters are re-seeded from the SQL store,
which holds those attempts already, and replaying them would count them twice.
Rate limits fall back to windows of this replica's own, at ``local_share`` of each limit (at
least 1): a replica keeps admitting while Redis is down, within its share; what it admitted
meanwhile is not replayed (a window is a minute long, it is over by the time Redis is back).
Circuit breakers fall back to this replica's own; the response cache misses (nothing is cached
meanwhile). With ``on_failure: closed`` (the default)
``RedisState`` alone is used and a Redis outage is a 503 for budgeted requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from gateway.errors import DependencyUnavailable
from gateway.state.base import BreakerSettings, RateScope, RateVerdict
from gateway.state.memory import InProcessState
from gateway.state.redis import RedisState

log = logging.getLogger("tollgate.state")


class FailoverState:
    kind = "redis+local"

    def __init__(self, redis: RedisState, *, local_share: float = 1.0) -> None:
        self.redis = redis
        self.local = InProcessState()
        self.local_share = local_share
        self._limits: dict[str, tuple[int, int]] = {}  # scope -> (limit, spent+held at last sight)
        self._local_holds: set[str] = set()
        self._local_rates: set[tuple[str, str]] = set()  # (scope, hold) admitted locally
        self._pending: list[tuple[str, str, int]] = []  # settles to replay: scope, hold, actual
        self._down_since: float | None = None
        self._epoch_at_down = ""

    def _went_down(self, exc: DependencyUnavailable) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._epoch_at_down = self.redis.epoch
            log.error("Redis unreachable (%s): serving on local limits", exc.message)

    async def _came_back(self) -> None:
        if self._down_since is None:
            return
        pending, self._pending = self._pending, []
        if self.redis.epoch != self._epoch_at_down:
            pending = []  # Redis restarted empty: re-seeded from the store, which has these
        for i, (scope, hold, actual) in enumerate(pending):
            try:
                await self.redis.budget_settle(scope, hold, actual)
            except DependencyUnavailable:
                self._pending = pending[i:] + self._pending
                return
        log.warning(
            "Redis is back after %.1f s: %d settlements replayed",
            time.monotonic() - self._down_since,
            len(pending),
        )
        self._down_since = None
        self.local = InProcessState()
        self._local_holds.clear()

    async def budget_seeded(self, scope: str) -> bool:
        try:
            return await self.redis.budget_seeded(scope)
        except DependencyUnavailable as exc:
            self._went_down(exc)
            return True  # nothing to seed locally: the local ledger starts from last sight

    async def budget_seed(self, scope: str, spent_nano: int, ttl_ms: int | None = None) -> None:
        await self.redis.budget_seed(scope, spent_nano, ttl_ms)

    async def budget_reserve(
        self, scope: str, limit_nano: int, amount_nano: int, hold: str, ttl_ms: int
    ) -> bool:
        try:
            ok = await self.redis.budget_reserve(scope, limit_nano, amount_nano, hold, ttl_ms)
            if self.redis.last_seen is not None:
                self._limits[scope] = (limit_nano, sum(self.redis.last_seen))
            await self._came_back()
            return ok
        except DependencyUnavailable as exc:
            self._went_down(exc)
            seen = self._limits.get(scope)
            if seen is None:
                raise
            limit, used = seen
            headroom = int(max(0, min(limit, limit_nano) - used) * self.local_share)
            ok = await self.local.budget_reserve(scope, headroom, amount_nano, hold, ttl_ms)
            if ok:
                self._local_holds.add(hold)
            return ok

    async def budget_settle(self, scope: str, hold: str, actual_nano: int) -> None:
        if hold in self._local_holds:
            self._local_holds.discard(hold)
            await self.local.budget_settle(scope, hold, actual_nano)
            self._pending.append((scope, hold, actual_nano))
            return
        try:
            await self.redis.budget_settle(scope, hold, actual_nano)
        except DependencyUnavailable as exc:
            self._went_down(exc)
            self._pending.append((scope, hold, actual_nano))

    async def budget_spent(self, scope: str) -> tuple[int, int]:
        try:
            return await self.redis.budget_spent(scope)
        except DependencyUnavailable as exc:
            self._went_down(exc)
            spent, held = await self.local.budget_spent(scope)
            _, used = self._limits.get(scope, (0, 0))
            return used + spent, held

    async def rate_admit(
        self, scopes: Sequence[RateScope], hold: str, window_ms: int
    ) -> RateVerdict:
        try:
            return await self.redis.rate_admit(scopes, hold, window_ms)
        except DependencyUnavailable as exc:
            self._went_down(exc)
            share = [
                RateScope(s.name, max(1, int(s.limit * self.local_share)), s.amount) for s in scopes
            ]
            verdict = await self.local.rate_admit(share, hold, window_ms)
            if verdict.admitted:
                self._local_rates.update((s.name, hold) for s in scopes)
            return verdict

    async def rate_settle(self, scope: str, hold: str, amount: int) -> None:
        if (scope, hold) in self._local_rates:
            self._local_rates.discard((scope, hold))
            await self.local.rate_settle(scope, hold, amount)
            return
        try:
            await self.redis.rate_settle(scope, hold, amount)
        except DependencyUnavailable as exc:
            self._went_down(exc)  # the entry leaves the window by itself, unsettled

    async def breaker_allows(self, backend: str, probe_lease_ms: int = 0) -> bool:
        try:
            return await self.redis.breaker_allows(backend, probe_lease_ms)
        except DependencyUnavailable:
            return await self.local.breaker_allows(backend, probe_lease_ms)

    async def breaker_release(self, backend: str) -> None:
        try:
            await self.redis.breaker_release(backend)
        except DependencyUnavailable:
            await self.local.breaker_release(backend)

    async def breaker_record(self, backend: str, ok: bool, cfg: BreakerSettings) -> bool:
        try:
            return await self.redis.breaker_record(backend, ok, cfg)
        except DependencyUnavailable:
            return await self.local.breaker_record(backend, ok, cfg)

    async def latency_push(
        self, samples: Mapping[str, Sequence[float]], keep: int, max_age_ms: int
    ) -> None:
        await self.redis.latency_push(samples, keep, max_age_ms)  # the caller keeps its own

    async def latency_read(
        self, backends: Sequence[str], max_age_ms: int
    ) -> dict[str, list[float]]:
        return await self.redis.latency_read(backends, max_age_ms)

    async def load_publish(self, backend: str, field: str, value: str, ttl_ms: int) -> None:
        try:
            await self.redis.load_publish(backend, field, value, ttl_ms)
        except DependencyUnavailable:
            await self.local.load_publish(backend, field, value, ttl_ms)

    async def load_read(self, backend: str) -> dict[str, str]:
        try:
            return await self.redis.load_read(backend)
        except DependencyUnavailable:
            return await self.local.load_read(backend)

    async def cache_get(self, key: str) -> str | None:
        try:
            return await self.redis.cache_get(key)
        except DependencyUnavailable:
            return None

    async def cache_put(self, key: str, value: str, ttl_ms: int) -> None:
        try:
            await self.redis.cache_put(key, value, ttl_ms)
        except DependencyUnavailable:
            return None

    async def cache_vectors(self, scope: str) -> dict[str, str]:
        try:
            return await self.redis.cache_vectors(scope)
        except DependencyUnavailable:
            return {}

    async def cache_vector_add(
        self, scope: str, entry: str, vector: str, ttl_ms: int, keep: int
    ) -> None:
        try:
            await self.redis.cache_vector_add(scope, entry, vector, ttl_ms, keep)
        except DependencyUnavailable:
            return None

    async def config_publish(self, digest: str) -> None:
        await self.redis.config_publish(digest)  # the reloader copes with an outage

    async def config_published(self) -> str | None:
        return await self.redis.config_published()

    async def ping(self) -> bool:
        return await self.redis.ping()

    async def close(self) -> None:
        await self.redis.close()
