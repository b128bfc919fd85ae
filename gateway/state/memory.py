"""Single-replica shared state kept in this process: the embedded default, and the local
ledger a failover state falls back to while Redis is unreachable."""

from __future__ import annotations

import asyncio
import time

from gateway.state.base import BreakerSettings


class InProcessState:
    """Single-replica state kept in this process (the embedded default)."""

    kind = "in-process"

    def __init__(self) -> None:
        self._load: dict[str, dict[str, str]] = {}
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

    async def load_publish(self, backend: str, field: str, value: str, ttl_ms: int) -> None:
        self._load.setdefault(backend, {})[field] = value

    async def load_read(self, backend: str) -> dict[str, str]:
        return dict(self._load.get(backend, {}))

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
