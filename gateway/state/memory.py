"""Single-replica shared state kept in this process: the embedded default, and the local
ledger a failover state falls back to while Redis is unreachable.

The response cache here is a bounded LRU with a TTL per entry: at most ``CACHE_MAX_BYTES`` of
answers in all (the least recently used go first), and per scope the newest ``keep`` vectors."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence

from gateway.state.base import BreakerSettings, RateScope, RateVerdict


class _Window:
    """One rate scope's sliding-window log: entries in admission order, amounts by hold."""

    def __init__(self) -> None:
        self.log: deque[tuple[float, str]] = deque()  # (time ms, hold)
        self.amounts: dict[str, int] = {}
        self.total = 0

    def purge(self, now: float, window_ms: int) -> None:
        while self.log and self.log[0][0] <= now - window_ms:
            _, hold = self.log.popleft()
            self.total -= self.amounts.pop(hold, 0)

    def reset_ms(self, now: float, window_ms: int) -> int:
        return int(self.log[0][0] + window_ms - now) if self.log else 0

    def retry_ms(self, now: float, window_ms: int, limit: int, amount: int) -> int | None:
        """When enough of the window has slid out for ``amount`` to fit (None: never)."""
        if amount > limit:
            return None
        excess, freed = self.total + amount - limit, 0
        for t, hold in self.log:
            freed += self.amounts.get(hold, 0)
            if freed >= excess:
                return max(1, int(t + window_ms - now))
        return window_ms


CACHE_MAX_BYTES = 64 * 1024 * 1024  # answers kept by one replica's in-process cache
CACHE_MAX_SCOPES = 10_000  # semantic scopes (tenant x request shape) kept


