"""The shared-state contract every backend of it honours (Redis, in-process, failover), and
the exact money units it counts in.

Budgets are integer nano-USD so every update is exact and atomic: a request *reserves* its
worst-case cost before calling a backend (refused if spent + reserved + this reservation would
pass the limit) and *settles* to the real cost afterwards, so concurrent requests and replicas
cannot overspend a budget between them.

Each reservation is a *hold* with its own id and expiry: a replica that dies mid-request
leaves holds that lapse at their own deadline, whatever traffic follows on the scope (a
scope-wide TTL would be renewed by every new request and keep a dead replica's holds alive).

Rate limits are exact sliding windows: each admission is an entry (hold id, time, amount) in a
scope's log, and a request is admitted in all of its scopes at once, or in none, when every
scope's sum over the last ``window_ms`` plus its amount stays within the scope's limit. A
token reservation is *settled* to the real count later (the entry's amount changes while it is
still in the window).
Response cache: answers kept under a key for a TTL, and per scope a bounded set of query
vectors (the newest ``keep``) that the semantic lookup compares in Python. Each backend bounds
what it keeps; a lookup that cannot be answered is a miss for the caller.

Circuit breaker: ``failure_threshold`` failures within ``window_s`` open a backend's circuit
for ``cooldown_s``; after the cool-down the circuit is half-open: one caller across every
replica claims the probe (a lease of ``probe_lease_s``) and the others keep skipping the backend
until the probe's failure opens it again or its success closes it (or the lease lapses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Protocol

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
    probe_lease_s: float = 30.0


@dataclass(frozen=True)
class RateScope:
    """One sliding-window limit a request is admitted in: ``amount`` of ``limit`` per window."""

    name: str  # e.g. "key:<id>:requests"
    limit: int
    amount: int


@dataclass(frozen=True)
class RateVerdict:
    """What a rate admission found, scope by scope (in the order asked)."""

    admitted: bool
    used: tuple[int, ...]  # the window's sum, this request included when admitted
    reset_ms: tuple[int, ...]  # until the oldest entry leaves the window (0: empty)
    refused: int | None = None  # index of the first scope over its limit
    retry_after_ms: int | None = None  # when that scope could take the amount (None: never)


class SharedState(Protocol):
    kind: str

    async def budget_seeded(self, scope: str) -> bool: ...
    # ttl_ms: the scope's counter expires then (a windowed budget's period is over)
    async def budget_seed(self, scope: str, spent_nano: int, ttl_ms: int | None = None) -> None: ...
    async def budget_reserve(
        self, scope: str, limit_nano: int, amount_nano: int, hold: str, ttl_ms: int
    ) -> bool: ...
    async def budget_settle(self, scope: str, hold: str, actual_nano: int) -> None: ...
    async def budget_spent(self, scope: str) -> tuple[int, int]: ...
    async def rate_admit(
        self, scopes: Sequence[RateScope], hold: str, window_ms: int
    ) -> RateVerdict: ...
    async def rate_settle(self, scope: str, hold: str, amount: int) -> None: ...
    # probe_lease_ms 0: may it be called (read only); > 0: about to call it, and when the
    # breaker is half-open, claim its single probe for that long (refused while one is out)
    async def breaker_allows(self, backend: str, probe_lease_ms: int = 0) -> bool: ...
    # a probe that ended without a verdict on the backend (the client's mistake, a cancelled
    # call, the backend's own rate limit) gives its lease back: the next caller probes at once
    async def breaker_release(self, backend: str) -> None: ...
    async def breaker_record(self, backend: str, ok: bool, cfg: BreakerSettings) -> bool: ...
    # backends' recent latencies (gateway.latency): a replica's batch of new samples, and the
    # newest ``keep`` samples per backend of every replica, none older than ``max_age_ms``
    async def latency_push(
        self, samples: Mapping[str, Sequence[float]], keep: int, max_age_ms: int
    ) -> None: ...
    async def latency_read(
        self, backends: Sequence[str], max_age_ms: int
    ) -> dict[str, list[float]]: ...
    # live load of self-hosted backends (gateway.capacity): a hash per backend, field -> value
    async def load_publish(self, backend: str, field: str, value: str, ttl_ms: int) -> None: ...
    async def load_read(self, backend: str) -> dict[str, str]: ...
    # response cache (gateway.serve.cache): answers by key, and per scope the newest query
    # vectors (entry id -> base64 vector) for the semantic lookup; a miss is None / {}
    async def cache_get(self, key: str) -> str | None: ...
    async def cache_put(self, key: str, value: str, ttl_ms: int) -> None: ...
    async def cache_vectors(self, scope: str) -> dict[str, str]: ...
    async def cache_vector_add(
        self, scope: str, entry: str, vector: str, ttl_ms: int, keep: int
    ) -> None: ...
    # the digest of the config the last replica to reload runs (gateway.reload); None: none yet
    async def config_publish(self, digest: str) -> None: ...
    async def config_published(self) -> str | None: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
