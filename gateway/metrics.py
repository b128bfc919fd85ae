"""Prometheus metrics of one gateway app (its own registry: nothing global, nothing at import)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# a routing decision waits on the predictor; its budget is tens of milliseconds
PREDICTOR_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 1)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tollgate_requests",
            "Client requests by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self.attempts = Counter(
            "tollgate_attempts",
            "Backend attempts by backend and outcome",
            ["backend", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tollgate_attempt_latency_seconds",
            "Backend attempt latency",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tollgate_time_to_first_token_seconds",
            "Time to first streamed chunk",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tollgate_tokens", "Tokens by backend and kind", ["backend", "kind"], registry=r
        )
        self.cost = Counter("tollgate_cost_usd", "Spend in USD by backend", ["backend"], registry=r)
        self.errors = Counter(
            "tollgate_errors", "Backend errors by type", ["backend", "error_type"], registry=r
        )
        self.rate_limited = Counter(
            "tollgate_rate_limited",
            "Requests refused (key, tenant) or backend calls skipped (backend) at a rate limit, "
            "by scope and kind (requests, tokens)",
            ["scope", "kind"],
            registry=r,
        )
        self.breaker_open = Counter(
            "tollgate_circuit_opened", "Times a backend's circuit opened", ["backend"], registry=r
        )
        self.judge_verdicts = Counter(
            "tollgate_judge_verdicts",
            "Judge gradings by result: pass, fail, unparseable (no verdict in the judge's "
            "answer), error (the judge call failed), skipped (circuit open, no credentials, "
            "tenant not allowed, too many in flight)",
            ["result"],
            registry=r,
        )
        self.judge_cost = Counter(
            "tollgate_judge_cost_usd",
            "Spend on judge calls in USD (evaluation overhead, not in tollgate_cost_usd)",
            ["backend"],
            registry=r,
        )
        self.predictor_fallbacks = Counter(
            "tollgate_predictor_fallbacks",
            "Routing decisions made without the predictor (the policy's predictor_fallback "
            "chose), by reason: timeout, error, unavailable (worker restarting), overloaded, "
            "disabled (no predictor), no_estimate (no profile for any eligible candidate)",
            ["reason"],
            registry=r,
        )
        self.routing_decisions = Counter(
            "tollgate_routing_decisions",
            "Routing decisions by how the predictor took part: ok (its estimate was used) or "
            "fallback",
            ["predictor"],
            registry=r,
        )
        self.predictor_wait = Histogram(
            "tollgate_predictor_wait_seconds",
            "How long a routing decision waited for the predictor (cache hits included), by "
            "outcome: ok, timeout, error, unavailable, overloaded",
            ["status"],
            buckets=PREDICTOR_BUCKETS,
            registry=r,
        )
        self.cache_lookups = Counter(
            "tollgate_cache_lookups_total",
            "Response cache lookups by result (exact_hit, semantic_hit, miss, bypass)",
            ["result"],
            registry=r,
        )
        self.cache_saved = Counter(
            "tollgate_cache_saved_usd", "What the reused answers of cache hits cost", registry=r
        )
        self.store_pending = Gauge(
            "tollgate_store_pending_rows", "Rows waiting for the SQL store", registry=r
        )
        self.store_spooled = Gauge(
            "tollgate_store_spool_files", "Spool files waiting for replay", registry=r
        )
        self.store_spool_bytes = Gauge(
            "tollgate_store_spool_bytes", "Bytes of spool waiting for replay", registry=r
        )
        self.store_spool_full = Gauge(
            "tollgate_store_spool_full",
            "1 while the spool is at store.max_spool_mb: new requests get 503 (alert on it)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
