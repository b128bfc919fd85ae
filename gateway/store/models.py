"""SQL schema of the store (SQLAlchemy Core tables); Alembic migrations in migrations/ mirror it.

Money columns are ``Numeric`` and hold ``Decimal`` USD. ``requests`` has one row per *attempt*
(every retry and fallback is its own row, linked by ``request_id`` and ``fallback_of``);
``tasks`` has one row per client task (``x-tollgate-task-id``), whose cost is the sum of its
attempts. No foreign keys on the hot tables: attempt rows are written in batches, possibly
replayed from the spool, and must never be rejected for ordering reasons.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    UniqueConstraint,
    false,
)

metadata = MetaData()


def _operator_limits() -> list[Column]:
    """Rate limits and model access of a key or a tenant (migration 0005); NULL: no limit.
    The access lists are JSON lists of backend / policy names."""
    return [
        Column("rpm", Integer, nullable=True),
        Column("tpm", Integer, nullable=True),
        Column("allowed_backends", JSON, nullable=True),
        Column("allowed_policies", JSON, nullable=True),
    ]


MONEY = Numeric(20, 10)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("max_budget_usd", MONEY, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    *_operator_limits(),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(128), nullable=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("max_budget_usd", MONEY, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    *_operator_limits(),
    # total | day | month: the window max_budget_usd applies to (migration 0005)
    Column("budget_window", String(16), nullable=False, server_default="total"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(32), nullable=False),
    Column("external_id", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant_id", "external_id", name="uq_tasks_tenant_external"),
)

requests = Table(
    "requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("request_id", String(32), nullable=False),
    Column("task_id", String(32), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("tenant_id", String(32), nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("endpoint", String(32), nullable=False),
    Column("policy", String(128), nullable=True),
    Column("backend", String(128), nullable=False),
    Column("model", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("error_type", String(64), nullable=True),
    Column("http_status", Integer, nullable=True),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    Column("usage_source", String(16), nullable=True),
    Column("cost_usd", MONEY, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("ttft_ms", Float, nullable=True),
    Column("streamed", Boolean, nullable=False),
    Column("fallback_of", String(32), nullable=True),
    Column("decision", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # a response-cache hit (gateway.serve.cache; migration 0007): cost 0, and what the reused
    # answer cost when it was made
    Column("cache_hit", Boolean, nullable=False, default=False, server_default=false()),
    Column("cache_saved_usd", MONEY, nullable=True),
    # the request's tags as ",a,b," (x-tollgate-tags / metadata.tags; NULL: none), so a tag
    # budget is re-seeded from the store with one LIKE (migration 0006)
    Column("tags", String(1024), nullable=True),
    Index("ix_requests_tenant_created", "tenant_id", "created_at"),
    Index("ix_requests_request_id", "request_id"),
    Index("ix_requests_task_id", "task_id"),
    Index("ix_requests_key_created", "key_id", "created_at"),
)

# Outcomes: whether a task succeeded, from client feedback, a validator or a judge (issue 5).
# One row per (task, source, scope): ``scope`` is the request id the outcome is about, or ""
# for a task-level outcome (NULL-free so the unique key holds on every database). Posting the
# same feedback again rewrites the same row, so retries are idempotent and corrections replace.
outcomes = Table(
    "outcomes",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(32), nullable=False),
    Column("task_id", String(32), nullable=False),
    Column("request_id", String(32), nullable=True),
    Column("scope", String(32), nullable=False),
    Column("source", String(16), nullable=False),  # feedback | validator | judge
    Column("success", Boolean, nullable=False),
    Column("score", Float, nullable=True),
    Column("comment", String(4000), nullable=True),
    Column("detail", JSON, nullable=True),
    Column("backend", String(128), nullable=True),  # the judge's backend
    Column("cost_usd", MONEY, nullable=True),  # what the judge's call cost
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("task_id", "source", "scope", name="uq_outcomes_task_source_scope"),
    Index("ix_outcomes_tenant_updated", "tenant_id", "updated_at"),
)

# admin-wide reports filter attempts by time alone (migration 0002)
Index("ix_requests_created", requests.c.created_at)


# Daily report roll-ups (gateway.analytics.reports; migration 0003). A cell is (day, tenant, key,
# policy, backend), with "" for a missing key or policy. Attempts are summed in the cell of the
# attempt; tasks are counted in the cell of their first-seen day and their final attempt.
# l0..l63 count successful attempts per latency bucket (log scale), for percentiles.
LATENCY_BUCKETS = 64


def _rollup_cell() -> list[Column]:
    return [
        Column("day", String(10), primary_key=True),
        Column("tenant_id", String(32), primary_key=True),
        Column("key_id", String(32), primary_key=True),
        Column("policy", String(128), primary_key=True),
        Column("backend", String(128), primary_key=True),
    ]


report_attempts_daily = Table(
    "report_attempts_daily",
    metadata,
    *_rollup_cell(),
    *[
        Column(name, BigInteger, nullable=False)
        for name in ("attempts", "requests", "errors", "extra", "pt", "ct", "ok_pt", "ok_ct")
    ],
    Column("spend", MONEY, nullable=False),
    Column("unpriced", BigInteger, nullable=False),
    *[Column(f"l{k}", Integer, nullable=False) for k in range(LATENCY_BUCKETS)],
)

report_tasks_daily = Table(
    "report_tasks_daily",
    metadata,
    *_rollup_cell(),
    Column("tasks", BigInteger, nullable=False),
    Column("succeeded", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("task_spend", MONEY, nullable=False),
)

report_rollup_days = Table(
    "report_rollup_days",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("refreshed_at", DateTime(timezone=True), nullable=False),
)

report_rollup_state = Table(
    "report_rollup_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
)

# Budget limits set with `tollgate budgets set` / the admin API (migration 0006); the config
# file's `budgets.limits` add to them. One row per (scope, name, window).
budgets = Table(
    "budgets",
    metadata,
    Column("scope", String(16), primary_key=True),  # key | tenant | policy | tag
    Column("name", String(128), primary_key=True),
    Column("period", String(8), primary_key=True),  # the window: total | day | month
    Column("max_usd", MONEY, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

Index("ix_outcomes_updated", outcomes.c.updated_at)
Index("ix_tasks_created", tasks.c.created_at)
