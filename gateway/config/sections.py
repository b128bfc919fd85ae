"""The operational sections of ``config.yaml`` — ``store``, ``redis``, ``server``,
``circuit_breaker``, ``predictor`` — and ``Strict``, the base of every config model (unknown
keys forbidden, values frozen). The schema of the whole file is ``gateway.config.schema``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(Strict):
    url: str | None = Field(default=None, description="overridden by TOLLGATE_DATABASE_URL")
    spool_dir: str = "var/spool"
    batch_size: int = Field(default=500, ge=1, le=10_000)
    flush_interval_ms: int = Field(default=200, ge=10, le=60_000)
    auto_migrate: bool = True
    max_spool_mb: int = Field(
        default=1024, ge=1, description="spool disk bound while the store is down; then 503"
    )
    pool_size: int = Field(default=10, ge=1, le=1000, description="PostgreSQL connections kept")
    max_overflow: int = Field(default=20, ge=0, le=1000, description="extra connections in bursts")
    pool_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="wait for a pooled connection before a 503"
    )


class RedisConfig(Strict):
    url: str | None = Field(default=None, description="overridden by TOLLGATE_REDIS_URL")
    key_prefix: str = "tg:"
    max_connections: int = Field(
        default=512, ge=1, le=100_000, description="connection pool per replica (blocking pool)"
    )
    timeout_s: float = Field(default=2.0, gt=0, le=60, description="per command and pool wait")
    on_failure: Literal["closed", "open"] = Field(
        default="closed",
        description="Redis unreachable: closed = budgeted requests get 503 (retry-after); open = "
        "serve on this replica's local share of the last-seen budget headroom, reconcile after",
    )
    local_share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="with on_failure: open, the share of a budget's last-seen headroom this "
        "replica may spend alone (1/replicas keeps the sum within the budget)",
    )


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=1, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    anonymous_tenant: str | None = Field(
        default=None,
        description="tenant for requests without a key; only honoured on a loopback bind",
    )
    key_cache_ttl_s: float = Field(default=5.0, ge=0)
    reserve_output_tokens: int = Field(
        default=1024, ge=1, description="budget reservation when a request sets no max_tokens"
    )
    access_log: bool = Field(
        default=True, description="one JSON line per request on stderr (logger tollgate.access)"
    )
    reservation_ttl_s: float = Field(
        default=900.0,
        ge=1,
        le=86_400,
        description="a budget hold lapses by itself this long after it was taken (a replica that "
        "died mid-request never settles it); longer than the slowest request",
    )


class BreakerConfig(Strict):
    failure_threshold: int = Field(default=5, ge=1)
    window_s: float = Field(default=30.0, gt=0)
    cooldown_s: float = Field(default=30.0, gt=0)
    probe_lease_s: float = Field(
        default=30.0, gt=0, le=3600, description="after the cool-down: the one probe's lease"
    )


class PredictorConfig(Strict):
    """The complexity predictor used by policies (``predictors`` package)."""

    enabled: bool = True
    artifact: str | None = Field(default=None, description="artifact dir; null = shipped default")
    timeout_ms: float = Field(default=50.0, gt=0, description="hard limit; then predictor_fallback")
    workers: int = Field(
        default=1, ge=0, le=64, description="predictor worker processes; 0: in the gateway process"
    )
    threads: int = Field(default=1, ge=1, le=64, description="encoder threads per worker")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: the GPU when the artifact's encoder can run there"
    )
    max_batch: int = Field(default=32, ge=1, le=1024, description="texts per forward pass, at most")
    max_wait_ms: float = Field(
        default=2.0, ge=0, description="ignored: a worker batches what is queued, without waiting"
    )
    cache_size: int = Field(default=10_000, ge=0)
    record_embeddings: bool = Field(
        default=True,
        description="store each routed query's embedding (int8, not its text) with its decision,"
        " so `tollgate predictor train --from-store` can learn from outcomes",
    )