class InProcessState:
    """Single-replica state kept in this process (the embedded default)."""

    kind = "in-process"

    def __init__(self) -> None:
        self._load: dict[str, dict[str, str]] = {}
        self._config_digest: str | None = None
        self._latency: dict[str, deque[tuple[float, float]]] = {}  # backend -> (time, ms)
        self._spent: dict[str, int] = {}
        self._holds: dict[
            str, dict[str, tuple[int, float]]
        ] = {}  # scope -> hold -> (nano, deadline)
        self._fails: dict[str, list[float]] = {}
        self._open_until: dict[str, float] = {}
        self._half_open: set[str] = set()
        self._probe_until: dict[str, float] = {}  # half-open backend -> its probe's lease end
        self._lock = asyncio.Lock()
        self._windows: dict[str, _Window] = {}
        self._answers: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> value, deadline
        self._answer_bytes = 0
        # scope -> entry -> (vector, deadline), oldest first
        self._vectors: OrderedDict[str, OrderedDict[str, tuple[str, float]]] = OrderedDict()

    async def budget_seeded(self, scope: str) -> bool:
        return scope in self._spent

    async def budget_seed(self, scope: str, spent_nano: int, ttl_ms: int | None = None) -> None:
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

    def _rate_admit(
        self, scopes: Sequence[RateScope], hold: str, window_ms: int, now: float
    ) -> RateVerdict:
        """All scopes or none (no await inside: atomic for this event loop)."""
        windows = [self._windows.setdefault(s.name, _Window()) for s in scopes]
        for w in windows:
            w.purge(now, window_ms)
        for i, (scope, w) in enumerate(zip(scopes, windows, strict=True)):
            if w.total + scope.amount > scope.limit:
                return RateVerdict(
                    False,
                    tuple(w.total for w in windows),
                    tuple(w.reset_ms(now, window_ms) for w in windows),
                    refused=i,
                    retry_after_ms=w.retry_ms(now, window_ms, scope.limit, scope.amount),
                )
        for scope, w in zip(scopes, windows, strict=True):
            if hold not in w.amounts:
                w.log.append((now, hold))
            w.amounts[hold] = w.amounts.get(hold, 0) + scope.amount
            w.total += scope.amount
        return RateVerdict(
            True,
            tuple(w.total for w in windows),
            tuple(w.reset_ms(now, window_ms) for w in windows),
        )

    async def rate_admit(
        self, scopes: Sequence[RateScope], hold: str, window_ms: int
    ) -> RateVerdict:
        return self._rate_admit(scopes, hold, window_ms, time.monotonic() * 1000)

    async def rate_settle(self, scope: str, hold: str, amount: int) -> None:
        w = self._windows.get(scope)
        if w is None or hold not in w.amounts:
            return  # already out of the window: nothing left to correct
        w.total += amount - w.amounts[hold]
        w.amounts[hold] = amount

    async def breaker_allows(self, backend: str, probe_lease_ms: int = 0) -> bool:
        now = time.monotonic()
        until = self._open_until.get(backend)
        if until is not None:
            if now < until:
                return False
            del self._open_until[backend]
            self._half_open.add(backend)
        if backend not in self._half_open:
            return True
        if self._probe_until.get(backend, 0.0) > now:
            return False  # the probe is in flight: the others wait for its verdict
        if probe_lease_ms > 0:
            self._probe_until[backend] = now + probe_lease_ms / 1000
        return True

    async def breaker_release(self, backend: str) -> None:
        self._probe_until.pop(backend, None)

    async def breaker_record(self, backend: str, ok: bool, cfg: BreakerSettings) -> bool:
        now = time.monotonic()
        if ok:
            self._fails.pop(backend, None)
            self._half_open.discard(backend)
            self._probe_until.pop(backend, None)
            return False
        if backend in self._open_until:
            return False  # already open: this failure opened nothing
        fails = [t for t in self._fails.get(backend, []) if now - t < cfg.window_s]
        fails.append(now)
        self._fails[backend] = fails
        if len(fails) >= cfg.failure_threshold or backend in self._half_open:
            self._open_until[backend] = now + cfg.cooldown_s
            self._half_open.discard(backend)
            self._probe_until.pop(backend, None)
            self._fails.pop(backend, None)
            return True
        return False

    async def latency_push(
        self, samples: Mapping[str, Sequence[float]], keep: int, max_age_ms: int
    ) -> None:
        now = time.monotonic()
        for backend, values in samples.items():
            kept = self._latency.get(backend)
            if kept is None or kept.maxlen != keep:
                kept = self._latency[backend] = deque(kept or (), maxlen=keep)
            kept.extend((now, v) for v in values)

    async def latency_read(
        self, backends: Sequence[str], max_age_ms: int
    ) -> dict[str, list[float]]:
        oldest = time.monotonic() - max_age_ms / 1000
        return {b: [v for t, v in self._latency.get(b, ()) if t >= oldest] for b in backends}

    async def load_publish(self, backend: str, field: str, value: str, ttl_ms: int) -> None:
        self._load.setdefault(backend, {})[field] = value

    async def load_read(self, backend: str) -> dict[str, str]:
        return dict(self._load.get(backend, {}))

    async def cache_get(self, key: str) -> str | None:
        item = self._answers.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            self._drop_answer(key)
            return None
        self._answers.move_to_end(key)
        return item[0]

    def _drop_answer(self, key: str) -> None:
        value, _ = self._answers.pop(key)
        self._answer_bytes -= len(value)

    async def cache_put(self, key: str, value: str, ttl_ms: int) -> None:
        if key in self._answers:
            self._drop_answer(key)
        self._answers[key] = (value, time.monotonic() + ttl_ms / 1000)
        self._answer_bytes += len(value)
        while self._answer_bytes > CACHE_MAX_BYTES and self._answers:
            self._drop_answer(next(iter(self._answers)))

    async def cache_vectors(self, scope: str) -> dict[str, str]:
        entries = self._vectors.get(scope)
        if entries is None:
            return {}
        now = time.monotonic()
        for entry in [e for e, (_, deadline) in entries.items() if deadline <= now]:
            del entries[entry]
        return {entry: vector for entry, (vector, _) in entries.items()}

    async def cache_vector_add(
        self, scope: str, entry: str, vector: str, ttl_ms: int, keep: int
    ) -> None:
        entries = self._vectors.setdefault(scope, OrderedDict())
        self._vectors.move_to_end(scope)
        entries.pop(entry, None)
        entries[entry] = (vector, time.monotonic() + ttl_ms / 1000)
        while len(entries) > keep:
            entries.popitem(last=False)
        while len(self._vectors) > CACHE_MAX_SCOPES:
            self._vectors.popitem(last=False)

    async def config_publish(self, digest: str) -> None:
        self._config_digest = digest

    async def config_published(self) -> str | None:
        return self._config_digest

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
