"""Shared gateway state: budget ledgers, rate-limit windows, circuit breakers, the response
cache, backends' latency samples and the published config digest, in Redis (several replicas)
or in-process (one replica); ``make_state`` picks one from the config. The contract and money
units are in ``base``; ``redis`` (with ``redis_rates``, ``redis_cache``, ``redis_breaker`` and
``redis_latency``) owns every Redis key and script; ``failover`` keeps serving on local limits
while Redis is down, when the config asks for it."""

from __future__ import annotations

from gateway.state.base import (
    NANO,
    RESERVATION_TTL_MS,
    BreakerSettings,
    RateScope,
    RateVerdict,
    SharedState,
    from_nano,
    to_nano,
)
from gateway.state.failover import FailoverState
from gateway.state.memory import InProcessState
from gateway.state.redis import RedisState

__all__ = [
    "NANO",
    "RESERVATION_TTL_MS",
    "BreakerSettings",
    "FailoverState",
    "InProcessState",
    "RateScope",
    "RateVerdict",
    "RedisState",
    "SharedState",
    "from_nano",
    "make_state",
    "to_nano",
]


def make_state(
    redis_url: str | None,
    prefix: str = "tg:",
    *,
    max_connections: int = 512,
    timeout_s: float = 2.0,
    on_failure: str = "closed",
    local_share: float = 1.0,
) -> SharedState:
    """Redis when a URL is set (failing closed with a 503, or open on local limits), else
    the in-process state."""
    if not redis_url:
        return InProcessState()
    redis = RedisState(redis_url, prefix, max_connections=max_connections, timeout_s=timeout_s)
    if on_failure == "open":
        return FailoverState(redis, local_share=local_share)
    return redis
